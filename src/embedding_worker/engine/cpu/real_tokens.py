"""Encoders that compute on real tokens only, on a CPU.

A batch is padded to its longest text, and a padded encoder computes every position of
every row: with texts of mixed lengths most of a batch can be padding. For the encoder
families users deploy for embeddings and reranking (BERT, RoBERTa, XLM-RoBERTa, MPNet,
ModernBERT, and the cross-encoders and sentence-transformers built on them), `compute_on_real_tokens` swaps
the encoder's forward pass for one that:
- embeds the padded batch (positions and token types stay those of the padded layout);
- keeps only the real tokens, one `[tokens, hidden]` matrix for the whole batch, through
  every linear layer, layer norm and feed-forward (the packed kernels of `kernels.py`
  work on it as they do on a padded batch);
- runs attention one text at a time with torch's scaled-dot-product kernel, on that text's
  tokens alone, so there is nothing to compute for padding (MPNet's relative position bias,
  which depends only on the distance between tokens, is cut to the text's length);
- puts the result back in the padded layout, so pooling, classifier heads and
  sentence-transformers see the model's usual output.

The vectors are the padded model's (float32: within rounding; bfloat16: as close to float32
as the padded model's; docs/BENCHMARKS.md has the speed). A short batch with little padding
(see REAL_SHARE_BELOW), or any call this path does not cover (attention or
hidden-state outputs, head masks, relative position embeddings, a decoder, gradients),
runs the model's own forward. `PACK_CPU_WEIGHTS=false` keeps the model's own forward too.
An encoder quantised to int8 (`int8.py`) runs here whatever its padding, its query, key and
value one fused product.
"""

from __future__ import annotations

import types
from typing import Any, NamedTuple

import torch
from torch.nn import functional

from embedding_worker.engine.cpu.kernels import torch_modules

ENCODERS = ("BertModel", "RobertaModel", "XLMRobertaModel", "CamembertModel", "MPNetModel", "ModernBertModel")
# A batch runs on real tokens only below this share of real tokens, and in bfloat16 from
# ALWAYS_FROM padded positions on, where attention by plain matmul per text beats the padded
# batch's even with no padding at all. Measured on all-MiniLM-L6-v2 (2 threads): the time
# follows the real tokens (2x at 50 % real); bfloat16 at 182 tokens 1.05x with no padding;
# at 42 tokens, with the batch's attention in one padded call (BATCHED_UP_TO), 0.97-0.99x
# with no padding at all and 1.18x at 87 % real.
REAL_SHARE_BELOW = 0.97
ALWAYS_FROM = 64
PLAIN_ATTENTION_FROM = 32  # tokens
# Long texts: attention by plain matmul holds a tokens x tokens matrix per head (an 8k-token
# text, 16 heads: 4 GiB in float32), and so does the padded model's when its batch needs a
# padding mask (torch's kernel for a masked attention on a CPU is the plain one). From
# LONG_FROM padded positions on, a batch always runs here, each text's attention through
# scaled-dot-product with no mask at all: its flash kernel holds memory linear in length.
LONG_FROM = 512
PLAIN_ATTENTION_UP_TO = 512  # tokens: from here the flash kernel, whose memory is linear in length
# Short texts: attention one text at a time is hundreds of small kernel calls a batch (two
# products and a softmax per text and layer, each with its copies); up to BATCHED_UP_TO
# padded positions, the batch's attention runs as one padded call instead (a key mask for
# the padding), while every linear layer stays on real tokens.
BATCHED_UP_TO = 128


def compute_on_real_tokens(model: Any) -> int:
    """Swap the forward pass of every supported CPU encoder in `model`; return how many."""
    swapped = 0
    for root in torch_modules(model):
        for module in root.modules():
            swappable = type(module).__name__ in ENCODERS and "_padded_forward" not in vars(module)
            if swappable and supported(module):  # once, though a model object holds it twice
                module._padded_forward = module.forward
                modern = type(module).__name__ == "ModernBertModel"
                module.forward = types.MethodType(_modernbert_forward if modern else _forward, module)
                swapped += 1
    return swapped


