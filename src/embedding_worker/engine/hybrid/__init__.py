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
    from embedding_worker.engine.custom_engine import engine_with
    from embedding_worker.engine.hybrid.encoders import ColbertEncoder, M3Encoder, SparseEncoder

    encoder = {SparseLayout: SparseEncoder, M3Layout: M3Encoder, ColbertLayout: ColbertEncoder}[type(layout)]
    return engine_with(encoder(layout, engine_args), engine_args)
