"""What the sparse and multi-vector encoders take and give, without torch (the service
imports it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class Query(str):
    """A text to encode as a query (ColBERT's query prefix and expansion): the string passes
    through Infinity's queue as it is, so the encoder can tell it from a document."""


@dataclass
class HybridVectors:
    """One text's outputs, every type its model gives, from one forward pass."""

    dense: np.ndarray | None = None  # [dimension]
    sparse: tuple[np.ndarray, np.ndarray] | None = None  # (token ids ascending, weights > 0)
    multi_vector: np.ndarray | None = None  # [tokens, dimension]
