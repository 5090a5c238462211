"""What int8 can and cannot buy on this CPU, for all-MiniLM-L6-v2: the quality of each
quantisation scheme against float32 on the int8 gate's corpus (`engine/cpu/int8_gate.py`), and
the speed of the matrix products each scheme needs, at the model's shapes, beside bfloat16's
packed kernels (what the worker runs); interleaved rounds, medians.

Schemes: Infinity's int8 (torch's dynamic quantisation: weights per tensor, activations per
tensor at run time, 7-bit), the same with weights per output channel, and W8A8 with weights
per output channel and activations per token (emulated for quality: each linear layer's
weights and inputs rounded to int8 and back), with all layers in int8, with the feed-forward
output projections left in bfloat16, and with the attention's output projections too; and
the worker's own (`engine/cpu/int8.py`), run for real. Then the forward pass: the worker's
int8 against its bfloat16 and float32."""

from __future__ import annotations

import copy
import statistics
import time
import warnings

import numpy as np

from common import MODEL, corpus, cosines

ROWS = 32 * 42  # a batch of 32 of the corpus' sentences, padded: the throughput shapes


def _emulated_w8a8(model, skip: str | None = None):
    """`model` with every linear layer's weights and inputs rounded to int8 and back, but
    those whose name matches the regular expression `skip`."""
    import re

    import torch

    model = copy.deepcopy(model)
    for name, layer in model[0].auto_model.named_modules():
        if not isinstance(layer, torch.nn.Linear) or (skip and re.search(skip, name)):
            continue
        weight = layer.weight.data
        scale = weight.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
        layer.weight.data = (weight / scale).round().clamp(-127, 127) * scale

        def per_token(module, args):
            x = args[0]
            s = x.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127
            return ((x / s).round().clamp(-127, 127) * s,)

        layer.register_forward_pre_hook(per_token)
    return model


def _dynamic(model, per_channel: bool):
    import torch

    model = copy.deepcopy(model)
    qconfig = (torch.ao.quantization.per_channel_dynamic_qconfig if per_channel
               else torch.ao.quantization.default_dynamic_qconfig)
    torch.ao.quantization.quantize_dynamic(model[0].auto_model, {torch.nn.Linear: qconfig}, dtype=torch.qint8,
                                           inplace=True)
    return model


def quality() -> dict:
    import torch
    from huggingface_hub import snapshot_download
    from sentence_transformers import SentenceTransformer

    from embedding_worker.compact import CALIBRATION_TEXTS
    from embedding_worker.engine.cpu.int8_gate import MIN_COSINE, MIN_OVERLAP, neighbour_overlap

    warnings.filterwarnings("ignore", category=UserWarning)
    base = SentenceTransformer(snapshot_download(MODEL, local_files_only=True), device="cpu")

    def encode(model) -> np.ndarray:
        with torch.inference_mode():
            return model.encode(CALIBRATION_TEXTS, batch_size=64, normalize_embeddings=True)

    reference = encode(base)
    schemes = {
        "bfloat16 (the worker's CPU default)": copy.deepcopy(base).to(torch.bfloat16),
        "int8: Infinity's (dynamic, per-tensor weights and activations)": _dynamic(base, per_channel=False),
        "int8: dynamic, per-channel weights, per-tensor activations": _dynamic(base, per_channel=True),
        "int8 W8A8: per-channel weights, per-token activations": _emulated_w8a8(base),
        "int8 W8A8 as above, feed-forward output projections in bfloat16": _emulated_w8a8(
            base, skip=r"layer\.\d+\.output\.dense$"),
        "int8 W8A8 as above, attention and feed-forward output projections in bfloat16": _emulated_w8a8(
            base, skip=r"output\.dense$"),
        "int8: the worker's (smoothed, static per-tensor inputs; query/key/value and the first feed-forward "
        "product in int8, the rest bfloat16)": _worker_int8(base, "bfloat16"),
    }
    rows = {}
    for name, model in schemes.items():
        vectors = encode(model).astype(np.float32)
        cosine = cosines(reference, vectors)
        overlap = neighbour_overlap(reference, vectors)
        rows[name] = {"min_cosine": round(float(cosine.min()), 4), "mean_cosine": round(float(cosine.mean()), 4),
                      "top10_same": round(overlap, 3),
                      "passes_gate": bool(cosine.min() >= MIN_COSINE and overlap >= MIN_OVERLAP)}
    return {"sentences": len(CALIBRATION_TEXTS), "gate": {"min_cosine": MIN_COSINE, "top10_same": MIN_OVERLAP},
            "schemes": rows}


def matrix_products(rounds: int = 5) -> dict:
    """GFLOP/s of one linear layer at each of the model's shapes, per scheme."""
    import torch

    torch.manual_seed(0)
    shapes = {"h x h": (384, 384), "h x 4h": (384, 1536), "4h x h": (1536, 384)}
    results: dict[str, dict[str, list[float]]] = {}
    compile_seconds = None
    for label, (k, n) in shapes.items():
        variants, seconds = _layer_variants(k, n)
        compile_seconds = compile_seconds or seconds
        flop = 2 * ROWS * k * n
        for fn in variants.values():
            for _ in range(3):
                fn()
        for _ in range(rounds):
            for name, fn in variants.items():
                started = time.perf_counter()
                for _ in range(10):
                    fn()
                results.setdefault(name, {}).setdefault(label, []).append(flop * 10 / (time.perf_counter() - started) / 1e9)
    return {"rows": ROWS, "rounds": rounds, "threads": torch.get_num_threads(), "compile_seconds": compile_seconds,
            "gflops": {name: {label: round(statistics.median(v)) for label, v in by_shape.items()}
                       for name, by_shape in results.items()}}


