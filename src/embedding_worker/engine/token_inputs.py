"""Inputs given as token ids, so that a text is tokenized once.

- A `TokenIds` item passes through Infinity's queue in place of a text (a string that names
  it), and the model's own pre-processing, wrapped by `take_token_ids`, lays its ids into the
  batch beside any texts, which it tokenizes as before: each row is the model's input ids
  unpadded, then the batch is padded again by the model's tokenizer.
- The windows of a long document are `TokenIds` (never decoded to text and tokenized again:
  decoding is lossy, and a window that starts inside a word would tokenize past the model's
  limit and lose its tail).
- `tokenize_on_arrival`: Infinity tokenizes every request twice, once to count its usage (in
  a thread) and once to pre-process its batch. For a sentence-transformers embedder the
  request's texts are tokenized once instead, as they arrive, exactly as the model's own
  tokenize does (stripped, lower-cased where it lower-cases, cut to its length), on the event
  loop when they are short (a thread hop costs more) and in a thread when they are not; they
  enter the queue as `TokenIds`, their usage is their tokens less the special tokens, and the
  pre-processing thread only pads them.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

from embedding_worker.engine.infinity_internals import batch_handler, replace_usage_count

INLINE_CHARACTERS = 4096  # a request of up to this many characters is tokenized on the event loop


class TokenIds(str):
    """A model input as token ids, special tokens included."""

    ids: list[int]

    def __new__(cls, ids: list[int]) -> TokenIds:
        made = super().__new__(cls, f"<{len(ids)} token ids>")
        made.ids = list(ids)
        return made


def _transformer_module(replica: Any) -> Any | None:
    """A sentence-transformers embedder's first module (its transformer and tokenizer), or None
    for any other model."""
    first = replica[0] if hasattr(replica, "_first_module") else None
    if first is None or not hasattr(first, "tokenizer") or not hasattr(first, "auto_model"):
        return None
    return first


def _special_tokens(tokenizer: Any) -> int:
    """How many tokens the tokenizer adds to a text ([CLS] and [SEP], say): usage leaves them out."""
    return len(tokenizer("", add_special_tokens=True)["input_ids"])


def take_token_ids(replica: Any) -> bool:
    """Let the replica's pre-processing take `TokenIds` items; False where it cannot (a model
    other than a sentence-transformers embedder)."""
    module = _transformer_module(replica)
    tokenizer = None if module is None else module.tokenizer
    if tokenizer is None or tokenizer.pad_token_id is None:
        return False
    pre, lengths = replica.encode_pre, replica.tokenize_lengths
    specials = _special_tokens(tokenizer)

    def encode_pre(items: list) -> Any:
        if not any(isinstance(item, TokenIds) for item in items):
            return pre(items)
        rows: list[list[int] | None] = [item.ids if isinstance(item, TokenIds) else None for item in items]
        texts = [i for i, row in enumerate(rows) if row is None]
        if texts:
            features = pre([items[i] for i in texts])
            for i, ids, mask in zip(texts, features["input_ids"].tolist(), features["attention_mask"].tolist()):
                rows[i] = [token for token, real in zip(ids, mask) if real]
        return _padded(rows, tokenizer)

    def tokenize_lengths(sentences: list[str]) -> list[int]:
        given = [not isinstance(s, TokenIds) for s in sentences]
        counted = iter(lengths([s for s, text in zip(sentences, given) if text]) if any(given) else [])
        return [next(counted) if text else len(s.ids) - specials for s, text in zip(sentences, given)]

    replica.encode_pre, replica.tokenize_lengths = encode_pre, tokenize_lengths
    return True


def _padded(rows: list[list[int]], tokenizer: Any) -> dict[str, Any]:
    """The rows as the tokenizer pads a batch: on its padding side, with the attention mask and,
    where the model takes them, token types (all 0: one text a row)."""
    import torch

    longest = max(map(len, rows))
    fill = [[tokenizer.pad_token_id] * (longest - len(row)) for row in rows]
    left = tokenizer.padding_side == "left"
    ids = [pad + row if left else row + pad for row, pad in zip(rows, fill)]
    mask = [[0] * len(pad) + [1] * len(row) if left else [1] * len(row) + [0] * len(pad)
            for row, pad in zip(rows, fill)]
    batch = {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long)}
    if "token_type_ids" in tokenizer.model_input_names:
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    return batch


def tokenize_on_arrival(engine: Any, replica: Any) -> bool:
    """Tokenize a sentence-transformers embedder's texts once, as they arrive (see the module);
    False for any other model. Call once its engine has started."""
    module = _transformer_module(replica)
    if module is None or batch_handler(engine) is None or not hasattr(module, "max_seq_length") \
            or not getattr(module.tokenizer, "is_fast", False):
        return False
    # its own copy of the Rust tokenizer, cut where the model cuts, called directly: the Python
    # wrapper around it costs more than the tokenizing of a few sentences
    backend = copy.deepcopy(module.tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.enable_truncation(module.max_seq_length, strategy="longest_first",
                              direction=getattr(module.tokenizer, "truncation_side", "right"))
    lock = threading.Lock()  # a tokenizer is not safe for concurrent calls
    specials = _special_tokens(module.tokenizer)
    lower = bool(getattr(module, "do_lower_case", False))
    counted: Any = None  # the engine's own count, for what is not text

    def token_ids(texts: list[str]) -> list[list[int]]:  # hold `lock`
        texts = [text.strip().lower() if lower else text.strip() for text in texts]
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=True)]

    def locked_token_ids(texts: list[str]) -> list[list[int]]:
        with lock:
            return token_ids(texts)

    async def prios_usage(items: list) -> tuple[list[int], int]:
        texts = [getattr(item, "sentence", None) for item in items]
        if not all(type(text) is str for text in texts):  # windows already in ids, or not texts at all
            return await counted(items)
        if sum(map(len, texts)) <= INLINE_CHARACTERS and lock.acquire(blocking=False):
            try:
                rows = token_ids(texts)
            finally:
                lock.release()
        else:
            rows = await asyncio.to_thread(locked_token_ids, texts)
        for item, ids in zip(items, rows):
            item.sentence = TokenIds(ids)
        lengths = [len(ids) - specials for ids in rows]
        return lengths, sum(lengths)

    counted = replace_usage_count(engine, prios_usage)
    return True
