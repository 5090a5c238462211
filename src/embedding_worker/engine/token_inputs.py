"""Inputs given as token ids: the windows of a long document, embedded without ever being
decoded to text and tokenized again (decoding is lossy: a window that starts inside a word
would tokenize differently, past the model's limit, and lose its tail).

A `TokenIds` item passes through Infinity's queue in place of a text (a string that names
it), and the model's own pre-processing, wrapped by `take_token_ids`, lays its ids into the
batch beside the texts, which it tokenizes as before: each row is the model's input ids
unpadded, then the batch is padded again by the model's tokenizer. Infinity's length (its
usage count and batch order) of such an item is its number of ids.
"""

from __future__ import annotations

from typing import Any


class TokenIds(str):
    """A model input as token ids, special tokens included."""

    ids: list[int]

    def __new__(cls, ids: list[int]) -> TokenIds:
        made = super().__new__(cls, f"<{len(ids)} token ids>")
        made.ids = list(ids)
        return made


def sentence_transformer_tokenizer(replica: Any) -> Any | None:
    """The tokenizer of a sentence-transformers embedder (its first module's), or None for
    any other model."""
    first = replica[0] if hasattr(replica, "_first_module") else None
    if first is None or not hasattr(first, "tokenizer") or not hasattr(first, "auto_model"):
        return None
    return first.tokenizer


def take_token_ids(replica: Any) -> bool:
    """Let the replica's pre-processing take `TokenIds` items; False where it cannot (a model
    other than a sentence-transformers embedder)."""
    tokenizer = sentence_transformer_tokenizer(replica)
    if tokenizer is None or tokenizer.pad_token_id is None:
        return False
    pre, lengths = replica.encode_pre, replica.tokenize_lengths

    def encode_pre(items: list) -> Any:
        if not any(isinstance(item, TokenIds) for item in items):
            return pre(items)
        rows: list[list[int] | None] = [item.ids if isinstance(item, TokenIds) else None for item in items]
        texts = [i for i, row in enumerate(rows) if row is None]
        if texts:
            features = pre([items[i] for i in texts])
            for i, ids, mask in zip(texts, features["input_ids"].tolist(), features["attention_mask"].tolist()):
                rows[i] = [token for token, real in zip(ids, mask) if real]
        batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
        if "token_type_ids" in tokenizer.model_input_names:
            batch["token_type_ids"] = batch["input_ids"].new_zeros(batch["input_ids"].shape)
        return dict(batch)

    def tokenize_lengths(sentences: list[str]) -> list[int]:
        given = [not isinstance(s, TokenIds) for s in sentences]
        counted = iter(lengths([s for s, text in zip(sentences, given) if text]) if any(given) else [])
        return [next(counted) if text else len(s.ids) for s, text in zip(sentences, given)]

    replica.encode_pre, replica.tokenize_lengths = encode_pre, tokenize_lengths
    return True
