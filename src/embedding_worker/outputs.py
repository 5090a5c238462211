"""Vectors on the wire: each embedding type in each `encoding_format`, and how much one
response may hold.

- dense: floats; `base64`, OpenAI's little-endian float32 bytes; or an integer format of
  `compact` (int8, uint8, binary, ubinary). `dimensions` keeps a prefix of each vector and
  scales it back to unit length (`shorten`).
- sparse: `{"indices", "values"}`, the non-zero weights by token id ascending; the `top_k`
  largest only, where asked.
- multi-vector: one row per token, as floats or integers; with `base64`, the whole matrix as
  one object, `{"shape": [rows, dimensions], "base64": ...}` (row-major little-endian
  float32), a fifth of the size of the floats as JSON; with `base64_float16`, the same
  matrix as float16 (`"dtype": "float16"`), half of that again (a ColPali page of 1,031 x
  128: 2.7 MB as JSON floats, 704 KB as base64, 352 KB as base64_float16).
- MAX_OUTPUT_VALUES bounds the numbers one response holds (a sparse weight counts two: its
  index and its value), checked by `require_output_budget` before the forward pass on what
  the request will produce (texts x dimensions; tokens x dimensions for token vectors) and
  again on what it did produce, before anything is encoded.
"""

from __future__ import annotations

import base64

import numpy as np

from embedding_worker import compact
from embedding_worker.api.schemas import Base64Matrix, SparseEmbedding
from embedding_worker.errors import InvalidRequest


def require_output_budget(values: int, limit: int, what: str) -> None:
    if values > limit:
        raise InvalidRequest(f"input: this request's {what} hold {values:,} numbers; the limit is {limit:,} "
                             "(MAX_OUTPUT_VALUES); send fewer or shorter inputs"
                             + (", or fewer dimensions" if "token" not in what else ", or split the request"))


def shorten(matrix: np.ndarray, dimensions: int) -> np.ndarray:
    """Keep the first `dimensions` of each vector and scale it back to unit length."""
    prefix = matrix[:, :dimensions]
    norms = np.linalg.norm(prefix, axis=1, keepdims=True)
    return prefix / np.where(norms == 0, 1, norms)


def to_base64(vector: np.ndarray) -> str:
    """OpenAI's `encoding_format="base64"`: the little-endian float32 bytes."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def dense(matrix: np.ndarray, encoding_format: str, scale: float | None = None) -> list:
    """One vector per row of `matrix` in `encoding_format` (`scale`: the int8 formats')."""
    if encoding_format in compact.INTEGER_FORMATS:
        return compact.quantize(matrix, encoding_format, scale).tolist()
    if encoding_format == "base64":
        return [to_base64(vector) for vector in matrix]
    return matrix.tolist()


def multi_vector(matrix: np.ndarray, encoding_format: str, scale: float | None = None) -> list | Base64Matrix:
    """One text's token vectors in `encoding_format`."""
    if encoding_format == "base64":
        return Base64Matrix.model_construct(shape=list(matrix.shape), base64=to_base64(matrix))
    if encoding_format == "base64_float16":
        half = base64.b64encode(matrix.astype("<f2").tobytes()).decode("ascii")
        return Base64Matrix.model_construct(shape=list(matrix.shape), base64=half, dtype="float16")
    return dense(matrix, encoding_format, scale)


def sparse(indices: np.ndarray, values: np.ndarray, top_k: int | None) -> SparseEmbedding:
    """Non-zero weights by token id ascending; the `top_k` largest only, where asked."""
    if top_k is not None and len(values) > top_k:
        keep = np.sort(np.argsort(-values, kind="stable")[:top_k])
        indices, values = indices[keep], values[keep]
    return SparseEmbedding.model_construct(indices=indices.tolist(), values=values.tolist())
