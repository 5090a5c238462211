"""LLM rerankers: causal language models that score a (query, document) pair by how much
more they would answer "yes" than "no" after a fixed prompt (Qwen3-Reranker,
mxbai-rerank-v2 and their like).

A folder is one when its config names a causal LM (`...ForCausalLM`), it has no
sentence-transformers modules, and its `model_type` has a family in
`families.BY_MODEL_TYPE`; MODEL_KINDS can name the family of any causal LM. Each family's
prompt, answer tokens and default instruction are data (`families.py`). It is served as a
reranker only (`/v1/models`: `rerank`), through Infinity's queue and batching like any
cross-encoder (`engine/infinity_internals.engine_with`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from embedding_worker.engine.kinds.llm_reranker.families import BY_MODEL_TYPE, FAMILIES, Family
from embedding_worker.engine.model_kind import Found, Traits

__all__ = ["FAMILIES", "KIND", "Family", "detect"]


def _causal_lm_config(path: Path) -> dict | None:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or []):
        return None
    return config


def detect(path: Path) -> Family | None:
    """The reranker family of the model in `path`, or None for any other model."""
    path = Path(path)
    if (path / "modules.json").is_file() or (config := _causal_lm_config(path)) is None:
        return None
    return BY_MODEL_TYPE.get(str(config.get("model_type")))


class LlmRerankerKind:
    names = tuple(FAMILIES)

    def find(self, path: Path, name: str | None) -> Found | None:
        if name is None:
            family = detect(path)
        else:
            family = FAMILIES[name] if _causal_lm_config(Path(path)) is not None else None
        if family is None:
            return None
        return Found(f"is an LLM reranker ({family.title})", Traits(takes_instructions=True),
                     lambda args: _engine(Path(path), family, args))


def _engine(path: Path, family: Family, engine_args: Any) -> Any:
    from embedding_worker.engine.infinity_internals import engine_with
    from embedding_worker.engine.kinds.llm_reranker.scorer import LlmReranker

    return engine_with(LlmReranker(path, family, engine_args), engine_args)


KIND = LlmRerankerKind()
