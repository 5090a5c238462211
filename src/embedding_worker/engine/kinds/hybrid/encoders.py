"""Sparse and multi-vector encoders in Infinity's model interface, so that they run through
its queue, batching and pipeline threads like any other model (admission, deadlines, health
and the concurrency modifier apply unchanged).

Each is a `BaseEmbedder`: `encode_pre` tokenises a batch, `encode_core` runs the forward
pass, `encode_post` returns one `HybridVectors` per text, every type the model gives, from
that one pass. Each output equals its library's (tests/data/hybrid has the references and
the script that made them):
- `SparseEncoder` (SPLADE) = sentence-transformers' `SparseEncoder.encode`: the MLM logits,
  log(1 + relu), pooled by max (or sum) over the text's tokens. The vocabulary projection
  runs on real tokens only, one text at a time, never on padding, and never holds a whole
  batch's logits; with max pooling the activation, which rises with its input, runs once
  per token id on the largest logit instead of on every logit;
- `M3Encoder` = FlagEmbedding's `BGEM3FlagModel.encode`: the normalised [CLS] vector; per
  token relu(sparse_linear(h)), the largest weight per token id, special tokens left out;
  normalised colbert_linear(h) for every token but [CLS];
- `ColbertEncoder` = PyLate's `ColBERT.encode`: the prefix token after [CLS]; queries
  padded with [MASK] to `query_length` (every position kept), documents cut to
  `document_length` with skiplist tokens (punctuation) and padding dropped; normalised.
  A text is a query when it is a `HybridText` marked so (see there).

What a request did not ask for (`HybridText.types`) is neither computed for its batch nor
kept for its text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from infinity_emb.transformer.abstract import BaseEmbedder
from torch.nn import functional

from embedding_worker.engine.kinds.hybrid.layouts import DENSE, MULTI_VECTOR, SPARSE, ColbertLayout, M3Layout, SparseLayout
from embedding_worker.engine.kinds.hybrid.vectors import HybridText, HybridVectors, wants

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def device_and_dtype(engine_args: Any) -> tuple[torch.device, torch.dtype]:
    """Where an encoder the worker builds runs, and at what precision, from Infinity's
    engine arguments (float16 on a GPU, float32 on a CPU where the dtype names none)."""
    device = torch.device(engine_args.device.resolve() if hasattr(engine_args.device, "resolve") else "cpu")
    requested = getattr(engine_args.dtype, "value", str(engine_args.dtype))
    return device, TORCH_DTYPES.get(requested, torch.float16 if device.type == "cuda" else torch.float32)


class _Encoder(BaseEmbedder):
    capabilities = {"embed"}
    real_tokens_safe = True  # engine/cpu/real_tokens.py may drop padding inside the encoder
    dimension: int  # of the dense vector, each token vector, or the sparse vocabulary
    max_length: int | None  # tokens a text is cut to

    def __init__(self, engine_args: Any, tokenizer: Any, model: torch.nn.Module) -> None:
        self.engine_args = engine_args
        self.device, self.dtype = device_and_dtype(engine_args)
        self.tokenizer = tokenizer
        self.model = model.to(self.device, self.dtype).eval()

    def _to_device(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.to(self.device) for key, value in features.items()}

    def tokenize_lengths(self, sentences: list[str]) -> list[int]:
        """Tokens per text for `usage`, counted as Infinity counts a dense model's."""
        encoded = self.tokenizer(list(sentences), add_special_tokens=False, return_attention_mask=False,
                                 return_token_type_ids=False, truncation="longest_first")
        return [len(ids) for ids in encoded["input_ids"]]

    def warmup(self, *, batch_size: int = 64, n_tokens: int = 1) -> tuple[float, float, str]:
        return 0.0, 0.0, "no warm-up"


def _head(head_file: Path) -> torch.nn.Linear:
    """A `torch.nn.Linear` loaded from FlagEmbedding's `*.pt` state dict."""
    state = torch.load(head_file, map_location="cpu", weights_only=True)
    weight = state["weight"]
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in state)
    linear.load_state_dict(state)
    return linear


