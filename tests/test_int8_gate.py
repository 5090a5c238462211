"""DTYPES=int8 on a CPU is never silently worse: an embedder is quantised only if its vectors
stay within cosine 0.99 of float32 and its top-10 neighbours 95 % the same on a fixed corpus;
all-MiniLM-L6-v2 does not pass (Infinity's int8 would serve it anyway), so it is served at
bfloat16 (float32 without native bf16), and the start-up line says what was measured."""

from __future__ import annotations

import logging

import numpy as np

from conftest import EMBEDDER_ID, start_worker
from embedding_worker.engine import int8_gate
from embedding_worker.engine.hardware import cpu_has_native_bf16

TEXTS = ["Hello, world!", "The quick brown fox jumps over the lazy dog."]


def cards(running) -> dict:
    return {c["id"]: c["stats"] for c in running.run({"openai_route": "/v1/models"})[0]["data"]}


def embed(running) -> np.ndarray:
    return np.array([item["embedding"] for item in running.run({"model": EMBEDDER_ID, "input": TEXTS})["data"]])


def test_int8_that_fails_its_gate_is_served_at_the_fallback_precision_and_says_so(hub_cache):
    fallback = "bfloat16" if cpu_has_native_bf16() else "float32"
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    gate_log = logging.getLogger("embedding_worker.engine.int8_gate")  # its own: the worker resets the root's
    gate_log.addHandler(handler)
    try:
        gated = start_worker(MODEL_NAMES=EMBEDDER_ID, DTYPES="int8")
    finally:
        gate_log.removeHandler(handler)
    try:
        assert cards(gated)[EMBEDDER_ID]["dtype"] == fallback
        got = embed(gated)
    finally:
        gated.close()
    line = next(message for message in said if "quality gate" in message)
    assert line.startswith(f"model '{EMBEDDER_ID}': int8 fails its quality gate: min cosine 0.")
    assert f"serving it at {fallback} instead" in line and "against float32 on 104 sentences" in line
    plain = start_worker(MODEL_NAMES=EMBEDDER_ID, DTYPES=fallback)
    try:
        assert np.abs(got - embed(plain)).max() <= 1e-6  # exactly what the fallback precision serves
    finally:
        plain.close()


def test_int8_that_passes_its_gate_is_quantised(hub_cache, monkeypatch, sentence_transformer):
    """The gate's pass side, with the bar lowered to what MiniLM reaches: quantised linear
    layers, `int8` in /v1/models, vectors close to float32 but not equal to them."""
    import torch

    monkeypatch.setattr(int8_gate, "MIN_COSINE", 0.5)
    monkeypatch.setattr(int8_gate, "MIN_OVERLAP", 0.0)
    running = start_worker(MODEL_NAMES=EMBEDDER_ID, DTYPES="int8")
    try:
        assert cards(running)[EMBEDDER_ID]["dtype"] == "int8"
        replica = running.registry.resolve(EMBEDDER_ID).engine._model_replicas[0]
        assert any("quantized" in type(m).__module__ for m in replica.modules())
        assert not any(type(m) is torch.nn.Linear for m in replica.modules())
        got = embed(running)
    finally:
        running.close()
    expected = sentence_transformer.encode(TEXTS, normalize_embeddings=True)
    cosine = np.sum(got * expected, axis=1)
    assert cosine.min() > 0.5 and np.abs(got - expected).max() > 1e-4
