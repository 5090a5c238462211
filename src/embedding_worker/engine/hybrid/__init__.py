"""Sparse and multi-vector embedding models (SPLADE, BGE-M3, PyLate ColBERT) served through
Infinity's engine: `layouts` tells them apart, `encoders` runs them in Infinity's model
interface, `hybrid_engine` puts one in an engine of its own."""

from __future__ import annotations

from typing import Any

from embedding_worker.engine.hybrid.layouts import (
    DENSE,
    EMBEDDING_TYPES,
    MULTI_VECTOR,
    SPARSE,
    ColbertLayout,
    Layout,
    M3Layout,
    SparseLayout,
    detect,
)

__all__ = ["DENSE", "EMBEDDING_TYPES", "MULTI_VECTOR", "SPARSE", "Layout", "detect", "hybrid_engine"]


def hybrid_engine(layout: Layout, engine_args: Any) -> Any:
    """An Infinity `AsyncEmbeddingEngine` whose one replica is the layout's encoder."""
    from infinity_emb import AsyncEmbeddingEngine

    from embedding_worker.engine.hybrid.encoders import ColbertEncoder, M3Encoder, SparseEncoder

    encoder = {SparseLayout: SparseEncoder, M3Layout: M3Encoder, ColbertLayout: ColbertEncoder}[type(layout)]

    class HybridEngine(AsyncEmbeddingEngine):
        """Infinity's engine with a replica built here instead of by its `select_model`
        (the same fields its constructor sets, in infinity-emb 0.0.78)."""

        def __init__(self) -> None:
            self._engine_args = engine_args
            self.running = False
            self._running_sepamore = None
            self._model_replicas = [encoder(layout, engine_args)]
            self._min_inference_t = self._max_inference_t = 4e-3

    return HybridEngine()
