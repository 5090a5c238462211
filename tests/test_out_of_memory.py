"""Every model kind survives a forward pass that runs out of memory: the batch is retried in
halves made from its items, each answer equals the one given without the fault, the engine
stays healthy, and the failed attempt's tensors are gone before the retry starts.

The fault is injected into each model's torch modules: every embedding table and
convolution (the first layers of text, image and audio towers) raises CUDA's out-of-memory
error for a batch of more than MAX_ROWS rows, after allocating a tensor that only the
failed attempt's traceback holds."""

from __future__ import annotations

import base64
import io
import weakref

import numpy as np
import pytest

import tiny_families
from conftest import ROOT, start_worker

HYBRID = ROOT / "tests" / "data" / "hybrid"
MAX_ROWS = 2
TEXTS = [f"sentence number {i} about the cat and the dog" for i in range(8)]


def png(seed: int) -> str:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def wav(seed: int) -> str:
    import soundfile

    samples = np.random.default_rng(seed).uniform(-0.3, 0.3, 24_000).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 48_000, format="WAV")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()


JOBS = {
    "embedder": {"model": "embedder", "input": TEXTS},
    "cross-encoder": {"model": "reranker", "query": "where is the cat?", "docs": TEXTS},
    "SPLADE": {"model": "splade", "input": TEXTS},
    "BGE-M3": {"model": "m3", "input": TEXTS, "embedding_types": ["dense", "sparse", "multi_vector"]},
    "ColBERT": {"model": "colbert", "input": TEXTS, "input_type": "query"},
    "ColBERT rerank": {"model": "colbert", "query": "where is the cat?", "docs": TEXTS},
    "CLIP": {"model": "clip", "input": TEXTS[:4] + [{"image": png(i)} for i in range(4)]},
    "CLAP": {"model": "clap", "input": TEXTS[:4] + [{"audio": wav(i)} for i in range(4)]},
}


@pytest.fixture(scope="module")
def worker(tmp_path_factory, tiny_embedder_path, reranker_path):
    root = tmp_path_factory.mktemp("oom")
    models = {"embedder": tiny_embedder_path, "reranker": reranker_path, "splade": HYBRID / "splade-max",
              "m3": HYBRID / "bge-m3", "colbert": HYBRID / "colbert", "clip": tiny_families.clip(root / "clip"),
              "clap": tiny_families.clap(root / "clap")}
    running = start_worker(MODEL_NAMES=";".join(str(p) for p in models.values()), SERVED_MODEL_NAMES=";".join(models),
                           BATCH_SIZES="8")
    yield running
    running.close()


class InjectedOutOfMemory:
    """Out of memory past MAX_ROWS rows in every embedding table and convolution of a model."""

    def __init__(self, replica) -> None:
        import torch

        self.failed_attempts: list[weakref.ref] = []  # a tensor each failed attempt held
        self.alive_at_retry: list[bool] = []
        modules = [m for m in [replica, *vars(replica).values()] if isinstance(m, torch.nn.Module)]
        targets = {id(s): s for m in modules for s in m.modules() if isinstance(s, (torch.nn.Embedding, torch.nn.Conv2d))}
        self.handles = [module.register_forward_pre_hook(self.hook) for module in targets.values()]
        assert self.handles, f"no embedding table or convolution in {type(replica).__name__}"

    def hook(self, module, inputs):
        import torch

        rows = inputs[0].shape[0] if inputs and hasattr(inputs[0], "shape") and inputs[0].dim() > 1 else 0
        if rows > MAX_ROWS:
            held = torch.ones(1 << 18)  # what the failed attempt's traceback holds
            self.failed_attempts.append(weakref.ref(held))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        if self.failed_attempts:
            self.alive_at_retry.append(any(ref() is not None for ref in self.failed_attempts))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def comparable(output: dict) -> list:
    if "results" in output:
        return sorted((r["index"], r["relevance_score"]) for r in output["results"])
    rows = []
    for item in output["data"]:
        value = item.get("embedding", item.get("embeddings"))
        rows.append(value)
    return rows


def assert_close(got, expected) -> None:
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            assert_close(got[key], expected[key])
    elif isinstance(expected, (list, tuple)) and expected and isinstance(expected[0], (list, tuple, dict)):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_close(g, e)
    else:
        assert np.allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float), atol=1e-5)


@pytest.mark.parametrize("kind", list(JOBS))
def test_every_model_kind_survives_an_out_of_memory_with_the_same_answer(worker, kind):
    job = JOBS[kind]
    expected = worker.run(job)
    assert "error" not in expected, expected
    model = worker.registry.resolve(job["model"])
    retries = model.health.oom_retries
    fault = InjectedOutOfMemory(model.engine._model_replicas[0])
    try:
        got = worker.run(job)
    finally:
        fault.remove()
    assert "error" not in got, got
    assert_close(comparable(got), comparable(expected))
    assert model.health.oom_retries > retries and worker.registry.healthy
    assert fault.failed_attempts and fault.alive_at_retry and not any(fault.alive_at_retry)
    assert "error" not in worker.run(job)  # still serving, without the fault


def test_every_model_reports_the_device_and_precision_its_parameters_have(tmp_path, tiny_embedder_path):
    """At DTYPES=bfloat16 on a CPU the embedder runs in bfloat16; CLAP, which stays at float32
    on a CPU, says float32 rather than what was asked."""
    import torch

    clap = tiny_families.clap(tmp_path / "clap")
    running = start_worker(MODEL_NAMES=f"{tiny_embedder_path};{clap}", SERVED_MODEL_NAMES="embedder;clap",
                           DTYPES="bfloat16")
    try:
        cards = {card["id"]: card["stats"] for card in running.run({"openai_route": "/v1/models"})[0]["data"]}
        for name in ("embedder", "clap"):
            replica = running.registry.resolve(name).engine._model_replicas[0]
            module = replica if isinstance(replica, torch.nn.Module) else replica.model
            parameter = next(module.parameters())
            assert cards[name]["device"] == parameter.device.type == "cpu"
            assert cards[name]["dtype"] == str(parameter.dtype).removeprefix("torch.")
        assert cards["embedder"]["dtype"] == "bfloat16" and cards["clap"]["dtype"] == "float32"
        assert "data" in running.run({"model": "clap", "input": ["the cat", {"audio": wav(0)}]})
    finally:
        running.close()
