"""Which sparse or multi-vector layout a model folder has, read as its library saved it.

- `SparseLayout`: a sentence-transformers `SparseEncoder` (SPLADE): `modules.json` holds a
  masked-language-model transformer (`MLMTransformer`, or from sentence-transformers 5.4 a
  `Transformer` with `transformer_task: "fill-mask"`) and then `SpladePooling`.
- `M3Layout`: BGE-M3: an XLM-RoBERTa encoder with `colbert_linear.pt` and `sparse_linear.pt`
  beside it (FlagEmbedding's layout); dense, sparse and multi-vector from one forward pass.
- `ColbertLayout`: a PyLate ColBERT: `Transformer` then PyLate's `Dense` in `modules.json`,
  with its query and document settings in `config_sentence_transformers.json`.

Anything else is an ordinary (dense) model and `detect` returns None. A folder that names a
module this worker cannot run (a sparse `Router`, say) fails with one line at load.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedding_worker.engine.model_kind import DENSE, EMBEDDING_TYPES, MULTI_VECTOR, SPARSE
from embedding_worker.errors import ModelLoadError

__all__ = ["DENSE", "EMBEDDING_TYPES", "MULTI_VECTOR", "SPARSE", "Layout", "detect"]


@dataclass(frozen=True)
class SparseLayout:
    encoder: Path  # the masked-language-model folder
    max_seq_length: int | None
    do_lower_case: bool
    pooling: str  # "max" or "sum" over the text's tokens
    activation: str  # "relu" (log1p(relu(x))) or "log1p_relu" (log1p(log1p(relu(x))))
    max_active_dims: int | None  # the model's own cap on non-zero weights

    types = (SPARSE,)


@dataclass(frozen=True)
class M3Layout:
    encoder: Path

    types = (DENSE, SPARSE, MULTI_VECTOR)


@dataclass(frozen=True)
class ColbertLayout:
    encoder: Path  # the Transformer module's folder
    dense: Path  # PyLate's Dense module folder
    max_seq_length: int | None
    do_lower_case: bool
    query_prefix: str
    document_prefix: str
    query_length: int
    document_length: int
    do_query_expansion: bool
    attend_to_expansion_tokens: bool
    skiplist_words: tuple[str, ...]

    types = (MULTI_VECTOR,)


Layout = SparseLayout | M3Layout | ColbertLayout


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _class_name(module: dict[str, Any]) -> str:
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def detect(path: Path) -> Layout | None:
    """The folder's sparse or multi-vector layout, or None for an ordinary model."""
    path = Path(path)
    if (path / "colbert_linear.pt").is_file() and (path / "sparse_linear.pt").is_file():
        return M3Layout(encoder=path)
    try:
        modules = json.loads((path / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        return None
    names = [_class_name(m) for m in modules]
    folders = [path / str(m.get("path", "")) for m in modules]
    if "SpladePooling" in names:
        return _sparse(path, names, folders)
    maxsim = _json(path / "config_sentence_transformers.json").get("similarity_fn_name") == "MaxSim"
    if "Dense" in names and (maxsim or any(str(m.get("type", "")).startswith("pylate.") for m in modules)):
        return _colbert(path, names, folders)
    return None


def _sparse(path: Path, names: list[str], folders: list[Path]) -> SparseLayout:
    encoder_config = _json(folders[0] / "sentence_bert_config.json")
    fill_mask = names[0] == "MLMTransformer" or (
        names[0] == "Transformer" and encoder_config.get("transformer_task") == "fill-mask")
    if names != [names[0], "SpladePooling"] or not fill_mask:
        raise ModelLoadError(f"model {str(path)!r}: a sparse encoder of modules {' -> '.join(names)} is not "
                             "served; served: a masked-language-model Transformer then SpladePooling (SPLADE)")
    pooling = _json(folders[1] / "config.json")
    model = _json(path / "config_sentence_transformers.json")
    cap = model.get("max_active_dims") or (model.get("model_kwargs") or {}).get("max_active_dims")
    return SparseLayout(
        encoder=folders[0],
        max_seq_length=encoder_config.get("max_seq_length"),
        do_lower_case=bool(encoder_config.get("do_lower_case", False)),
        pooling=pooling.get("pooling_strategy", "max"),
        activation=pooling.get("activation_function", "relu"),
        max_active_dims=cap if isinstance(cap, int) and cap > 0 else None,
    )


def _colbert(path: Path, names: list[str], folders: list[Path]) -> ColbertLayout:
    if names[:2] != ["Transformer", "Dense"] or len(names) > 2:
        raise ModelLoadError(f"model {str(path)!r}: a ColBERT of modules {' -> '.join(names)} is not served; "
                             "served: PyLate's Transformer then Dense")
    encoder_config = _json(folders[0] / "sentence_bert_config.json")
    config = _json(path / "config_sentence_transformers.json")

    def setting(name: str, default: Any) -> Any:
        value = config.get(name)
        return default if value is None else value

    expansion = bool(setting("do_query_expansion", True))
    return ColbertLayout(
        encoder=folders[0],
        dense=folders[1],
        max_seq_length=encoder_config.get("max_seq_length"),
        do_lower_case=bool(encoder_config.get("do_lower_case", False)),
        query_prefix=str(setting("query_prefix", "[Q] ")),
        document_prefix=str(setting("document_prefix", "[D] ")),
        query_length=int(setting("query_length", 32)),
        document_length=int(setting("document_length", 180)),
        do_query_expansion=expansion,
        attend_to_expansion_tokens=expansion and bool(setting("attend_to_expansion_tokens", False)),
        skiplist_words=tuple(setting("skiplist_words", list(string.punctuation))),
    )
