"""What each precision and backend costs in quality and buys in speed, in-process.

- dtypes: the worker's `DTYPES=auto` choice on this hardware against float32 — each
  vector's cosine on the corpus (min, mean), and a reranker's scores and order;
- backends: each backend's speed at 8 sentences x c16 and its vectors against torch's.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import numpy as np

from common import MODEL, corpus, drive, shaped, worker_for
from gpu_check import tiny_reranker


def embed_once(texts: list[str], backend: str = "torch", **variables: str) -> np.ndarray:
    worker = worker_for(backend, **variables)
    model = worker.registry.resolve(MODEL)

    async def run() -> list:
        await worker.registry.start()
        vectors, _ = await model.engine.embed(texts)
        await worker.registry.stop()
        return vectors

    vectors = np.asarray(asyncio.run(run()), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def speed(backend: str, scale: float, **variables: str) -> float:
    worker = worker_for(backend, **variables)
    engine = worker.registry.resolve(MODEL).engine

    async def run() -> float:
        await worker.registry.start()

        async def call(texts: list[str]) -> None:
            await engine.embed(texts)

        row = await drive(call, shaped(max(2, int(120 * scale)), 8), 16)
        await worker.registry.stop()
        return row["sentences_per_s"]

    return asyncio.run(run())


def rerank_scores(reranker: str, dtype: str, query: str, docs: list[str]) -> np.ndarray:
    worker = worker_for("torch", MODEL_NAMES=reranker, DTYPES=dtype)
    model = worker.registry.models[0]

    async def run():
        await worker.registry.start()
        ranked, _ = await model.engine.rerank(query=query, docs=docs)
        await worker.registry.stop()
        return ranked

    ranked = asyncio.run(run())
    scores = np.zeros(len(docs), dtype=np.float32)
    for item in ranked:
        scores[item.index] = item.relevance_score
    return scores


def dtypes(scale: float) -> dict:
    from huggingface_hub import snapshot_download

    from embedding_worker.engine.hardware import Device, choose_dtype, detect_hardware

    found = detect_hardware(Device.auto, os.environ)
    model_path = snapshot_download(MODEL, local_files_only=True)
    auto = choose_dtype("auto", found, Path(model_path), "torch", MODEL)
    texts = corpus(1600)
    reference = embed_once(texts, DTYPES="float32")
    vectors = embed_once(texts, DTYPES=auto)
    cosine = (vectors * reference).sum(1)
    reranker = str(tiny_reranker(Path(tempfile.mkdtemp(prefix="bench-reranker-")), model_path,
                                 hidden_size=384, layers=4, heads=6))
    query, docs = "fast retrieval of similar documents", corpus(64, seed=3)
    exact, chosen = rerank_scores(reranker, "float32", query, docs), rerank_scores(reranker, auto, query, docs)
    return {
        "auto_on_this_machine": auto,
        "device": found.describe(),
        "min_cosine_to_float32": round(float(cosine.min()), 5),
        "mean_cosine_to_float32": round(float(cosine.mean()), 5),
        "rerank_max_abs_score_diff": round(float(np.abs(exact - chosen).max()), 5),
        "rerank_same_top10": bool(list(np.argsort(-exact)[:10]) == list(np.argsort(-chosen)[:10])),
        "speed_float32": speed("torch", scale, DTYPES="float32"),
        "speed_auto": speed("torch", scale, DTYPES=auto),
    }


def backends(scale: float) -> dict:
    texts = corpus(64)
    reference = None
    results = {}
    for label, backend, variables in (("torch float32", "torch", {"DTYPES": "float32"}),
                                      ("torch auto", "torch", {"DTYPES": "auto"}),
                                      ("onnx (optimum)", "optimum", {}),
                                      ("onnx int8", "optimum", {"ONNX_QUANTIZED": "true"}),
                                      ("ctranslate2", "ctranslate2", {})):
        vectors = embed_once(texts, backend, **variables)
        reference = vectors if reference is None else reference
        cosine = (vectors * reference).sum(1)
        results[label] = {"sentences_per_s": speed(backend, scale, **variables),
                          "min_cosine_to_torch": round(float(cosine.min()), 5),
                          "mean_cosine_to_torch": round(float(cosine.mean()), 5)}
    return results
