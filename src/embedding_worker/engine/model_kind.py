"""What a model kind declares (torch-free: the service and the settings read it).

A kind recognises its models from their files (or by a name given in MODEL_KINDS), builds
the Infinity engine that runs them, and declares in `Traits` what they give, so that the
service shapes every answer from the traits and never asks which family a model is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DENSE, SPARSE, MULTI_VECTOR = "dense", "sparse", "multi_vector"
EMBEDDING_TYPES = (DENSE, SPARSE, MULTI_VECTOR)


@dataclass(frozen=True)
class Traits:
    """What a deployed model gives beyond its engine's own capabilities."""

    embedding_types: tuple[str, ...] = (DENSE,)  # what `embedding_types` may ask; the first is the default
    sparse_top_k: int | None = None  # the model's own cap on non-zero sparse weights (max_active_dims)
    takes_instructions: bool = False  # a rerank request's `instruction` reaches the model
    # Reranks from its own token vectors: (query's, each document's) -> one score per document
    # (a ColBERT's MaxSim); None: the engine's rerank
    scores_token_vectors: Callable[[np.ndarray, list[np.ndarray]], np.ndarray] | None = None
    # Reads pictures of pages (a ColPali): images and PDFs are documents, texts are queries
    reads_pages: bool = False

    @property
    def extra_capabilities(self) -> frozenset[str]:
        return frozenset({"rerank"}) if self.scores_token_vectors is not None else frozenset()


PLAIN = Traits()  # what Infinity's own models give


@dataclass(frozen=True)
class Found:
    """A kind's model found in a folder."""

    description: str  # "gives sparse embeddings", "is an LLM reranker (Qwen3-Reranker)"
    traits: Traits
    build: Callable[[Any], Any]  # EngineArgs -> an Infinity engine
    torch_only: bool = True  # only BACKEND=torch runs it


class ModelKind(Protocol):
    names: tuple[str, ...]  # what MODEL_KINDS may call it (besides auto)

    def find(self, path: Path, name: str | None) -> Found | None:
        """The kind's model in `path`, or None; `name`: one of `names` asked by MODEL_KINDS
        (then the files decide only what they must), None for recognition from the files."""


class RerankQuery(str):
    """A query with the instruction to score it under (None: the model's default): the string
    passes through Infinity's queue as it is, so an instruction-taking reranker can read it."""

    instruction: str | None

    def __new__(cls, query: str, instruction: str | None = None) -> RerankQuery:
        made = super().__new__(cls, query)
        made.instruction = instruction
        return made
