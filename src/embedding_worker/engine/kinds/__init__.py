"""Model kinds beyond Infinity's own (dense embedders, cross-encoders, classifiers, CLIP,
CLAP): each lives in its own folder and registers in `KINDS` with one line.

`find_kind` asks each in turn; the first that recognises the folder builds the engine, and
a folder no kind claims is Infinity's. MODEL_KINDS can name a kind for a model whose files
do not say (a fine-tuned LLM reranker of another family's template, say), or `infinity` to
keep Infinity's own reading.
"""

from __future__ import annotations

from pathlib import Path

from embedding_worker.engine.kinds.hybrid import KIND as HYBRID
from embedding_worker.engine.model_kind import PLAIN, Found, ModelKind, Traits
from embedding_worker.engine.kinds.llm_reranker import KIND as LLM_RERANKERS
from embedding_worker.engine.kinds.visual_documents import KIND as VISUAL_DOCUMENTS
from embedding_worker.errors import ModelLoadError

KINDS: tuple[ModelKind, ...] = (
    HYBRID,  # sparse and multi-vector: SPLADE, BGE-M3, PyLate ColBERT
    LLM_RERANKERS,  # causal LMs scored by "yes" against "no": Qwen3-Reranker, mxbai-rerank-v2
    VISUAL_DOCUMENTS,  # page images and PDFs: ColPali, ColQwen2
)
AUTO, INFINITY = "auto", "infinity"

__all__ = ["AUTO", "INFINITY", "KINDS", "PLAIN", "Found", "Traits", "find_kind", "kind_names"]


def kind_names() -> tuple[str, ...]:
    """Every value MODEL_KINDS takes."""
    return (AUTO, INFINITY, *(name for kind in KINDS for name in kind.names))


def find_kind(path: Path, name: str = AUTO) -> Found | None:
    """The kind of the model in `path`; None: Infinity's own."""
    if name == INFINITY:
        return None
    for kind in KINDS:
        if name != AUTO and name not in kind.names:
            continue
        if (found := kind.find(Path(path), None if name == AUTO else name)) is not None:
            return found
    if name != AUTO:
        raise ModelLoadError(f"model {str(path)!r} is not a {name} model (MODEL_KINDS)")
    return None
