"""What the sparse and multi-vector encoders take and give, without torch (the service
imports it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class HybridText(str):
    """A text with what to compute for it: the string passes through Infinity's queue as it
    is, so the encoder can tell a query (ColBERT's query prefix and expansion) from a document,
    and compute and keep only the embedding types a request asked for (a dense-only request to
    BGE-M3 keeps no token vectors). `types` None: every type the model gives."""

    query: bool
    types: frozenset[str] | None

    def __new__(cls, text: str, query: bool = False, types: frozenset[str] | None = None) -> HybridText:
        made = super().__new__(cls, text)
        made.query, made.types = query, types
        return made

    def wants(self, kind: str) -> bool:
        return self.types is None or kind in self.types


def wants(text: str, kind: str) -> bool:
    """Whether `kind` is asked of `text` (a plain string: every type)."""
    return not isinstance(text, HybridText) or text.wants(kind)


@dataclass
class HybridVectors:
    """One text's outputs, every type its model gives, from one forward pass."""

    dense: np.ndarray | None = None  # [dimension]
    sparse: tuple[np.ndarray, np.ndarray] | None = None  # (token ids ascending, weights > 0)
    multi_vector: np.ndarray | None = None  # [tokens, dimension]


def maxsim(query: np.ndarray, documents: list[np.ndarray]) -> np.ndarray:
    """ColBERT's late-interaction scores, as PyLate's `rank.rerank`: for each document the sum
    over query tokens of the best dot product with any of its tokens. As there, documents are
    padded with zero vectors to the longest one, so a shorter document's best is never below 0."""
    longest = max(len(d) for d in documents)
    return np.array([np.maximum((query @ d.T).max(axis=1), 0 if len(d) < longest else -np.inf).sum()
                     for d in documents], dtype=np.float32)
