"""The ONNX (optimum) and CTranslate2 backends serve the same vectors as torch, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import EMBEDDER_ID, RERANKER_ID, start_worker
from embedding_worker.engine import onnx_support
from embedding_worker.engine.onnx_support import ensure_onnx, pooling_method

TEXTS = [
    "Hello, world!",
    "A man is eating food.",
    "The new movie is awesome, I loved every minute of it.",
    "Serverless GPUs scale to zero when idle.",
    "ünïcödé and 中文 text",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory, hub_cache):
    """The bundled embedder and the tiny reranker in a fresh cache, for exports to write to."""
    from cache_local_model import cache_local_model

    cache = tmp_path_factory.mktemp("backend-cache")
    for repo in (EMBEDDER_ID, RERANKER_ID):
        repo_dir = hub_cache / ("models--" + repo.replace("/", "--"))
        snapshot = repo_dir / "snapshots" / (repo_dir / "refs" / "main").read_text()
        cache_local_model(snapshot, repo, cache / "hub")
    return cache


def serve(model_copy: Path, backend: str, models: str = f"{EMBEDDER_ID};{RERANKER_ID}", **variables: str):
    return start_worker(MODEL_NAMES=models, BACKEND=backend, BAKED_HF_CACHE=str(model_copy / "hub"), **variables)


@pytest.mark.parametrize("backend", ["optimum", "ctranslate2"])
def test_backend_matches_torch(model_copy, sentence_transformer, cross_encoder, backend):
    # Infinity's CTranslate2 path serves embedders only.
    running = serve(model_copy, backend, **({"models": EMBEDDER_ID} if backend == "ctranslate2" else {}))
    try:
        body = running.run({"model": EMBEDDER_ID, "input": TEXTS})
        got = np.array([item["embedding"] for item in body["data"]])
        expected = sentence_transformer.encode(TEXTS, normalize_embeddings=True)
        assert cosines(got, expected).min() >= 0.999
        assert body["usage"]["total_tokens"] > 0
        if backend == "optimum":
            ranked = running.run({"model": RERANKER_ID, "query": "Where is Paris?", "docs": TEXTS})
            scores = cross_encoder.predict([("Where is Paris?", d) for d in TEXTS])
            by_index = {r["index"]: r["relevance_score"] for r in ranked["results"]}
            assert [by_index[i] for i in range(len(TEXTS))] == pytest.approx(scores.tolist(), abs=1e-4)
    finally:
        running.close()


def test_ctranslate2_refuses_a_reranker_at_start_up(model_copy):
    from embedding_worker.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match=f"could not load model '{RERANKER_ID}': RerankEngine for .*ctranslate2 not implemented"):
        serve(model_copy, "ctranslate2")


def test_onnx_uses_the_full_precision_file_unless_int8_is_asked_for(model_copy, sentence_transformer):
    expected = sentence_transformer.encode(TEXTS, normalize_embeddings=True)
    running = serve(model_copy, "optimum", ONNX_QUANTIZED="true")
    try:
        body = running.run({"model": EMBEDDER_ID, "input": TEXTS})
    finally:
        running.close()
    snapshots = model_copy / "hub" / ("models--" + EMBEDDER_ID.replace("/", "--")) / "snapshots"
    assert list(snapshots.glob(f"*/onnx/{onnx_support.QUANTIZED_NAME}"))
    quality = cosines(np.array([item["embedding"] for item in body["data"]]), expected)
    # int8 costs quality visibly (about 0.94-0.97 cosine to full precision on MiniLM)
    assert 0.9 <= quality.min() and quality.max() < 0.999


def test_pooling_comes_from_the_sentence_transformers_config(embedder_path, tmp_path):
    assert pooling_method(embedder_path) == "mean"
    cls_model = tmp_path / "cls"
    shutil.copytree(embedder_path, cls_model)
    config = cls_model / "1_Pooling" / "config.json"
    settings = json.loads(config.read_text())
    settings.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    config.write_text(json.dumps(settings))
    assert pooling_method(cls_model) == "cls"
    (cls_model / "modules.json").unlink()
    assert pooling_method(cls_model) == "auto"


def test_a_read_only_model_folder_is_exported_into_a_writable_copy(embedder_path, tmp_path, monkeypatch):
    read_only = tmp_path / "runpod-cache" / "models--org--name" / "snapshots" / "abc"
    shutil.copytree(embedder_path, read_only)
    monkeypatch.setattr(onnx_support.os, "access", lambda path, mode: Path(path) != read_only)
    ready = ensure_onnx(read_only, tmp_path / "writable")
    assert ready.is_relative_to(tmp_path / "writable") and list(ready.glob("onnx/model.onnx"))
    assert not list(read_only.glob("**/*.onnx"))
    assert ensure_onnx(read_only, tmp_path / "writable") == ready  # once
