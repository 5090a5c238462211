"""LLM rerankers: causal language models that score a (query, document) pair by how much
more they would answer "yes" than "no" after a fixed prompt (Qwen3-Reranker and its like).

A folder is one when its config names a causal LM (`...ForCausalLM`), it has no
sentence-transformers modules, and its `model_type` has a family in `families.FAMILIES`,
where each family's template, answer tokens and default instruction are data. It is served
as a reranker only (`/v1/models`: `rerank`), through Infinity's queue and batching like any
cross-encoder (`engine/custom_engine.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from embedding_worker.engine.llm_reranker.families import FAMILIES, Family

__all__ = ["FAMILIES", "Family", "detect", "llm_reranker_engine"]


def detect(path: Path) -> Family | None:
    """The reranker family of the model in `path`, or None for any other model."""
    path = Path(path)
    if (path / "modules.json").is_file():
        return None
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or []):
        return None
    return FAMILIES.get(str(config.get("model_type")))


def llm_reranker_engine(path: Path, family: Family, engine_args: Any) -> Any:
    from embedding_worker.engine.custom_engine import engine_with
    from embedding_worker.engine.llm_reranker.scorer import LlmReranker

    return engine_with(LlmReranker(path, family, engine_args), engine_args)
