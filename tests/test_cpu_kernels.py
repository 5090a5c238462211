"""On a CPU, linear layers run as oneDNN kernels with packed weights, and the vectors stay the
model's own: at float32 those of the unpacked model, at bfloat16 within the auto bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from conftest import CLASSIFIER_NAME, EMBEDDER_ID, RERANKER_ID, start_worker
from embedding_worker.engine import hardware
from embedding_worker.engine.cpu.kernels import PackedLinear, can_pack, pack_linear_layers, torch_modules

pytestmark = pytest.mark.skipif(not can_pack(), reason="this torch build has no oneDNN linear kernels")

TEXTS = [f"sentence number {i} about {topic}, somewhat longer than a query" for i, topic in
         enumerate(["cats", "the stock market", "quantum physics", "cooking pasta"] * 4)] + ["short"]


def modules_of(running, name: str) -> list[torch.nn.Module]:
    (replica,) = running.registry.resolve(name).engine._model_replicas
    return [module for root in torch_modules(replica) for module in root.modules()]


def cosines(vectors: torch.Tensor, expected: np.ndarray) -> np.ndarray:
    got = vectors.float().numpy()
    return np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1)


def test_packing_keeps_float32_vectors_and_fuses_the_feed_forward_gelu(embedder_path, sentence_transformer):
    model = SentenceTransformer(str(embedder_path), device="cpu")
    layers = model[0].auto_model.config.num_hidden_layers

    # per layer: query, key, value, attention output, feed-forward in (GELU fused), out; the pooler
    assert pack_linear_layers(model) == 6 * layers + 1
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    fused = [m for m in model.modules() if isinstance(m, PackedLinear) and m.activation == "gelu"]
    assert len(fused) == layers
    assert all(isinstance(m.intermediate_act_fn, torch.nn.Identity) for m in model.modules()
               if type(m).__name__ == "BertIntermediate")

    got = model.encode(TEXTS, normalize_embeddings=True)
    expected = sentence_transformer.encode(TEXTS, normalize_embeddings=True)
    assert np.abs(got - expected).max() <= 1e-5


def test_packing_a_bfloat16_model_stays_within_the_auto_bound(embedder_path, sentence_transformer):
    unpacked = SentenceTransformer(str(embedder_path), device="cpu").to(torch.bfloat16)
    packed = SentenceTransformer(str(embedder_path), device="cpu").to(torch.bfloat16)
    assert pack_linear_layers(packed) > 0

    expected = sentence_transformer.encode(TEXTS, normalize_embeddings=True)
    cosine_packed, cosine_unpacked = (cosines(model.encode(TEXTS, convert_to_tensor=True), expected)
                                      for model in (packed, unpacked))
    assert cosine_packed.min() >= 0.9995
    # the GELU on the float32 accumulator rounds once less: no further from float32 than before
    assert cosine_packed.mean() >= cosine_unpacked.mean() - 1e-5


def test_only_exact_gelu_feed_forwards_are_fused_and_other_layers_are_left_alone():
    torch.manual_seed(0)

    class FeedForward(torch.nn.Module):
        def __init__(self, activation: torch.nn.Module) -> None:
            super().__init__()
            self.dense = torch.nn.Linear(16, 64)
            self.intermediate_act_fn = activation

        def forward(self, x):
            return self.intermediate_act_fn(self.dense(x))

    class Scaled(torch.nn.Linear):  # a subclass may change forward: not packed
        def forward(self, x):
            return 2 * super().forward(x)

    model = torch.nn.Sequential(FeedForward(torch.nn.GELU()), Scaled(64, 16),
                                FeedForward(torch.nn.GELU(approximate="tanh")))
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        expected = model(x)
        assert pack_linear_layers(model) == 2
        got = model(x)
    half = torch.nn.Sequential(torch.nn.Linear(8, 8).half())
    assert pack_linear_layers(half) == 0 and type(half[0]) is torch.nn.Linear

    assert model[0].dense.activation == "gelu" and isinstance(model[0].intermediate_act_fn, torch.nn.Identity)
    assert type(model[1]) is Scaled
    assert model[2].dense.activation == "none" and model[2].intermediate_act_fn.approximate == "tanh"
    assert torch.allclose(got, expected, atol=1e-5)


def test_the_worker_packs_every_kind_of_model_on_a_cpu(worker):
    for name in (EMBEDDER_ID, RERANKER_ID, CLASSIFIER_NAME):
        modules = modules_of(worker, name)
        assert any(isinstance(m, PackedLinear) for m in modules), name
        assert not any(type(m) is torch.nn.Linear for m in modules), name


def test_pack_cpu_weights_false_keeps_torchs_layers(hub_cache, sentence_transformer):
    running = start_worker(MODEL_NAMES=EMBEDDER_ID, PACK_CPU_WEIGHTS="false")
    try:
        modules = modules_of(running, EMBEDDER_ID)
        assert not any(isinstance(m, PackedLinear) for m in modules)
        assert any(type(m) is torch.nn.Linear for m in modules)
        output = running.run({"model": EMBEDDER_ID, "input": TEXTS})
        got = np.array([item["embedding"] for item in output["data"]])
        assert np.abs(got - sentence_transformer.encode(TEXTS, normalize_embeddings=True)).max() <= 1e-5
    finally:
        running.close()


@pytest.mark.skipif(not hardware.cpu_has_native_bf16(), reason="this CPU has no native bfloat16")
def test_the_forward_pass_is_packed_in_bfloat16_under_auto(hub_cache):
    running = start_worker(MODEL_NAMES=EMBEDDER_ID, DTYPES="auto")
    try:
        packed = [m for m in modules_of(running, EMBEDDER_ID) if isinstance(m, PackedLinear)]
        assert packed and all(m.packed_weight.dtype == torch.bfloat16 for m in packed)
    finally:
        running.close()