def _layer_variants(k: int, n: int) -> tuple[dict, float | None]:
    """One linear layer of `k` inputs and `n` outputs in each scheme, as a call each; and
    what compiling the fused one took (None where torch.compile has no compiler here)."""
    import torch

    x = torch.randn(ROWS, k)
    weight, bias = torch.randn(n, k) * 0.05, torch.randn(n)
    xb, bb = x.bfloat16(), bias.bfloat16()
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.bfloat16(), None)
    w_scale = weight.abs().amax(1) / 127
    w_int8 = (weight / w_scale[:, None]).round().clamp(-127, 127).to(torch.int8).t().contiguous()
    a_int8 = torch.randint(-127, 127, (ROWS, k), dtype=torch.int8)
    dynamic = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(k, n)),
                                                     {torch.nn.Linear}, dtype=torch.qint8)

    def quantise(x):
        scale = x.float().abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
        return (x.float() / scale).round().clamp(-127, 127).to(torch.int8), scale

    def dequantise(product, scale):
        return (product.float() * scale * w_scale + bias).bfloat16()

    def w8a8(q=quantise, d=dequantise):
        a, scale = q(xb)
        return d(torch._int_mm(a, w_int8), scale)

    from embedding_worker.engine.cpu.int8 import Int8Linear

    worker_int8 = Int8Linear(weight, bias, torch.ones(k), float(x.min()), float(x.max()))
    variants = {
        "bfloat16, packed (the worker)": lambda: torch.ops.mkldnn._linear_pointwise(xb, packed, bb, "none", [], ""),
        "int8: the worker's (oneDNN, static per-tensor input, its quantisation included)": lambda: worker_int8(xb),
        "int8 x int8 -> int32 product alone (torch._int_mm)": lambda: torch._int_mm(a_int8, w_int8),
        "int8: Infinity's dynamic (float32 in and out)": lambda: dynamic(x),
        "int8 W8A8 per token, eager quantise and dequantise": w8a8,
    }
    try:
        started = time.perf_counter()
        fused_quantise = torch.compile(quantise, dynamic=True)
        fused_dequantise = torch.compile(dequantise, dynamic=True)
        w8a8(fused_quantise, fused_dequantise)
        seconds = round(time.perf_counter() - started, 1)
    except Exception:  # noqa: BLE001 - no compiler: the row is left out
        return variants, None
    variants["int8 W8A8 per token, quantise and dequantise fused (torch.compile)"] = \
        lambda: w8a8(fused_quantise, fused_dequantise)
    return variants, seconds


def _worker_int8(base, rest: str):
    """`base` (float32) as `DTYPES=int8` serves it (`engine/cpu/int8.py`), the rest at `rest`."""
    from embedding_worker.engine.cpu import int8 as int8_cpu
    from embedding_worker.engine.cpu.int8_gate import _to_int8

    model = copy.deepcopy(base)
    ranges = int8_cpu.calibrate(model, lambda texts: model.forward(model.tokenize(texts)))
    _to_int8(model, ranges, rest)
    return model


def forward_passes(rounds: int = 5) -> dict:
    """The worker's forward pass (packed layers, real tokens) at bfloat16 and float32, against
    its int8 with the rest at each (float32: what a CPU without native bf16 runs), and
    Infinity's int8; a batch of 32 short sentences and one of 32 mixed documents, the ratio
    taken within each round."""
    import torch
    from huggingface_hub import snapshot_download
    from sentence_transformers import SentenceTransformer

    import workloads
    from embedding_worker.engine.cpu.kernels import pack_linear_layers
    from embedding_worker.engine.cpu.real_tokens import compute_on_real_tokens

    base = SentenceTransformer(snapshot_download(MODEL, local_files_only=True), device="cpu")

    def worker_at(dtype):
        model = copy.deepcopy(base).to(dtype)
        pack_linear_layers(model)
        compute_on_real_tokens(model)
        return model

    variants = {"bfloat16 (the worker)": worker_at(torch.bfloat16),
                "int8: the worker's, the rest bfloat16": _worker_int8(base, "bfloat16"),
                "float32 (the worker)": worker_at(torch.float32),
                "int8: the worker's, the rest float32": _worker_int8(base, "float32"),
                "int8: Infinity's dynamic": _dynamic(base, per_channel=False)}
    against = {"int8: the worker's, the rest float32": "float32 (the worker)"}
    mixed = [t for _, texts in workloads.requests_for(workloads.WORKLOADS[0], 1.0) for t in texts][:32]
    batches = {"32 short sentences": base.tokenize(corpus(32)), "32 mixed documents": base.tokenize(mixed)}
    times = {(batch, name): [] for batch in batches for name in variants}
    with torch.inference_mode():
        for model in variants.values():
            for features in batches.values():
                model.forward(dict(features))
        for _ in range(rounds):
            for batch, features in batches.items():
                for name, model in variants.items():
                    started = time.perf_counter()
                    for _ in range(3):
                        model.forward(dict(features))
                    times[batch, name].append((time.perf_counter() - started) / 3)
    results: dict[str, dict] = {}
    for (batch, name), values in times.items():
        reference = times[batch, against.get(name, "bfloat16 (the worker)")]
        results.setdefault(batch, {})[name] = {
            "ms": round(1000 * statistics.median(values), 1), "against": against.get(name, "bfloat16 (the worker)"),
            "speedup": round(statistics.median(r / v for r, v in zip(reference, values)), 2),
            "speedup_by_round": [round(r / v, 2) for r, v in zip(reference, values)]}
    return results


def int8() -> dict:
    return {"quality": quality(), "matrix_products": matrix_products(), "forward": forward_passes()}
