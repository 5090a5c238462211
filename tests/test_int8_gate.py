"""DTYPES=int8 on a CPU is never silently worse: an embedder's encoder is quantised
(engine/cpu/int8.py) only if its vectors stay within cosine 0.99 of float32 and its top-10
neighbours 95 % the same on a fixed corpus; all-MiniLM-L6-v2 passes. A model that fails, or
that int8 does not cover, is served at bfloat16 (float32 without native bf16), and the
start-up line says what was measured or why."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.nn import functional

from conftest import EMBEDDER_ID, start_worker
from embedding_worker.engine.cpu import int8 as int8_cpu, int8_gate
from embedding_worker.engine.hardware import cpu_has_native_bf16

TEXTS = ["Hello, world!", "The quick brown fox jumps over the lazy dog.",
         "Where can I renew a passport that expired five years ago?", "def add(a, b): return a + b",
         "Der Zug nach Berlin hat heute zwanzig Minuten Verspätung."]
FALLBACK = "bfloat16" if cpu_has_native_bf16() else "float32"
pytestmark = pytest.mark.skipif(not int8_cpu.can_quantise(), reason="this torch build has no oneDNN int8 kernels")


def cards(running) -> dict:
    return {c["id"]: c["stats"] for c in running.run({"openai_route": "/v1/models"})[0]["data"]}


def embed(running, texts: list[str] = TEXTS) -> np.ndarray:
    return np.array([item["embedding"] for item in running.run({"model": EMBEDDER_ID, "input": texts})["data"]])


def start_saying(**variables: str) -> tuple[object, list[str]]:
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    gate_log = logging.getLogger("embedding_worker.engine.cpu.int8_gate")  # its own: the worker resets the root's
    gate_log.addHandler(handler)
    try:
        return start_worker(**variables), said
    finally:
        gate_log.removeHandler(handler)


def test_minilm_passes_its_gate_and_is_served_in_int8(hub_cache, sentence_transformer):
    """Quantised query/key/value and feed-forward products in every layer, `int8` in
    /v1/models, vectors within the gate of float32's but not equal to them; a text's vector
    does not depend on what else is in its batch (static scales)."""
    running, said = start_saying(MODEL_NAMES=EMBEDDER_ID, DTYPES="int8")
    try:
        assert cards(running)[EMBEDDER_ID]["dtype"] == "int8"
        replica = running.registry.resolve(EMBEDDER_ID).engine._model_replicas[0]
        assert sum(type(m) is int8_cpu.Int8Linear for m in replica.modules()) == 12  # 6 layers x 2
        got = embed(running)
        alone = embed(running, TEXTS[:1])
        odd_companion = embed(running, [TEXTS[0], "0x7FFF 99999 €€€ ©®™ ¿¡ ΩΩΩ !!!! ???? 12:34:56 ###"])
    finally:
        running.close()
    line = next(message for message in said if "quality gate" in message)
    assert line.startswith(f"model '{EMBEDDER_ID}': int8 passes its quality gate: min cosine 0.99"), line
    assert "12" not in line and "6 encoder layers' query/key/value and feed-forward products in int8" in line
    expected = sentence_transformer.encode(TEXTS, normalize_embeddings=True)
    cosine = np.sum(got * expected, axis=1)
    assert cosine.min() >= 0.99 and np.abs(got - expected).max() > 1e-4
    # the same text alone, and beside texts of other ranges: the same vector
    assert np.abs(alone[0] - got[0]).max() < 1e-6 and np.abs(odd_companion[0] - got[0]).max() < 1e-6


def test_int8_that_fails_its_gate_is_served_at_the_fallback_precision_and_says_so(hub_cache, monkeypatch):
    monkeypatch.setattr(int8_gate, "MIN_COSINE", 0.99999)
    gated, said = start_saying(MODEL_NAMES=EMBEDDER_ID, DTYPES="int8")
    try:
        assert cards(gated)[EMBEDDER_ID]["dtype"] == FALLBACK
        got = embed(gated)
    finally:
        gated.close()
    line = next(message for message in said if "quality gate" in message)
    assert line.startswith(f"model '{EMBEDDER_ID}': int8 fails its quality gate: min cosine 0.99")
    assert f"serving it at {FALLBACK} instead" in line and "against float32 on 104 sentences" in line
    plain = start_worker(MODEL_NAMES=EMBEDDER_ID, DTYPES=FALLBACK)
    try:
        assert np.abs(got - embed(plain)).max() <= 1e-6  # exactly what the fallback precision serves
    finally:
        plain.close()


def test_int8_covers_the_encoders_and_says_why_not_for_others(tmp_path):
    import tiny_families
    from sentence_transformers import SentenceTransformer

    built = tiny_families.embedders(tmp_path)
    for family in ("xlm-roberta", "modernbert"):
        assert int8_cpu.quantisable(SentenceTransformer(str(built[family]), device="cpu")) is None, family
    reason = int8_cpu.quantisable(SentenceTransformer(str(built["qwen3"]), device="cpu"))
    assert reason == "int8 on a CPU covers BERT, RoBERTa, XLM-RoBERTa, MPNet and ModernBERT encoders"


def test_an_int8_product_smooths_a_large_channel_away():
    """One input channel 60x the others (what a layer norm's output does in real encoders): with
    the smoothing factors the product stays within cosine 0.998 of float32's; with none the
    per-tensor scale is the large channel's, and the others lose their precision."""
    torch.manual_seed(0)
    weight, bias = torch.randn(256, 128) * 0.05, torch.randn(256) * 0.1
    x = torch.randn(64, 128)
    x[:, 7] *= 60
    expected = functional.gelu(functional.linear(x, weight, bias))
    reach = x.abs().amax(dim=0)
    smooth = (reach.sqrt() / weight.abs().amax(dim=0).sqrt()).clamp(min=1e-5)

    def worst(factors: torch.Tensor) -> float:
        layer = int8_cpu.Int8Linear(weight, bias, factors, float((x / factors).min()), float((x / factors).max()),
                                    "gelu")
        return float(functional.cosine_similarity(layer(x.bfloat16()).float(), expected).min())

    assert worst(smooth) >= 0.998
    assert worst(torch.ones(128)) < 0.97


def _tiny_mpnet(embedder_path, folder):
    from transformers import AutoTokenizer, MPNetConfig

    from conftest import tiny_sentence_transformer

    tokenizer = AutoTokenizer.from_pretrained(embedder_path)
    config = MPNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=514)
    return tiny_sentence_transformer(folder, config, tokenizer)


