"""`DTYPES=int8` on a CPU, never silently worse: an embedder is quantised (every linear
layer's weights to int8, activations at run time: torch's dynamic quantisation, what
Infinity's int8 is) only if the quantised copy keeps retrieval on a fixed corpus of
sentences (`compact.CALIBRATION_TEXTS`) against the model at float32:

- every vector within cosine MIN_COSINE of its float32 vector, and
- each sentence's 10 nearest neighbours among the others at least MIN_OVERLAP the same.

A model that fails is served at bfloat16 (float32 on a CPU without native bf16) instead,
and the start-up line says what was measured. Rerankers and classifiers have no such gate
yet, so they fall back the same way.
"""

from __future__ import annotations

import copy
import logging
import warnings
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


def gate_int8(name: str, replica: Any, capabilities: set[str], fallback: str) -> str:
    """Quantise `replica` (loaded at float32) to int8 if it passes the gate; else cast it to
    `fallback`. Return the dtype it now runs at."""
    import torch

    from embedding_worker.compact import CALIBRATION_TEXTS
    from embedding_worker.engine.cpu_kernels import torch_modules

    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*are deprecated", category=UserWarning)
    modules = list(torch_modules(replica))
    reason = "int8 is gated for embedders only" if "embed" not in capabilities or len(modules) != 1 else None
    if reason is None:
        with torch.inference_mode():
            reference = vectors(replica, CALIBRATION_TEXTS)
            candidate = copy.deepcopy(replica)
            torch.ao.quantization.quantize_dynamic(next(iter(torch_modules(candidate))), {torch.nn.Linear},
                                                   dtype=torch.qint8, inplace=True)
            quantised = vectors(candidate, CALIBRATION_TEXTS)
        cosine = float(np.sum(reference * quantised, axis=1).min())
        overlap = neighbour_overlap(reference, quantised)
        measured = (f"min cosine {cosine:.3f} (gate {MIN_COSINE}), top-{NEIGHBOURS} neighbours {overlap:.0%} the same "
                    f"(gate {MIN_OVERLAP:.0%}) against float32 on {len(CALIBRATION_TEXTS)} sentences")
        if cosine >= MIN_COSINE and overlap >= MIN_OVERLAP:
            torch.ao.quantization.quantize_dynamic(modules[0], {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
            log.info("model %r: int8 passes its quality gate: %s", name, measured)
            return "int8"
        reason = f"int8 fails its quality gate: {measured}"
    modules[0].to({"bfloat16": torch.bfloat16}.get(fallback, torch.float32))
    log.warning("model %r: %s; serving it at %s instead (DTYPES=%s to choose)", name, reason, fallback, fallback)
    return fallback
