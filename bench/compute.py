"""How close the model runs to the hardware, and what response encodings cost."""

from __future__ import annotations

import base64
import json
import os
import platform
import statistics
import time

import numpy as np
import orjson
import psutil

from common import MODEL, corpus


def hardware() -> dict:
    import torch

    from embedding_worker.engine.cpu.quota import available_cpus, cpu_quota
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


def flops(auto_dtype: str, rounds: int = 8) -> dict:
    """At float32 and at `auto_dtype`: GEMM FLOP/s at the model's shapes, the FLOP/s the model
    achieves at batch 32 with torch's linear layers and with the worker's packed ones
    (`engine/cpu/kernels.py`, timed in interleaved rounds), and where a forward pass's time goes
    (torch profiler, by operator kind). No serving path can pass the model's compute."""
    import torch
    from huggingface_hub import snapshot_download
    from sentence_transformers import SentenceTransformer

    from embedding_worker.engine.cpu.kernels import pack_linear_layers

    path = snapshot_download(MODEL, local_files_only=True)
    texts = corpus(32)
    results = {"threads": torch.get_num_threads(), "rounds": rounds, "dtypes": {}}
    for name in dict.fromkeys(["float32", auto_dtype]):
        dtype = getattr(torch, name)
        variants = {"torch's layers": SentenceTransformer(path, device="cpu").to(dtype),
                    "packed (the worker)": SentenceTransformer(path, device="cpu").to(dtype)}
        pack_linear_layers(variants["packed (the worker)"])
        config = variants["torch's layers"][0].auto_model.config
        hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
        features = variants["torch's layers"].tokenize(texts)
        batch, seq = features["input_ids"].shape
        m = batch * seq
        shapes = {"h x h": (m, hidden, hidden), "h x 4h": (m, hidden, inter), "4h x h": (m, inter, hidden)}
        gemm = {label: round(_gemm_flops(*shape, dtype) / 1e9, 1) for label, shape in shapes.items()}
        # per layer: Q, K, V and output projections (4 h^2), FFN (2 h i), attention (2 s h)
        model_flop = layers * (2 * m * (4 * hidden * hidden + 2 * hidden * inter) + 2 * 2 * batch * seq * seq * hidden)
        times: dict[str, list[float]] = {variant: [] for variant in variants}
        with torch.inference_mode():
            for model in variants.values():
                for _ in range(2):
                    model(dict(features))
            for _ in range(rounds):
                for variant, model in variants.items():
                    started = time.perf_counter()
                    for _ in range(3):
                        model(dict(features))
                    times[variant].append((time.perf_counter() - started) / 3)
            shares = {}
            for variant, model in variants.items():
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
                    for _ in range(3):
                        model(dict(features))
                shares[variant] = _operator_shares(profiler)
        for variant, per_batch_times in times.items():
            per_batch = statistics.median(per_batch_times)
            achieved = model_flop / per_batch / 1e9
            speedups = [before / after for before, after in zip(times["torch's layers"], per_batch_times)]
            results["dtypes"][f"{name}, {variant}"] = {
                "batch": batch, "padded_tokens_per_sentence": seq,
                "real_token_share": round(float(features["attention_mask"].float().mean()), 3), "gemm_gflops": gemm,
                "model_gflop_per_batch": round(model_flop / 1e9, 2), "model_gflops": round(achieved, 1),
                "ms_per_batch": round(per_batch * 1000, 1), "model_over_gemm": round(achieved / max(gemm.values()), 3),
                "speedup_median": round(statistics.median(speedups), 2),
                "speedup_rounds": [round(x, 2) for x in speedups], "time_by_operator": shares[variant]}
    return results


def _gemm_flops(m: int, k: int, n: int, dtype) -> float:
    import torch

    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    started, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    return 2 * m * k * n * reps / (time.perf_counter() - started)


OPERATOR_KINDS = {"matmul (linear layers)": ("addmm", "mm", "bmm", "matmul", "_linear_pointwise"),
                  "attention": ("scaled_dot_product", "softmax", "baddbmm"),
                  "activation and layer norm": ("gelu", "layer_norm", "tanh")}


def _operator_shares(profiler) -> dict[str, float]:
    """Self CPU time by operator kind, as shares of the forward passes' total."""
    totals = {kind: 0.0 for kind in [*OPERATOR_KINDS, "everything else"]}
    for event in profiler.key_averages():
        name = event.key.removeprefix("aten::")
        kind = next((kind for kind, keys in OPERATOR_KINDS.items()
                     if any(name == key or (len(key) > 4 and key in name) for key in keys)), "everything else")
        totals[kind] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {kind: round(value / whole, 3) for kind, value in totals.items()}


