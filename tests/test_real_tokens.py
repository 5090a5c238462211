"""On a CPU, BERT-family encoders compute on real tokens only: a batch of mixed lengths gives
the padded model's vectors and scores (float32: within 1e-5), embedders and cross-encoders
alike, BERT and XLM-RoBERTa, and the served worker's too."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from sentence_transformers import CrossEncoder, SentenceTransformer

import tiny_families
from conftest import EMBEDDER_ID, RERANKER_ID
from embedding_worker.engine.cpu import real_tokens
from embedding_worker.engine.cpu.kernels import pack_linear_layers
from embedding_worker.engine.cpu.real_tokens import compute_on_real_tokens

WORDS = "the a cat sat on mat while dogs ran through parks and rivers under stars".split()
RNG = random.Random(3)
MIXED = [" ".join(RNG.choices(WORDS, k=n)) for n in (2, 180, 9, 60, 1, 240, 33, 120)]  # well under 90 % real


def counting(model: torch.nn.Module) -> dict[str, int]:
    """Swap the encoders and count the calls that fall back to the padded forward."""
    counts = {"padded": 0}
    assert compute_on_real_tokens(model) == 1
    for module in model.modules():
        if hasattr(module, "_padded_forward"):
            padded = module._padded_forward

            def counted(*args, _padded=padded, **kwargs):
                counts["padded"] += 1
                return _padded(*args, **kwargs)

            module._padded_forward = counted
    return counts


@pytest.mark.parametrize("packed", [False, True])
def test_an_embedder_gives_the_padded_vectors(embedder_path, sentence_transformer, packed):
    model = SentenceTransformer(str(embedder_path), device="cpu")
    if packed:
        pack_linear_layers(model)
    counts = counting(model)
    features = model.tokenize(MIXED)
    assert features["attention_mask"].float().mean() < real_tokens.REAL_SHARE_BELOW
    with torch.inference_mode():
        got = model.forward(dict(features))["sentence_embedding"]
        expected = sentence_transformer.forward(dict(features))["sentence_embedding"]
    assert counts["padded"] == 0
    assert (got - expected).abs().max() <= 1e-5


def test_a_batch_with_little_padding_runs_the_padded_forward(embedder_path):
    model = SentenceTransformer(str(embedder_path), device="cpu")
    counts = counting(model)
    with torch.inference_mode():
        model.encode(["same length text one", "same length text two"])
    assert counts["padded"] == 1


def test_what_the_path_does_not_cover_runs_the_padded_forward(embedder_path, sentence_transformer):
    model = SentenceTransformer(str(embedder_path), device="cpu")
    counts = counting(model)
    features = model.tokenize(MIXED)
    encoder = model[0].auto_model
    with torch.inference_mode():
        states = encoder(**features, output_hidden_states=True).hidden_states
    assert counts["padded"] == 1 and len(states) == encoder.config.num_hidden_layers + 1
    with torch.enable_grad():
        encoder(**features)
    assert counts["padded"] == 2


def test_a_bert_cross_encoder_gives_the_padded_scores(reranker_path, cross_encoder):
    model = CrossEncoder(str(reranker_path), device="cpu")
    counts = counting(model.model)
    pairs = [("what sat on the mat", text) for text in MIXED]
    got, expected = model.predict(pairs, batch_size=8), cross_encoder.predict(pairs, batch_size=8)
    assert counts["padded"] == 0
    assert np.abs(got - expected).max() <= 1e-5


@pytest.fixture(scope="module")
def xlm_roberta(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return tiny_families.embedders(root)["xlm-roberta"], tiny_families.rerankers(root)["xlm-roberta"]


def test_xlm_roberta_embedders_and_rerankers_give_the_padded_outputs(xlm_roberta):
    embedder_folder, reranker_folder = xlm_roberta
    plain, fast = (SentenceTransformer(str(embedder_folder), device="cpu") for _ in range(2))
    pack_linear_layers(fast)
    counts = counting(fast)
    expected, got = plain.encode(MIXED, batch_size=8), fast.encode(MIXED, batch_size=8)
    assert np.abs(got - expected).max() <= 1e-5
    plain, fast = (CrossEncoder(str(reranker_folder), device="cpu") for _ in range(2))
    counting(fast.model)
    pairs = [("a query", text) for text in MIXED]
    assert np.abs(fast.predict(pairs, batch_size=8) - plain.predict(pairs, batch_size=8)).max() <= 1e-5
    assert counts["padded"] == 0


def test_bfloat16_stays_as_close_to_float32_as_the_padded_model(embedder_path, sentence_transformer):
    reference = sentence_transformer.encode(MIXED, batch_size=8, normalize_embeddings=True)
    padded, fast = (SentenceTransformer(str(embedder_path), device="cpu").to(torch.bfloat16) for _ in range(2))
    compute_on_real_tokens(fast)

    def cosine(model) -> np.ndarray:
        vectors = model.encode(MIXED, batch_size=8, convert_to_tensor=True).float().numpy()
        return (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1)

    assert cosine(fast).min() >= 0.999
    assert cosine(fast).mean() >= cosine(padded).mean() - 1e-4


def test_the_served_worker_computes_on_real_tokens(worker, sentence_transformer, cross_encoder):
    for name in (EMBEDDER_ID, RERANKER_ID):
        (replica,) = worker.registry.resolve(name).engine._model_replicas
        root = replica if isinstance(replica, torch.nn.Module) else replica.model
        assert any(hasattr(m, "_padded_forward") for m in root.modules()), name
    output = worker.run({"model": EMBEDDER_ID, "input": MIXED})
    vectors = np.array([item["embedding"] for item in output["data"]])
    expected = sentence_transformer.encode(MIXED, normalize_embeddings=True)
    assert np.abs(vectors - expected).max() <= 1e-5
    ranked = worker.run({"model": RERANKER_ID, "query": "what sat on the mat", "docs": MIXED})
    scores = {r["index"]: r["relevance_score"] for r in ranked["results"]}
    expected_scores = cross_encoder.predict([("what sat on the mat", d) for d in MIXED], activation_fct=torch.sigmoid)
    assert max(abs(scores[i] - float(s)) for i, s in enumerate(expected_scores)) <= 1e-5


def test_an_mpnet_embedder_gives_the_padded_vectors(embedder_path, tmp_path):
    """MPNet's relative position bias depends only on distances: cut to each text's length."""
    from transformers import AutoTokenizer, MPNetConfig

    from conftest import tiny_sentence_transformer

    tokenizer = AutoTokenizer.from_pretrained(embedder_path)
    config = MPNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=514)
    folder = tiny_sentence_transformer(tmp_path / "mpnet", config, tokenizer)
    plain, fast = (SentenceTransformer(str(folder), device="cpu") for _ in range(2))
    pack_linear_layers(fast)
    counts = counting(fast)
    features = plain.tokenize(MIXED)
    with torch.inference_mode():
        expected = plain.forward(dict(features))["sentence_embedding"]
        got = fast.forward(dict(features))["sentence_embedding"]
    assert counts["padded"] == 0
    assert (got - expected).abs().max() <= 1e-5
