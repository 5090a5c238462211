"""An LLM reranker in Infinity's cross-encoder interface: `encode_pre` lays each pair out as
its family says (left-padded, as the families' code pads), `encode_core` runs the transformer and
only the two rows of the language-model head that the score needs (never the whole
vocabulary's logits), `encode_post` returns logit(yes) - logit(no), which Infinity's sigmoid
turns into the card's probability (`raw_scores` keeps the log-odds)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from infinity_emb.transformer.abstract import BaseCrossEncoder

from embedding_worker.engine.kinds.llm_reranker.families import Family

QUERY_SHARE = 0.5  # of a pair's room past its template: the most its query's piece may take when cut
REMEMBERED_QUERIES = 16  # query pieces kept tokenized (the requests whose documents are in the pipeline)
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LlmReranker(BaseCrossEncoder):
    capabilities = {"rerank"}

    def __init__(self, path: Path, family: Family, engine_args: Any) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.family = family
        self.device = torch.device(engine_args.device.resolve() if hasattr(engine_args.device, "resolve") else "cpu")
        requested = getattr(engine_args.dtype, "value", str(engine_args.dtype))
        self.dtype = TORCH_DTYPES.get(requested, torch.float16 if self.device.type == "cuda" else torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(path).to(self.device, self.dtype).eval()
        self.prefix = self.tokenizer.encode(family.prefix, add_special_tokens=False)
        self.suffix = self.tokenizer.encode(family.suffix, add_special_tokens=False)
        self.fixed = {piece: [self.tokenizer.encode(piece, add_special_tokens=False)]
                      for piece in family.pieces if "{" not in piece}  # tokenized once
        # the tokenizer's own special tokens around the pieces, where the family's code adds them
        self.around = _special_tokens(self.tokenizer) if family.special_tokens else ([], [])
        answers = [self.tokenizer.convert_tokens_to_ids(token) for token in (family.no, family.yes)]
        if any(i is None or i == self.tokenizer.unk_token_id for i in answers):
            raise ValueError(f"its tokenizer has no {family.no!r} or {family.yes!r} token for {family.title}'s scores")
        head = self.model.get_output_embeddings()
        self.answer_rows = head.weight[answers].detach()  # [2, hidden]: no, yes
        self.answer_bias = None if getattr(head, "bias", None) is None else head.bias[answers].detach()
        positions = getattr(self.model.config, "max_position_embeddings", None)
        # as the family's code cuts pairs, and never past the model's positions
        self.max_length = min(family.max_length, positions) if isinstance(positions, int) else family.max_length
        self.default_instruction = family.instruction
        query_piece = family.pieces[family.query_piece]
        self.after_query = self._ids([query_piece[query_piece.index("{query}") + len("{query}"):].format(
            instruction="", document="")], text=False)[0]
        empty = self._ids([piece.format(instruction="", query="", document="") for piece in family.pieces], text=False)
        template = len(self.prefix) + len(self.suffix) + sum(map(len, empty)) + sum(map(len, self.around))
        self.query_room = max(len(self.after_query) + 1, int(QUERY_SHARE * (self.max_length - template)))
        self.pair_template = (template, self.query_room)  # read by the request's price
        self._known: OrderedDict[str, list[int]] = OrderedDict()  # a request's query piece, tokenized once
        self._known_lock = threading.Lock()

    def _ids(self, texts: list[str], text: bool = True) -> list[list[int]]:
        """Token ids of `texts`; `text`: the request's own words, whose special-token
        spellings stay text."""
        return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                              split_special_tokens=text)["input_ids"]

    def _piece_ids(self, texts: list[str], remember: bool) -> list[list[int]]:
        """`_ids`, each distinct text once; `remember`: keep the last few (a request's query
        piece, the same in every batch of its documents)."""
        with self._known_lock:
            found = {text: self._known[text] for text in texts if text in self._known}
        new = list(dict.fromkeys(text for text in texts if text not in found))
        if new:
            found.update(zip(new, self._ids(new)))
            if remember:
                with self._known_lock:
                    for text in new:
                        self._known[text] = found[text]
                    while len(self._known) > REMEMBERED_QUERIES:
                        self._known.popitem(last=False)
        return [found[text] for text in texts]

    def pair_ids(self, pairs: list[tuple[str, str]]) -> list[list[int]]:
        """Each pair's tokens as its family lays them out (`families.py`), cut to `max_length`:
        the query's piece to its share first, then the document's piece from its end."""
        family = self.family
        fills = [{"instruction": self.instruction_text(query), "query": str(query), "document": document}
                 for query, document in pairs]
        pieces = [self.fixed[piece] * len(pairs) if piece in self.fixed else
                  self._piece_ids([piece.format(**fill) for fill in fills], remember=i == family.query_piece)
                  for i, piece in enumerate(family.pieces)]
        query, document = family.query_piece, family.document_piece
        tail = len(self.after_query)
        before, after = self.around
        laid_out = []
        for i in range(len(pairs)):
            parts = [piece[i] for piece in pieces]
            over = len(self.prefix) + len(before) + sum(map(len, parts)) + len(after) + len(self.suffix) \
                - self.max_length
            if over > 0 and len(parts[query]) > self.query_room:
                keep = max(self.query_room, len(parts[query]) - over)
                over -= len(parts[query]) - keep
                parts[query] = parts[query][:keep - tail] + parts[query][len(parts[query]) - tail:]
            if over > 0:
                parts[document] = parts[document][:max(0, len(parts[document]) - over)]
            laid_out.append([*self.prefix, *before, *(token for part in parts for token in part), *after,
                             *self.suffix])
        return laid_out

    def instruction_text(self, query: str) -> str:
        instruction = getattr(query, "instruction", None) or self.default_instruction
        return self.family.instruction_format.format(instruction=instruction) if instruction else ""

    def encode_pre(self, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        encoded = {"input_ids": self.pair_ids(pairs)}
        return self.tokenizer.pad(encoded, padding=True, return_tensors="pt")

    @torch.inference_mode()
    def encode_core(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        features = {key: value.to(self.device) for key, value in features.items()}
        hidden = self.model.model(**features).last_hidden_state[:, -1]  # left-padded: the last position is real
        logits = hidden @ self.answer_rows.T
        if self.answer_bias is not None:
            logits = logits + self.answer_bias
        return (logits[:, 1] - logits[:, 0]).float().cpu()

    def encode_post(self, log_odds: torch.Tensor) -> np.ndarray:
        return log_odds.numpy()

    def tokenize_lengths(self, sentences: list[str]) -> list[int]:
        """Each pair's tokens, for Infinity's usage count and batch order. Infinity hands one
        request's pairs as query + document strings: their common start (the query) is
        tokenized once, each remainder on its own."""
        sentences = list(sentences)
        shared = os.path.commonprefix(sentences) if len(sentences) > 1 else ""
        head = len(self._ids([shared])[0]) if shared else 0
        rest = self._ids([sentence[len(shared):] for sentence in sentences])
        return [head + len(ids) for ids in rest]


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """What the tokenizer puts before and after a text of its own (Qwen3's: nothing)."""
    bare = tokenizer.encode("a", add_special_tokens=False)
    marked = tokenizer.encode("a", add_special_tokens=True)
    start = next(i for i in range(len(marked) - len(bare) + 1) if marked[i:i + len(bare)] == bare)
    return marked[:start], marked[start + len(bare):]