def supported(encoder: torch.nn.Module) -> bool:
    """Whether the real-token path can run `encoder` (its family, configuration and device)."""
    config = encoder.config
    if type(encoder).__name__ == "ModernBertModel":
        return (getattr(config, "_attn_implementation", "sdpa") != "flash_attention_2"
                and next(encoder.parameters()).device.type == "cpu")
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    return (
        not config.is_decoder
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and layers is not None
        and all(hasattr(getattr(layer, "attention", None), ("self" if hasattr(layer.attention, "self") else "attn"))
                for layer in layers)
        and next(encoder.parameters()).device.type == "cpu"
    )


def _covered(input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, rest: dict[str, Any],
             unsupported: tuple[str, ...]) -> bool:
    """Whether this path covers the call: ids and a 2-D mask, no gradients, and none of the
    `unsupported` arguments given (None and False count as not given)."""
    return (input_ids is not None and attention_mask is not None and attention_mask.dim() == 2
            and not torch.is_grad_enabled()
            and all(rest.get(name) is None or rest.get(name) is False for name in unsupported))


def _real_tokens(attention_mask: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Where the real tokens sit in the flattened `[texts x length]` layout, and each text's count."""
    return attention_mask.reshape(-1).nonzero().squeeze(1), attention_mask.sum(dim=1).tolist()


def _padded_back(hidden: torch.Tensor, real: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """`[tokens, hidden]` back in the padded layout `[batch, length, hidden]`, zeros for padding."""
    return hidden.new_zeros(batch * length, hidden.shape[-1]).index_copy_(0, real, hidden).view(batch, length, -1)


def _forward(self: torch.nn.Module, input_ids: torch.Tensor | None = None,
             attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
             position_ids: torch.Tensor | None = None, **rest: Any) -> Any:
    covered = _covered(input_ids, attention_mask, rest, ("head_mask", "inputs_embeds", "encoder_hidden_states",
                                                       "past_key_values", "output_attentions", "output_hidden_states"))
    worth_it = covered and (float(attention_mask.float().mean()) < REAL_SHARE_BELOW or (
        attention_mask.shape[1] >= ALWAYS_FROM and self.embeddings.word_embeddings.weight.dtype == torch.bfloat16)
        or attention_mask.shape[1] >= LONG_FROM or getattr(self, "_real_tokens_always", False))
    if not worth_it:
        return self._padded_forward(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids, position_ids=position_ids, **rest)
    from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

    batch, length = input_ids.shape
    embedded = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
    real, lengths = _real_tokens(attention_mask)
    hidden = embedded.reshape(batch * length, -1).index_select(0, real)
    bias = self.encoder.compute_position_bias(embedded[:1]) if hasattr(self.encoder, "relative_attention_bias") else None
    layout = None
    if length <= BATCHED_UP_TO:
        key_mask = torch.zeros(batch, 1, 1, length, dtype=hidden.dtype).masked_fill(
            attention_mask[:, None, None, :] == 0, float("-inf"))
        layout = _Padded(real, batch, length, key_mask)
    for layer in self.encoder.layer:
        hidden = _layer(layer, hidden, lengths, bias, layout)
    sequence = _padded_back(hidden, real, batch, length)
    pooled = self.pooler(sequence) if getattr(self, "pooler", None) is not None else None
    if rest.get("return_dict") is False:  # as sentence-transformers calls it
        return (sequence,) if pooled is None else (sequence, pooled)
    return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=sequence, pooler_output=pooled)


def _modernbert_forward(self: torch.nn.Module, input_ids: torch.Tensor | None = None,
                        attention_mask: torch.Tensor | None = None, **rest: Any) -> Any:
    """ModernBERT on real tokens: its embeddings, layers and final norm on `[tokens, hidden]`,
    rotary positions those of the padded layout, each text's global attention through the
    flash kernel, and its local (sliding-window) attention a block of queries at a time
    against the keys within the window: memory linear in length where the padded model holds
    two tokens x tokens masks and a tokens x tokens matrix per head."""
    covered = _covered(input_ids, attention_mask, rest, (
        "sliding_window_mask", "position_ids", "inputs_embeds", "indices", "cu_seqlens", "max_seqlen",
        "batch_size", "seq_len", "output_attentions", "output_hidden_states"))
    worth_it = covered and (float(attention_mask.float().mean()) < REAL_SHARE_BELOW
                            or attention_mask.shape[1] >= LONG_FROM or getattr(self, "_real_tokens_always", False))
    if not worth_it:
        return self._padded_forward(input_ids=input_ids, attention_mask=attention_mask, **rest)
    from transformers.modeling_outputs import BaseModelOutput
    from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

    batch, length = input_ids.shape
    real, lengths = _real_tokens(attention_mask)
    positions = torch.arange(length, device=input_ids.device).repeat(batch).index_select(0, real)[None]
    hidden = self.embeddings(input_ids=input_ids.reshape(1, -1).index_select(1, real))[0]
    for layer in self.layers:
        attention = layer.attn
        heads, size = attention.num_heads, attention.head_dim
        qkv = attention.Wqkv(layer.attn_norm(hidden)).view(1, -1, 3, heads, size)
        cos, sin = attention.rotary_emb(qkv, position_ids=positions)
        query, key, value = qkv.transpose(3, 1).unbind(dim=2)  # [1, heads, tokens, size]
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        window = attention.local_attention[0]
        context = torch.cat([
            _attend_within(q, k, v, window) if window >= 0 else _attend(q[0], k[0], v[0], None)[None]
            for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2))
        ], dim=2)
        hidden = hidden + attention.Wo(context[0].transpose(0, 1).reshape(-1, heads * size))
        hidden = hidden + layer.mlp(layer.mlp_norm(hidden))
    hidden = self.final_norm(hidden)
    sequence = _padded_back(hidden, real, batch, length)
    if rest.get("return_dict") is False:
        return (sequence,)
    return BaseModelOutput(last_hidden_state=sequence)


