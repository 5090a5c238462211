"""A deployed model: its engine, what it can do, how it is served, and its health."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from embedding_worker.engine.health import EngineHealth
from embedding_worker.engine.model_kind import PLAIN, Traits
from embedding_worker.errors import UnsupportedTask
from embedding_worker.prompts import ModelPrompts
from embedding_worker.settings import ModelSpec

if TYPE_CHECKING:
    from infinity_emb import AsyncEmbeddingEngine


@dataclass
class DeployedModel:
    spec: ModelSpec
    engine: AsyncEmbeddingEngine
    created: int  # Unix time the model was loaded
    device: str = "cpu"  # where it runs: cuda or cpu
    dtype: str = "float32"  # the precision it runs at (DTYPES=auto resolved)
    embedding_dimension: int | None = None  # None until known (embedders only)
    max_input_tokens: int | None = None  # longer inputs are truncated to this
    prompts: ModelPrompts = field(default_factory=ModelPrompts)
    architecture: str = "unknown"
    tokenizer: Any = None  # a copy of the model's tokenizer, for counting and `tokenize`
    int8_scales: dict[tuple[str, int], float] = field(default_factory=dict)  # per type and dimensions
    activation_bytes_per_token: int | None = None  # one layer's live activations a token (None: unknown shape)
    traits: Traits = PLAIN  # what its kind declares it gives (`engine/kinds/__init__.py`)
    image_side: int | None = None  # pixels: the side of an image-text model's input picture
    page_pixels: int | None = None  # a page reader's: the pixels a PDF page is rendered at
    page_tokens: int | None = None  # a page reader's: the most token vectors one page gives
    sampling_rate: int | None = None  # Hz: what an audio-text model takes
    # LLM rerankers: (the template's tokens around a pair, the most tokens of it the query takes)
    pair_template: tuple[int, int] | None = None
    takes_token_ids: bool = False  # embeds `token_inputs.TokenIds` (a long text's windows)
    health: EngineHealth = field(init=False)
    _tokenizer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.health = EngineHealth(self.spec.name)
        if self.page_tokens:
            self.health.media_units = self.page_tokens  # a page weighs its tokens in the backlog

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, special tokens included, untruncated (blocking: call in a thread)."""
        if self.tokenizer is None:
            raise UnsupportedTask(f"model: {self.name!r} has no tokenizer to count with")
        with self._tokenizer_lock:  # a fast tokenizer is not safe for concurrent calls
            return self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False,
                                  return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def token_counts(self, texts: list[str]) -> list[int]:
        """Each text's token count, special tokens included (blocking: call in a thread)."""
        return [len(ids) for ids in self.token_ids(texts)]

    @cached_property
    def special_tokens(self) -> tuple[int, int]:
        """Tokens the tokenizer adds before and after every text ([CLS] and [SEP], say)."""
        empty, marked = self.token_ids(["", "a"])
        before = next((i for i, (x, y) in enumerate(zip(empty, marked)) if x != y), len(empty))
        return before, len(empty) - before

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def embedding_types(self) -> tuple[str, ...]:
        return self.traits.embedding_types

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(self.engine.capabilities) | self.traits.extra_capabilities

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            can_do = ", ".join(sorted(self.capabilities)) or "nothing"
            raise UnsupportedTask(
                f"model: {self.name!r} cannot {capability}; it supports: {can_do}"
            )
