"""What int8 can and cannot buy on this CPU, for all-MiniLM-L6-v2: the quality of each
quantisation scheme against float32 on the int8 gate's corpus (`engine/int8_gate.py`), and
the speed of the matrix products each scheme needs, at the model's shapes, beside bfloat16's
packed kernels (what the worker runs); interleaved rounds, medians.

Schemes: Infinity's int8 (torch's dynamic quantisation: weights per tensor, activations per
tensor at run time, 7-bit), the same with weights per output channel, and W8A8 with weights
per output channel and activations per token (emulated for quality: each linear layer's
weights and inputs rounded to int8 and back), with all layers in int8, with the feed-forward
output projections left in bfloat16, and with the attention's output projections too."""

from __future__ import annotations

import copy
import statistics
import time
import warnings

import numpy as np

from common import MODEL, corpus

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
    from embedding_worker.engine.int8_gate import MIN_COSINE, MIN_OVERLAP, neighbour_overlap

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
    }
    rows = {}
    for name, model in schemes.items():
        vectors = encode(model).astype(np.float32)
        cosine = np.sum(reference * vectors, axis=1)
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

    variants = {
        "bfloat16, packed (the worker)": lambda: torch.ops.mkldnn._linear_pointwise(xb, packed, bb, "none", [], ""),
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


def forward_passes(rounds: int = 5) -> dict:
    """A batch of 32 sentences through the model: bfloat16 with the worker's packed layers
    against Infinity's int8 (dynamic, float32 around the products)."""
    import torch
    from huggingface_hub import snapshot_download
    from sentence_transformers import SentenceTransformer

    from embedding_worker.engine.cpu_kernels import pack_linear_layers

    base = SentenceTransformer(snapshot_download(MODEL, local_files_only=True), device="cpu")
    bf16 = copy.deepcopy(base).to(torch.bfloat16)
    pack_linear_layers(bf16)
    variants = {"bfloat16, packed (the worker)": bf16, "int8: Infinity's dynamic": _dynamic(base, per_channel=False)}
    features = base.tokenize(corpus(32))
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for model in variants.values():
            model.forward(dict(features))
        for _ in range(rounds):
            for name, model in variants.items():
                started = time.perf_counter()
                for _ in range(5):
                    model.forward(dict(features))
                times[name].append((time.perf_counter() - started) / 5)
    reference = statistics.median(times["bfloat16, packed (the worker)"])
    return {name: {"ms": round(1000 * statistics.median(t), 1), "vs_bfloat16": round(reference / statistics.median(t), 2)}
            for name, t in times.items()}


def int8() -> dict:
    return {"quality": quality(), "matrix_products": matrix_products(), "forward": forward_passes()}