@pytest.mark.parametrize("family", ["mpnet", "xlm-roberta", "modernbert"])
def test_each_covered_family_runs_in_int8_close_to_float32(family, embedder_path, tmp_path):
    """MPNet (relative position bias, `attn.q/k/v`), XLM-R and ModernBERT (`Wqkv`, gated `Wi`,
    sliding-window layers) in int8 (the rest at float32):
    vectors within cosine 0.99 of the float32 model's; a call the real-token path does not
    cover (hidden states asked for) runs the model's own forward on the same int8 products,
    through the fused product's parts, with the same result."""
    import tiny_families
    from sentence_transformers import SentenceTransformer

    folder = _tiny_mpnet(embedder_path, tmp_path / "mpnet") if family == "mpnet" else \
        tiny_families.embedders(tmp_path)[family]
    reference, model = (SentenceTransformer(str(folder), device="cpu") for _ in range(2))
    ranges = int8_cpu.calibrate(model, lambda texts: model.forward(model.tokenize(texts)))
    assert int8_gate._to_int8(model, ranges, "float32") == 2
    texts = TEXTS + ["a longer text, " * 40]
    expected = reference.encode(texts, normalize_embeddings=True)
    got = model.encode(texts, normalize_embeddings=True)
    assert np.sum(expected * got, axis=1).min() >= 0.99 and np.abs(expected - got).max() > 1e-5
    features = model.tokenize(texts)
    encoder = model[0].auto_model
    with torch.inference_mode():
        fast = encoder(input_ids=features["input_ids"], attention_mask=features["attention_mask"]).last_hidden_state
        padded = encoder(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                         output_hidden_states=True).last_hidden_state
    real = features["attention_mask"].bool()
    assert (fast[real] - padded[real]).abs().max() <= 1e-3


def test_int8_refuses_an_encoder_outside_the_real_token_path(embedder_path, tmp_path):
    """A BERT with relative position embeddings: the real-token path does not run it, so its
    int8 products would run three times over in the model's own forward; it is refused."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig

    from conftest import tiny_sentence_transformer

    tokenizer = AutoTokenizer.from_pretrained(embedder_path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=128, position_embedding_type="relative_key")
    model = SentenceTransformer(str(tiny_sentence_transformer(tmp_path / "relative", config, tokenizer)), device="cpu")
    assert int8_cpu.quantisable(model) == ("int8 on a CPU needs the real-token path, which this encoder's "
                                           "configuration is outside")


@pytest.fixture(scope="module")
def minilm_reranker(embedder_path, tmp_path_factory):
    """A cross-encoder on all-MiniLM-L6-v2's real encoder, its one-logit head seeded: real
    activations (what int8 is judged on) and scores spread enough to rank by."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("minilm-reranker")
    torch.manual_seed(0)
    BertForSequenceClassification.from_pretrained(embedder_path, num_labels=1).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(embedder_path).save_pretrained(folder)
    return folder


def test_a_reranker_passes_its_gate_and_keeps_its_order(minilm_reranker):
    from scipy.stats import spearmanr
    from sentence_transformers import CrossEncoder

    running, said = start_saying(MODEL_NAMES=str(minilm_reranker), DTYPES="int8")
    query, documents = "how do trains run on time", TEXTS + [f"{t} And more words about trains." for t in TEXTS]
    try:
        name = next(iter(cards(running)))
        assert cards(running)[name]["dtype"] == "int8"
        ranked = running.run({"model": name, "query": query, "docs": documents})["results"]
    finally:
        running.close()
    line = next(message for message in said if "quality gate" in message)
    assert "int8 passes its quality gate: scores' correlation 0.99" in line, line
    assert "against float32 on 8 queries of 26 documents" in line
    got = np.array([r["relevance_score"] for r in sorted(ranked, key=lambda r: r["index"])])
    expected = CrossEncoder(str(minilm_reranker), device="cpu").predict(
        [(query, d) for d in documents], activation_fct=torch.sigmoid)
    assert np.abs(got - expected).max() <= 0.02 and np.abs(got - expected).max() > 1e-5
    assert spearmanr(got, expected).statistic >= 0.9


def test_a_classifier_is_served_at_the_fallback_precision_and_says_why(classifier_path):
    running, said = start_saying(MODEL_NAMES=str(classifier_path), DTYPES="int8")
    try:
        assert next(iter(cards(running).values()))["dtype"] == FALLBACK
    finally:
        running.close()
    assert any(f"int8 is gated for embedders and rerankers only; serving it at {FALLBACK} instead" in message
               for message in said), said
