"""`DTYPES=int8` on a CPU, never silently worse: an embedder's encoder is quantised
(`int8_cpu.py`: static, smoothed int8 products on oneDNN for the layers fed by a layer norm)
only if the quantised copy keeps retrieval on a fixed corpus of sentences
(`compact.CALIBRATION_TEXTS`, apart from the texts that calibrate the quantisation) against
the model at float32:

- every vector within cosine MIN_COSINE of its float32 vector, the sentences' and those of
  a few long documents made of them, and
- each sentence's 10 nearest neighbours among the others at least MIN_OVERLAP the same.

A model that fails, or that int8 does not cover (other families, rerankers, classifiers), is
served at bfloat16 (float32 on a CPU without native bf16) instead, and the start-up line says
what was measured or why.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MIN_COSINE = 0.99
MIN_OVERLAP = 0.95
NEIGHBOURS = 10


def vectors(replica: Any, texts: list[str]) -> np.ndarray:
    output = replica.encode_post(replica.encode_core(replica.encode_pre(texts)))
    matrix = np.asarray(output, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def neighbour_overlap(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The share of each sentence's NEIGHBOURS nearest others that stay the same."""
    def nearest(matrix: np.ndarray) -> np.ndarray:
        similarity = matrix @ matrix.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1)[:, :NEIGHBOURS]

    ours, theirs = nearest(reference), nearest(candidate)
    return float(np.mean([len(set(a) & set(b)) / NEIGHBOURS for a, b in zip(ours, theirs)]))


def documents() -> list[str]:
    """Four documents of about 200 to 850 words, made of the gate's sentences: vectors of
    long texts must hold too (cosine only: they are too few for neighbours)."""
    from embedding_worker.compact import CALIBRATION_TEXTS

    return [" ".join(CALIBRATION_TEXTS[24 * k:24 * (k + 1)] * (k + 1)) for k in range(4)]


def gate_int8(name: str, replica: Any, capabilities: set[str], fallback: str) -> str:
    """Quantise `replica` (loaded at float32) to int8 if it passes the gate; else cast it to
    `fallback`. Return the dtype it now runs at."""
    import torch

    from embedding_worker.compact import CALIBRATION_TEXTS
    from embedding_worker.engine import int8_cpu
    from embedding_worker.engine.cpu_kernels import torch_modules

    modules = list(torch_modules(replica))
    reason = "int8 is gated for embedders only" if "embed" not in capabilities or len(modules) != 1 else None
    reason = reason or int8_cpu.quantisable(modules[0])
    if reason is None:
        with torch.inference_mode():
            texts = CALIBRATION_TEXTS + documents()
            reference = vectors(replica, texts)
            ranges = int8_cpu.calibrate(modules[0], lambda batch: replica.encode_core(replica.encode_pre(batch)))
            candidate = copy.deepcopy(replica)
            _to_int8(candidate, ranges, fallback)
            quantised = vectors(candidate, texts)
            del candidate
        cosine = float(np.sum(reference * quantised, axis=1).min())
        sentences = len(CALIBRATION_TEXTS)
        overlap = neighbour_overlap(reference[:sentences], quantised[:sentences])
        measured = (f"min cosine {cosine:.3f} (gate {MIN_COSINE}), top-{NEIGHBOURS} neighbours {overlap:.0%} the same "
                    f"(gate {MIN_OVERLAP:.0%}) against float32 on {sentences} sentences and "
                    f"{len(texts) - sentences} documents")
        if cosine >= MIN_COSINE and overlap >= MIN_OVERLAP:
            layers = _to_int8(replica, ranges, fallback)
            log.info("model %r: int8 passes its quality gate: %s; %d encoder layers' query/key/value and "
                     "feed-forward products in int8, the rest at %s", name, measured, layers, fallback)
            return "int8"
        reason = f"int8 fails its quality gate: {measured}"
    modules[0].to({"bfloat16": torch.bfloat16}.get(fallback, torch.float32))
    log.warning("model %r: %s; serving it at %s instead (DTYPES=%s to choose)", name, reason, fallback, fallback)
    return fallback


def _to_int8(replica: Any, ranges: Any, rest: str) -> int:
    """`replica` (at float32) with its encoder layers' products in int8 and the rest at
    `rest`, on the packed kernels and real tokens (`cpu_kernels.py`, `real_tokens.py`)."""
    import torch

    from embedding_worker.engine import int8_cpu
    from embedding_worker.engine.cpu_kernels import pack_linear_layers, torch_modules
    from embedding_worker.engine.real_tokens import compute_on_real_tokens

    module = next(iter(torch_modules(replica)))
    layers = int8_cpu.quantise(module, ranges)
    module.to({"bfloat16": torch.bfloat16}.get(rest, torch.float32))
    pack_linear_layers(module)
    compute_on_real_tokens(module)
    return layers