class SparseEncoder(_Encoder):
    def __init__(self, layout: SparseLayout, engine_args: Any) -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        super().__init__(engine_args, AutoTokenizer.from_pretrained(layout.encoder),
                         AutoModelForMaskedLM.from_pretrained(layout.encoder))
        self.layout = layout
        limits = [v for v in (layout.max_seq_length, self.tokenizer.model_max_length) if v and v < 1_000_000]
        self.max_length = min(limits) if limits else None
        self.encoder = self.model.base_model
        self.vocabulary = _vocabulary_head(self.model)
        self.dimension = self.model.config.vocab_size

    def encode_pre(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        texts = [_as_sentence_transformers(text, self.layout.do_lower_case) for text in sentences]
        return self.tokenizer(texts, padding=True, truncation="longest_first", max_length=self.max_length,
                              return_tensors="pt")

    @torch.inference_mode()
    def encode_core(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        features = self._to_device(features)
        hidden = self.encoder(**features).last_hidden_state
        mask = features["attention_mask"].bool()
        pooled = []
        for row, real in zip(hidden, mask):
            logits = self.vocabulary(row[real])
            if self.layout.pooling == "max":  # the activation rises with x: max first, then one per token id
                pooled.append(self._activation(logits.amax(dim=0).float()))
            else:
                pooled.append(self._activation(logits.float()).sum(dim=0))
        return pooled

    def _activation(self, x: torch.Tensor) -> torch.Tensor:
        weights = x.relu_().log1p_()
        return weights.log1p_() if self.layout.activation == "log1p_relu" else weights

    def encode_post(self, pooled: list[torch.Tensor]) -> list[HybridVectors]:
        return [HybridVectors(sparse=_nonzero(weights.cpu().numpy())) for weights in pooled]


def _as_sentence_transformers(text: str, lower: bool) -> str:
    """The text as sentence-transformers' Transformer module tokenises it: stripped, and
    lower-cased where the model says so."""
    return text.strip().lower() if lower else text.strip()


def _vocabulary_head(model: torch.nn.Module) -> Any:
    """The masked-LM head, hidden states -> vocabulary logits, for BERT (`cls`), RoBERTa and
    XLM-R (`lm_head`), DistilBERT and ModernBERT; other families fail at load, in one line."""
    for name in ("cls", "lm_head"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return getattr(model, name)
    if hasattr(model, "vocab_projector"):  # DistilBERT
        def distilbert(h: torch.Tensor) -> torch.Tensor:
            h = model.vocab_layer_norm(model.activation(model.vocab_transform(h)))
            return model.vocab_projector(h)
        return distilbert
    if hasattr(model, "head") and hasattr(model, "decoder"):  # ModernBERT
        return lambda h: model.decoder(model.head(h))
    raise TypeError(f"{type(model).__name__} has no masked-LM head this worker knows")


def _nonzero(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    indices = np.flatnonzero(weights > 0)
    return indices.astype(np.int64), weights[indices].astype(np.float32)


class M3Encoder(_Encoder):
    def __init__(self, layout: M3Layout, engine_args: Any) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            model = AutoModel.from_pretrained(layout.encoder, add_pooling_layer=False)
        except TypeError:
            model = AutoModel.from_pretrained(layout.encoder)
        super().__init__(engine_args, AutoTokenizer.from_pretrained(layout.encoder), model)
        self.colbert_linear = _head(layout.encoder / "colbert_linear.pt").to(self.device, self.dtype)
        self.sparse_linear = _head(layout.encoder / "sparse_linear.pt").to(self.device, self.dtype)
        special = ("cls_token", "eos_token", "pad_token", "unk_token")
        self.unused = torch.tensor(sorted({self.tokenizer.convert_tokens_to_ids(self.tokenizer.special_tokens_map[t])
                                           for t in special if t in self.tokenizer.special_tokens_map}))
        limit = self.tokenizer.model_max_length
        self.max_length = limit if limit and limit < 1_000_000 else None
        self.dimension = self.model.config.hidden_size

    def encode_pre(self, sentences: list[str]) -> dict[str, Any]:
        features = self.tokenizer(list(sentences), padding=True, truncation=True, max_length=self.max_length,
                                  return_tensors="pt")
        return {"features": features, "wants": [{kind for kind in (DENSE, SPARSE, MULTI_VECTOR) if wants(text, kind)}
                                                for text in sentences]}

    @torch.inference_mode()
    def encode_core(self, batch: dict[str, Any]) -> dict[str, Any]:
        features, asked = self._to_device(batch["features"]), set().union(*batch["wants"])
        hidden = self.model(**features).last_hidden_state
        mask = features["attention_mask"]
        out = {"wants": batch["wants"], "input_ids": features["input_ids"].cpu(), "lengths": mask.sum(dim=1).cpu()}
        if DENSE in asked:
            out["dense"] = functional.normalize(hidden[:, 0].float(), dim=-1).cpu()
        if SPARSE in asked:
            out["weights"] = torch.relu(self.sparse_linear(hidden)).squeeze(-1).float().cpu()
        if MULTI_VECTOR in asked:
            colbert = self.colbert_linear(hidden[:, 1:]).float() * mask[:, 1:, None].float()
            out["colbert"] = functional.normalize(colbert, dim=-1).cpu()
        return out

    def encode_post(self, out: dict[str, Any]) -> list[HybridVectors]:
        results = []
        for i, (length, asked) in enumerate(zip(out["lengths"].tolist(), out["wants"])):
            vectors = HybridVectors()
            if DENSE in asked:
                vectors.dense = out["dense"][i].numpy()
            if SPARSE in asked:
                ids, weights = out["input_ids"][i, :length], out["weights"][i, :length]
                keep = (weights > 0) & ~torch.isin(ids, self.unused)
                ids, weights = ids[keep], weights[keep]
                unique, inverse = torch.unique(ids, return_inverse=True)  # ascending token ids
                largest = torch.zeros(len(unique)).scatter_reduce_(0, inverse, weights, "amax", include_self=False)
                vectors.sparse = (unique.numpy().astype(np.int64), largest.numpy())
            if MULTI_VECTOR in asked:  # a copy: a view would keep the whole batch's token vectors alive
                vectors.multi_vector = out["colbert"][i, :length - 1].numpy().copy()
            results.append(vectors)
        return results


class ColbertEncoder(_Encoder):
    real_tokens_safe = False  # a query's [MASK] expansion tokens are outputs, attended or not

    def __init__(self, layout: ColbertLayout, engine_args: Any) -> None:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(layout.encoder)
        try:
            model = AutoModel.from_pretrained(layout.encoder, add_pooling_layer=False)
        except TypeError:
            model = AutoModel.from_pretrained(layout.encoder)
        super().__init__(engine_args, tokenizer, model)
        self.layout = layout
        if tokenizer.mask_token_id is not None:  # PyLate pads with [MASK]: the query expansion tokens
            tokenizer.pad_token_id = tokenizer.mask_token_id
        self.dense = self._dense(layout)
        self.dimension = self.dense.linear.out_features
        self.max_length = layout.document_length
        prefix_id = {prefix: tokenizer.convert_tokens_to_ids(prefix) if prefix else None
                     for prefix in (layout.query_prefix, layout.document_prefix)}
        self.query_prefix_id, self.document_prefix_id = prefix_id[layout.query_prefix], prefix_id[layout.document_prefix]
        self.skiplist = torch.tensor([tokenizer.convert_tokens_to_ids(w) for w in layout.skiplist_words] or [-1])

    def _dense(self, layout: ColbertLayout) -> torch.nn.Module:
        from safetensors.torch import load_file

        config = json.loads((layout.dense / "config.json").read_text())
        weights_file = layout.dense / "model.safetensors"
        state = load_file(str(weights_file)) if weights_file.is_file() else torch.load(
            layout.dense / "pytorch_model.bin", map_location="cpu", weights_only=True)
        activation = str(config.get("activation_function", "torch.nn.modules.linear.Identity"))
        if not activation.endswith("Identity"):
            raise TypeError(f"a ColBERT Dense activation of {activation} is not served (Identity is)")
        linear = torch.nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
        linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items() if k.startswith("linear.")})
        residual = None
        if config.get("use_residual"):
            if "residual.weight" in state:
                residual = torch.nn.Linear(config["in_features"], config["out_features"], bias=False)
                residual.load_state_dict({"weight": state["residual.weight"]})
            else:
                residual = torch.nn.Identity()
        return _Dense(linear, residual).to(self.device, self.dtype).eval()

    def _length(self, query: bool) -> int:
        length = self.layout.query_length if query else self.layout.document_length
        prefix = self.query_prefix_id if query else self.document_prefix_id
        return length - 1 if prefix is not None else length

    def encode_pre(self, sentences: list[str]) -> dict[str, Any]:
        rows: list[tuple[list[int], list[int]]] = [([], [])] * len(sentences)
        kinds = ["query" if isinstance(text, HybridText) and text.query else "document" for text in sentences]
        for kind in ("query", "document"):
            positions = [i for i, k in enumerate(kinds) if k == kind]
            if not positions:
                continue
            is_query = kind == "query"
            expand = is_query and self.layout.do_query_expansion
            texts = [_as_sentence_transformers(sentences[i], self.layout.do_lower_case) for i in positions]
            encoded = self.tokenizer(texts, truncation="longest_first",
                                     padding="max_length" if expand else False,
                                     max_length=self._length(is_query), return_token_type_ids=False)
            prefix = self.query_prefix_id if is_query else self.document_prefix_id
            for i, ids, mask in zip(positions, encoded["input_ids"], encoded["attention_mask"]):
                if prefix is not None:
                    ids, mask = ids[:1] + [prefix] + ids[1:], mask[:1] + [1] + mask[1:]
                if is_query and self.layout.attend_to_expansion_tokens:
                    mask = [1] * len(mask)
                rows[i] = (ids, mask)
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        return {
            "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
            "attention_mask": torch.tensor([mask + [0] * (width - len(mask)) for _, mask in rows]),
            # which positions come back: a query with expansion keeps all its own positions
            # ([MASK]s included), other queries their attended ones, documents those but
            # skiplist tokens
            "keep": [len(ids) if kind == "query" and self.layout.do_query_expansion else kind
                     for kind, (ids, _) in zip(kinds, rows)],
        }

    @torch.inference_mode()
    def encode_core(self, features: dict[str, Any]) -> dict[str, Any]:
        inputs = self._to_device({k: features[k] for k in ("input_ids", "attention_mask")})
        hidden = self.model(**inputs).last_hidden_state
        return {**features, "vectors": self.dense(hidden).float().cpu()}

    def encode_post(self, out: dict[str, Any]) -> list[HybridVectors]:
        results = []
        for i, keep in enumerate(out["keep"]):
            if isinstance(keep, int):
                mask = torch.arange(out["vectors"].shape[1]) < keep
            else:
                mask = out["attention_mask"][i].bool()
                if keep == "document":
                    mask &= ~torch.isin(out["input_ids"][i], self.skiplist)
            results.append(HybridVectors(multi_vector=functional.normalize(out["vectors"][i][mask], dim=-1).numpy()))
        return results


class _Dense(torch.nn.Module):
    """PyLate's Dense: linear(x), plus a residual where the model has one."""

    def __init__(self, linear: torch.nn.Linear, residual: torch.nn.Module | None) -> None:
        super().__init__()
        self.linear, self.residual = linear, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.linear(x)
        return projected if self.residual is None else projected + self.residual(x)
