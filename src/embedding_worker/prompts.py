"""Prompts: the instruction or prefix a model expects before a query or a document.

sentence-transformers keeps a model's prompts in `config_sentence_transformers.json`
(`prompts`, `default_prompt_name`); `MODEL_PROMPTS` adds or replaces them for models that
ship none (e5's `query: ` / `passage: `). A request picks at most one of:
- `input_type`: `query` (also `search_query`) uses the model's prompt named `query`;
  `document` (also `search_document`, `passage`) its prompt named `document`, else `passage`.
  A model with no such prompt embeds the text as it is;
- `prompt_name`: any prompt of the model, by name;
- `prompt`: a raw prefix.
With none of them, the model's `default_prompt_name` applies, as in sentence-transformers.
The prompt is prepended to each text, exactly as `SentenceTransformer.encode` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedding_worker.errors import InvalidRequest

INPUT_TYPES = {  # input_type -> the prompt names it means, in order of preference
    "query": ("query",),
    "search_query": ("query",),
    "document": ("document", "passage"),
    "search_document": ("document", "passage"),
    "passage": ("document", "passage"),
}


@dataclass(frozen=True)
class ModelPrompts:
    prompts: dict[str, str] = field(default_factory=dict)
    default_name: str | None = None

    @property
    def names(self) -> list[str]:
        return sorted(self.prompts)

    def prefix(self, model: str, input_type: str | None, prompt_name: str | None, prompt: str | None) -> str:
        """The text to put before each input of a request (empty for none)."""
        if prompt is not None:
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                known = ", ".join(self.names) or "none"
                raise InvalidRequest(f"prompt_name: {prompt_name!r} is not a prompt of model {model!r}; "
                                     f"its prompts: {known}")
            return self.prompts[prompt_name]
        if input_type is not None:
            return next((self.prompts[name] for name in INPUT_TYPES[input_type] if name in self.prompts), "")
        return self.prompts.get(self.default_name, "") if self.default_name else ""


def read_model_prompts(model_path: Path, override: dict[str, str] | None = None) -> ModelPrompts:
    """The model's own prompts, with `override` (MODEL_PROMPTS) on top."""
    try:
        config = json.loads((Path(model_path) / "config_sentence_transformers.json").read_text())
    except (OSError, ValueError):
        config = {}
    prompts = {str(k): str(v) for k, v in (config.get("prompts") or {}).items()}
    prompts.update(override or {})
    default = config.get("default_prompt_name")
    return ModelPrompts(prompts=prompts, default_name=default if default in prompts else None)


def parse_model_prompts(raw: str, models: list[str], served: list[str]) -> list[dict[str, str] | None]:
    """MODEL_PROMPTS, per model in MODEL_NAMES order; raise ValueError naming the problem.

    Either a JSON object keyed by a model's served name (or its MODEL_NAMES entry), whose
    values are objects of prompt name -> prefix, or a JSON list of such objects (or null) in
    MODEL_NAMES order.
    """
    if not raw.strip():
        return [None] * len(models)
    try:
        value: Any = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON: {exc}") from None
    if isinstance(value, list):
        if len(value) != len(models):
            raise ValueError(f"has {len(value)} entries for {len(models)} models; give one per model "
                             "(null for none), in MODEL_NAMES order")
        per_model = value
    elif isinstance(value, dict):
        unknown = [key for key in value if key not in models and key not in served]
        if unknown:
            raise ValueError(f"names no deployed model: {', '.join(map(repr, unknown))}; "
                             f"deployed: {', '.join(served)}")
        per_model = [value.get(name, value.get(source)) for source, name in zip(models, served)]
    else:
        raise ValueError("must be a JSON object keyed by model, or a list in MODEL_NAMES order")
    for entry in per_model:
        if entry is not None and not (isinstance(entry, dict) and
                                      all(isinstance(k, str) and isinstance(v, str) for k, v in entry.items())):
            raise ValueError(f"{json.dumps(entry)[:80]} is not an object of prompt name -> prefix string")
    return per_model