ATTENTION_SHAPES = [(12, 32), (12, 64)]  # (heads, head size): MiniLM-L6 and base-sized encoders
ATTENTION_LENGTHS = [16, 64, 128, 256, 512]


def attention(auto_dtype: str, rounds: int = 5) -> dict:
    """One text's self-attention, as the real-token path runs it, with each of torch's CPU
    kernels (scaled-dot-product's flash kernel, its math kernel) and a plain matmul-softmax:
    ms per call, the median of `rounds` interleaved rounds."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    def plain(q, k, v):
        return torch.softmax((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1) @ v

    def flash(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return sdpa(q, k, v)

    def math(q, k, v):
        with sdpa_kernel(SDPBackend.MATH):
            return sdpa(q, k, v)

    kernels = {"sdpa flash": flash, "sdpa math": math, "matmul + softmax": plain}
    rows = []
    for dtype in dict.fromkeys(["float32", auto_dtype]):
        for heads, size in ATTENTION_SHAPES:
            for length in ATTENTION_LENGTHS:
                q, k, v = (torch.randn(1, heads, length, size).to(getattr(torch, dtype)) for _ in range(3))
                repeat = max(3, 2048 // length)
                times: dict[str, list[float]] = {name: [] for name in kernels}
                with torch.inference_mode():
                    for _ in range(rounds):
                        for name, kernel in kernels.items():
                            kernel(q, k, v)
                            started = time.perf_counter()
                            for _ in range(repeat):
                                kernel(q, k, v)
                            times[name].append((time.perf_counter() - started) / repeat * 1000)
                medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
                rows.append({"dtype": dtype, "heads": heads, "head_size": size, "length": length, "ms": medians,
                             "fastest": min(medians, key=medians.get)})
    return {"threads": torch.get_num_threads(), "rows": rows}


def workload_profile(auto_dtype: str, rounds: int = 5) -> dict:
    """Where a batch of the mixed-documents workload spends its time, at `auto_dtype`: the
    padded model with packed layers against the worker (packed, real tokens only), timed in
    interleaved rounds, with the time by operator and the FLOP/s on real tokens against a GEMM
    at the same shape: how much is left above the hardware."""
    import torch
    from huggingface_hub import snapshot_download
    from sentence_transformers import SentenceTransformer

    import workloads
    from embedding_worker.engine.cpu.kernels import pack_linear_layers
    from embedding_worker.engine.cpu.real_tokens import compute_on_real_tokens

    dtype = getattr(torch, auto_dtype)
    texts = [t for _, batch in workloads.requests_for(workloads.WORKLOADS[0], 1.0)[:8] for t in batch]
    path = snapshot_download(MODEL, local_files_only=True)
    variants = {"padded (packed layers)": SentenceTransformer(path, device="cpu").to(dtype),
                "the worker (packed, real tokens only)": SentenceTransformer(path, device="cpu").to(dtype)}
    for model in variants.values():
        pack_linear_layers(model)
    compute_on_real_tokens(variants["the worker (packed, real tokens only)"])
    features = variants["padded (packed layers)"].tokenize(texts)
    real = int(features["attention_mask"].sum())
    config = variants["padded (packed layers)"][0].auto_model.config
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    lengths = features["attention_mask"].sum(1).tolist()
    linear_flop = layers * 2 * real * (4 * hidden * hidden + 2 * hidden * inter)
    attention_flop = layers * 4 * hidden * sum(n * n for n in lengths)
    gemm = _gemm_flops(real, hidden, inter, dtype) / 1e9
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for model in variants.values():
            model(dict(features))
        for _ in range(rounds):
            for name, model in variants.items():
                started = time.perf_counter()
                model(dict(features))
                times[name].append(time.perf_counter() - started)
        rows = {}
        for name, model in variants.items():
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
                model(dict(features))
            seconds = statistics.median(times[name])
            rows[name] = {"ms_per_batch": round(seconds * 1000, 1), "real_tokens_per_s": round(real / seconds),
                          "gflops_on_real_tokens": round((linear_flop + attention_flop) / seconds / 1e9, 1),
                          "time_by_operator": _operator_shares(profiler)}
    padded, worker = (times[name] for name in variants)
    return {"dtype": auto_dtype, "threads": torch.get_num_threads(), "batch": len(texts),
            "padded_length": int(features["input_ids"].shape[1]), "real_tokens": real,
            "real_share": round(real / features["attention_mask"].numel(), 3), "gemm_gflops": round(gemm, 1),
            "speedup_rounds": [round(p / w, 2) for p, w in zip(padded, worker)],
            "speedup_median": round(statistics.median(p / w for p, w in zip(padded, worker)), 2), "variants": rows}
