"""How close the model runs to the hardware, and what response encodings cost."""

from __future__ import annotations

import base64
import json
import os
import platform
import time

import numpy as np
import orjson
import psutil

from common import MODEL, corpus


def hardware() -> dict:
    import torch

    from embedding_worker.engine.cpu_quota import available_cpus, cpu_quota
    from embedding_worker.engine.hardware import cpu_has_native_bf16
    from embedding_worker.serving.runpod_patches import cpu_name

    return {"cpu": cpu_name(), "cores_usable": len(os.sched_getaffinity(0)), "cgroup_cpu_quota": cpu_quota(),
            "threads_used": available_cpus(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "torch": torch.__version__, "gpu": None,
            "native_bf16": cpu_has_native_bf16()}


def payloads() -> dict:
    """Response bytes and encoding time, float against base64."""
    results = {}
    for rows in (8, 256):
        vectors = np.random.default_rng(0).standard_normal((rows, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for encoding in ("float", "base64"):
            data = [{"object": "embedding", "index": i,
                     "embedding": v.tolist() if encoding == "float"
                     else base64.b64encode(v.astype("<f4").tobytes()).decode()}
                    for i, v in enumerate(vectors)]
            body = {"object": "list", "data": data, "model": MODEL, "usage": {"prompt_tokens": 1, "total_tokens": 1}}
            timings = {}
            for name, dumps in (("orjson", orjson.dumps), ("json", lambda b: json.dumps(b).encode())):
                started = time.perf_counter()
                for _ in range(20):
                    encoded = dumps(body)
                timings[f"{name}_ms"] = round((time.perf_counter() - started) / 20 * 1000, 3)
            results[f"{rows} vectors, {encoding}"] = {"bytes": len(encoded), **timings}
    return results


def flops() -> dict:
    """GEMM FLOP/s at the model's shapes against the FLOP/s the model achieves at batch 32."""
    import torch
    from huggingface_hub import snapshot_download
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(snapshot_download(MODEL, local_files_only=True), device="cpu")
    config = model[0].auto_model.config
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    texts = corpus(32)
    tokens = model.tokenize(texts)["input_ids"]
    batch, seq = tokens.shape
    real_tokens = int((tokens != 0).sum())

    def gemm_flops(m: int, k: int, n: int) -> float:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        started, reps = time.perf_counter(), 20
        for _ in range(reps):
            a @ b
        return 2 * m * k * n * reps / (time.perf_counter() - started)

    m = batch * seq
    shapes = {"h x h": (m, hidden, hidden), "h x 4h": (m, hidden, inter), "4h x h": (m, inter, hidden)}
    gemm = {name: round(gemm_flops(*shape) / 1e9, 1) for name, shape in shapes.items()}
    # per layer: Q, K, V and output projections (4 h^2), FFN (2 h i), attention (2 s h)
    model_flop = layers * (2 * m * (4 * hidden * hidden + 2 * hidden * inter) + 2 * 2 * batch * seq * seq * hidden)
    with torch.inference_mode():
        for _ in range(2):
            model.encode(texts, batch_size=32)
        started, reps = time.perf_counter(), 10
        for _ in range(reps):
            model.encode(texts, batch_size=32)
    per_batch = (time.perf_counter() - started) / reps
    achieved = model_flop / per_batch / 1e9
    return {"threads": torch.get_num_threads(), "batch": batch, "padded_tokens_per_sentence": seq,
            "real_token_share": round(real_tokens / (batch * seq), 3), "gemm_gflops": gemm,
            "model_gflop_per_batch": round(model_flop / 1e9, 2), "model_gflops": round(achieved, 1),
            "ms_per_batch": round(per_batch * 1000, 1), "model_over_gemm": round(achieved / max(gemm.values()), 3)}
