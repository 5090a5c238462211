"""An LLM reranker in Infinity's cross-encoder interface: `encode_pre` lays each pair out as
its family says (left-padded, as the families' code pads), `encode_core` runs the transformer and
only the two rows of the language-model head that the score needs (never the whole
vocabulary's logits), `encode_post` returns logit(yes) - logit(no), which Infinity's sigmoid
turns into the card's probability (`raw_scores` keeps the log-odds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from infinity_emb.transformer.abstract import BaseCrossEncoder

from embedding_worker.engine.llm_reranker.families import Family

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
        self.fixed = {piece: [self.tokenizer.encode(piece, add_special_tokens=family.special_tokens)]
                      for piece in family.pieces if "{" not in piece}  # tokenized once
        answers = [self.tokenizer.convert_tokens_to_ids(token) for token in (family.no, family.yes)]
        if any(i is None or i == self.tokenizer.unk_token_id for i in answers):
            raise ValueError(f"its tokenizer has no {family.no!r} or {family.yes!r} token for {family.title}'s scores")
        head = self.model.get_output_embeddings()
        self.answer_rows = head.weight[answers].detach()  # [2, hidden]: no, yes
        self.answer_bias = None if getattr(head, "bias", None) is None else head.bias[answers].detach()
        self.max_length = family.max_length  # as the family's code cuts pairs
        self.default_instruction = family.instruction

    def pair_ids(self, pairs: list[tuple[str, str]]) -> list[list[int]]:
        """Each pair's tokens as its family lays them out (`families.py`), cut to `max_length`."""
        family = self.family
        fills = [{"instruction": self.instruction_text(query), "query": str(query), "document": document}
                 for query, document in pairs]
        pieces = [self.fixed[piece] * len(pairs) if piece in self.fixed else
                  self.tokenizer([piece.format(**fill) for fill in fills], add_special_tokens=family.special_tokens,
                                 return_attention_mask=False)["input_ids"] for piece in family.pieces]
        cut = family.document_piece
        laid_out = []
        for i in range(len(pairs)):
            parts = [piece[i] for piece in pieces]
            over = len(self.prefix) + sum(map(len, parts)) + len(self.suffix) - self.max_length
            if over > 0:
                parts[cut] = parts[cut][:max(0, len(parts[cut]) - over)]
            laid_out.append([*self.prefix, *(token for part in parts for token in part), *self.suffix])
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
        encoded = self.tokenizer(list(sentences), add_special_tokens=False, return_attention_mask=False)
        return [len(ids) for ids in encoded["input_ids"]]
