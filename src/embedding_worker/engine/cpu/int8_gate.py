"""`DTYPES=int8` on a CPU, never silently worse: an embedder's or a reranker's encoder is
quantised (`int8.py`: static, smoothed int8 products on oneDNN for the layers fed by a
layer norm) only if the quantised copy keeps what it is for on a fixed corpus
(`compact.CALIBRATION_TEXTS`, apart from the texts that calibrate the quantisation), against
the model at float32.

An embedder keeps retrieval:
- every vector within cosine MIN_COSINE of its float32 vector, the sentences' and those of
  a few long documents made of them, and
- each sentence's 10 nearest neighbours among the others at least MIN_OVERLAP the same.

A reranker keeps its order: 8 queries, each against the same 24 sentences and 2 documents,
- the scores' correlation with float32's at least MIN_COSINE, and
- each query's 10 best documents at least MIN_OVERLAP the same.

A model that fails, or that int8 does not cover (other families, classifiers), is served at
bfloat16 (float32 on a CPU without native bf16) instead, and the start-up line says what
was measured or why.
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


def _batched(replica: Any, items: list, length: Any, batch: int = 32) -> np.ndarray:
    """The replica's outputs for `items`, in batches of items of like `length` (as the engine
    batches them): one batch of all would pad every sentence to the longest document."""
    order = sorted(range(len(items)), key=lambda i: length(items[i]))
    found: list = [None] * len(items)
    for start in range(0, len(order), batch):
        chosen = order[start:start + batch]
        output = replica.encode_post(replica.encode_core(replica.encode_pre([items[i] for i in chosen])))
        for i, row in zip(chosen, output):
            found[i] = row
    return np.asarray(found, dtype=np.float32)


def vectors(replica: Any, texts: list[str]) -> np.ndarray:
    matrix = _batched(replica, texts, len)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def neighbour_overlap(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The share of each sentence's NEIGHBOURS nearest others that stay the same."""
    def similarities(matrix: np.ndarray) -> np.ndarray:
        similarity = matrix @ matrix.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity

    return top_overlap(similarities(reference), similarities(candidate))