def _attend_within(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, window: int,
                   block: int = 256) -> torch.Tensor:
    """One text's sliding-window attention, `[1, heads, tokens, size]`: each query sees the
    keys at most `window` positions away, computed a block of queries at a time against the
    keys in reach of the block."""
    tokens = query.shape[2]
    pieces = []
    for start in range(0, tokens, block):
        stop = min(tokens, start + block)
        first, last = max(0, start - window), min(tokens, stop + window)
        rows = torch.arange(start, stop, device=query.device)[:, None]
        columns = torch.arange(first, last, device=query.device)[None, :]
        near = (rows - columns).abs() <= window
        pieces.append(functional.scaled_dot_product_attention(
            query[:, :, start:stop], key[:, :, first:last], value[:, :, first:last], attn_mask=near))
    return torch.cat(pieces, dim=2)


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """One text's attention, `[heads, tokens, size]`, with the kernel that is faster here
    (docs/BENCHMARKS.md, "Attention kernels"): in bfloat16 from PLAIN_ATTENTION_FROM tokens
    up to PLAIN_ATTENTION_UP_TO, a batched matmul and softmax (1.3-1.8x torch's flash kernel);
    else scaled-dot-product, whose flash kernel holds memory linear in length."""
    if query.dtype == torch.bfloat16 and PLAIN_ATTENTION_FROM <= query.shape[1] < PLAIN_ATTENTION_UP_TO:
        scores = torch.bmm(query, key.transpose(1, 2)) * query.shape[-1] ** -0.5
        if bias is not None:
            scores += bias
        return torch.bmm(torch.softmax(scores, dim=-1), value)
    # [1, heads, tokens, size]: torch's flash kernel on a CPU takes 4-D input only (3-D falls back
    # to the plain math kernel: a tokens x tokens matrix, and 6-10x slower at 8k tokens)
    return functional.scaled_dot_product_attention(query[None], key[None], value[None],
                                                   attn_mask=None if bias is None else bias[None])[0]


