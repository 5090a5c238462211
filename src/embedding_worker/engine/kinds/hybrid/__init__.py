"""Sparse and multi-vector embedding models (SPLADE, BGE-M3, PyLate ColBERT) served through
Infinity's engine: `layouts` tells them apart, `encoders` runs them in Infinity's model
interface, `vectors` holds what passes through the queue and ColBERT's MaxSim; `KIND`
registers them (`engine/kinds/__init__.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedding_worker.engine.kinds.hybrid.layouts import (
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
from embedding_worker.engine.kinds.hybrid.vectors import maxsim
from embedding_worker.engine.model_kind import Found, Traits

__all__ = ["DENSE", "EMBEDDING_TYPES", "KIND", "MULTI_VECTOR", "SPARSE", "Layout", "detect", "hybrid_engine"]


def hybrid_engine(layout: Layout, engine_args: Any) -> Any:
    """An Infinity `AsyncEmbeddingEngine` whose one replica is the layout's encoder."""
    from embedding_worker.engine.kinds.hybrid.encoders import ColbertEncoder, M3Encoder, SparseEncoder
    from embedding_worker.engine.infinity_internals import engine_with

    encoder = {SparseLayout: SparseEncoder, M3Layout: M3Encoder, ColbertLayout: ColbertEncoder}[type(layout)]
    return engine_with(encoder(layout, engine_args), engine_args)


class HybridKind:
    names = ("sparse", "bge-m3", "colbert")
    _layouts = {"sparse": SparseLayout, "bge-m3": M3Layout, "colbert": ColbertLayout}

    def find(self, path: Path, name: str | None) -> Found | None:
        layout = detect(path)
        if layout is None:
            return None
        if name is not None and not isinstance(layout, self._layouts[name]):
            return None
        traits = Traits(embedding_types=layout.types,
                        sparse_top_k=getattr(layout, "max_active_dims", None),
                        scores_token_vectors=maxsim if isinstance(layout, ColbertLayout) else None)
        return Found(f"gives {', '.join(layout.types)} embeddings", traits, lambda args: hybrid_engine(layout, args))


KIND = HybridKind()