def top_overlap(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The share of each row's NEIGHBOURS highest-scored columns that stay the same."""
    def top(matrix: np.ndarray) -> np.ndarray:
        return np.argsort(-matrix, axis=1)[:, :NEIGHBOURS]

    return float(np.mean([len(set(a) & set(b)) / NEIGHBOURS for a, b in zip(top(reference), top(candidate))]))


def documents() -> list[str]:
    """Four documents of about 200 to 850 words, made of the gate's sentences: vectors of
    long texts must hold too (cosine only: they are too few for neighbours)."""
    from embedding_worker.compact import CALIBRATION_TEXTS

    return [" ".join(CALIBRATION_TEXTS[24 * k:24 * (k + 1)] * (k + 1)) for k in range(4)]


def rerank_pairs() -> list[tuple[str, str]]:
    """Eight queries, each against the same 24 of the gate's sentences and its 2 shorter
    documents."""
    from embedding_worker.compact import CALIBRATION_TEXTS

    return [(query, document) for query in CALIBRATION_TEXTS[96:]
            for document in CALIBRATION_TEXTS[:96:4] + documents()[:2]]


def scores(replica: Any, pairs: list[tuple[str, str]]) -> np.ndarray:
    return _batched(replica, pairs, lambda pair: len(pair[1]))


def _embedder_check(replica: Any, candidate: Any) -> tuple[float, float, str]:
    """(min cosine, neighbours kept, what was compared) of `candidate` against `replica`."""
    from embedding_worker.compact import CALIBRATION_TEXTS

    texts = CALIBRATION_TEXTS + documents()
    reference, quantised = vectors(replica, texts), vectors(candidate, texts)
    sentences = len(CALIBRATION_TEXTS)
    return (float(np.sum(reference * quantised, axis=1).min()),
            neighbour_overlap(reference[:sentences], quantised[:sentences]),
            f"min cosine {{:.3f}} (gate {MIN_COSINE}), top-{NEIGHBOURS} neighbours {{:.0%}} the same "
            f"(gate {MIN_OVERLAP:.0%}) against float32 on {sentences} sentences and {len(texts) - sentences} documents")


def _reranker_check(replica: Any, candidate: Any) -> tuple[float, float, str]:
    """(the scores' correlation, each query's top documents kept, what was compared)."""
    pairs = rerank_pairs()
    queries = len({query for query, _ in pairs})
    reference = scores(replica, pairs).reshape(queries, -1)
    quantised = scores(candidate, pairs).reshape(queries, -1)
    correlation = float(np.corrcoef(reference.ravel(), quantised.ravel())[0, 1])
    return (correlation, top_overlap(reference, quantised),
            f"scores' correlation {{:.3f}} (gate {MIN_COSINE}), each query's top-{NEIGHBOURS} documents {{:.0%}} the "
            f"same (gate {MIN_OVERLAP:.0%}) against float32 on {queries} queries of {reference.shape[1]} documents")


def gate_int8(name: str, replica: Any, capabilities: set[str], fallback: str) -> str:
    """Quantise `replica` (loaded at float32) to int8 if it passes the gate; else cast it to
    `fallback`. Return the dtype it now runs at."""
    import torch

    from embedding_worker.engine.cpu import int8 as int8_cpu
    from embedding_worker.engine.cpu.kernels import torch_modules

    modules = [m for m in torch_modules(replica) if int8_cpu.encoders(m)] or list(torch_modules(replica))
    reranker = "rerank" in capabilities
    reason = ("int8 is gated for embedders and rerankers only"
              if not ({"embed", "rerank"} & capabilities) or len(modules) != 1 else None)
    reason = reason or int8_cpu.quantisable(modules[0])
    if reason is None:
        if reranker:
            def run(text: str) -> Any:
                return replica.encode_core(replica.encode_pre([(" ".join(text.split()[:8]), text)]))
        else:
            def run(text: str) -> Any:
                return replica.encode_core(replica.encode_pre([text]))
        with torch.inference_mode():
            ranges = int8_cpu.calibrate(modules[0], run)
            candidate = copy.deepcopy(replica)
            _to_int8(candidate, ranges, fallback)
            closeness, kept, compared = (_reranker_check if reranker else _embedder_check)(replica, candidate)
            del candidate
        measured = compared.format(closeness, kept)
        if closeness >= MIN_COSINE and kept >= MIN_OVERLAP:
            layers = _to_int8(replica, ranges, fallback)
            log.info("model %r: int8 passes its quality gate: %s; %d encoder layers' query/key/value and "
                     "feed-forward products in int8, the rest at %s", name, measured, layers, fallback)
            return "int8"
        reason = f"int8 fails its quality gate: {measured}"
    _cast(replica, fallback)
    log.warning("model %r: %s; serving it at %s instead (DTYPES=%s to choose)", name, reason, fallback, fallback)
    return fallback


def _to_int8(replica: Any, ranges: Any, rest: str) -> int:
    """`replica` (at float32) with its encoder layers' products in int8 and the rest at
    `rest`, on the packed kernels and real tokens (`kernels.py`, `real_tokens.py`)."""

    from embedding_worker.engine.cpu import int8 as int8_cpu
    from embedding_worker.engine.cpu.kernels import pack_linear_layers, torch_modules
    from embedding_worker.engine.cpu.real_tokens import compute_on_real_tokens

    module = next(m for m in torch_modules(replica) if int8_cpu.encoders(m))
    layers = int8_cpu.quantise(module, ranges)
    _cast(replica, rest)
    pack_linear_layers(replica)
    compute_on_real_tokens(replica)
    return layers


def _cast(replica: Any, dtype: str) -> None:
    """Every torch module of `replica` to `dtype` ("bfloat16", else float32)."""
    import torch

    from embedding_worker.engine.cpu.kernels import torch_modules

    for module in torch_modules(replica):
        module.to({"bfloat16": torch.bfloat16}.get(dtype, torch.float32))