class _Padded(NamedTuple):
    """Where a batch's real tokens sit in its padded layout, for one padded attention call."""

    real: torch.Tensor  # positions of the real tokens in the flattened [texts x length] layout
    texts: int
    length: int
    key_mask: torch.Tensor  # [texts, 1, 1, length]: 0 for a real key, -inf for padding


def _attend_padded(projected: list[torch.Tensor], heads: int, padded: _Padded,
                   bias: torch.Tensor | None) -> torch.Tensor:
    """The batch's attention in one call, computed on the padded layout with the padding's
    keys masked. `projected`: the query, key and value, `[tokens, heads x size]` each, or
    the three in one `[tokens, 3 x heads x size]` (laid out in one copy); `[tokens, heads x
    size]` out."""
    width = projected[0].shape[-1] * len(projected) // 3
    size = width // heads
    laid_out = [t.new_zeros(padded.texts * padded.length, t.shape[-1]).index_copy_(0, padded.real, t)
                for t in projected]
    q, k, v = (part.view(padded.texts, padded.length, heads, size).transpose(1, 2)  # [texts, heads, length, size]
               .reshape(padded.texts * heads, padded.length, size)
               for t in laid_out for part in t.split(width, dim=-1))
    # the scale and the key mask inside the product (baddbmm): no pass over the scores for them
    mask = padded.key_mask.expand(-1, heads, -1, -1).reshape(padded.texts * heads, 1, padded.length)
    scores = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=size ** -0.5)
    if bias is not None:
        scores = scores.view(padded.texts, heads, padded.length, padded.length).add_(
            bias[:, :, :padded.length, :padded.length]).view(-1, padded.length, padded.length)
    context = torch.bmm(torch.softmax(scores, dim=-1), v).view(padded.texts, heads, padded.length, size)
    return context.transpose(1, 2).reshape(-1, width).index_select(0, padded.real)


def _layer(layer: torch.nn.Module, hidden: torch.Tensor, lengths: list[int], bias: torch.Tensor | None,
           padded: _Padded | None = None) -> torch.Tensor:
    """One encoder layer on `[tokens, hidden]`: the post-norm block of BERT (`attention.self`,
    `attention.output`) or MPNet (`attention.attn`, `attention.LayerNorm`), attention per text
    (or, for a batch of short texts, in one padded call)."""
    own = layer.attention.self if hasattr(layer.attention, "self") else layer.attention.attn
    if hasattr(own, "qkv"):  # one fused product (int8.py)
        projected = [own.qkv(hidden)]
    elif hasattr(layer.attention, "self"):
        projected = [own.query(hidden), own.key(hidden), own.value(hidden)]
    else:
        projected = [own.q(hidden), own.k(hidden), own.v(hidden)]
    heads, size = own.num_attention_heads, own.attention_head_size
    if padded is not None:
        return _after_attention(layer, own, _attend_padded(projected, heads, padded, bias), hidden)
    query, key, value = (t.view(-1, heads, size).transpose(0, 1)  # [heads, tokens, size]
                         for t in (projected[0].chunk(3, dim=-1) if len(projected) == 1 else projected))
    context = torch.cat([
        _attend(q, k, v, None if bias is None else bias[0, :, :q.shape[1], :q.shape[1]])
        for q, k, v in zip(query.split(lengths, dim=1), key.split(lengths, dim=1), value.split(lengths, dim=1))
    ], dim=1)
    return _after_attention(layer, own, context.transpose(0, 1).reshape(-1, heads * size), hidden)


def _after_attention(layer: torch.nn.Module, own: torch.nn.Module, context: torch.Tensor,
                     hidden: torch.Tensor) -> torch.Tensor:
    if hasattr(layer.attention, "self"):
        attended = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + hidden)
    else:
        attended = layer.attention.LayerNorm(own.o(context) + hidden)
    return layer.output.LayerNorm(layer.output.dense(layer.intermediate(attended)) + attended)
