"""Attention in memory linear in length, on a CPU, for the models that call transformers'
attention interface (Qwen2 and Qwen3, Gemma 3, Llama and Mistral: the LLM-based embedders
and rerankers).

Their scaled-dot-product attention runs torch's flash kernel when the batch needs no mask,
but a batch of texts of different lengths needs a padding mask, and torch's kernel for a
masked attention on a CPU is the plain one: a tokens x tokens matrix per head and text
(8,000 tokens, 16 heads: 4 GiB in float32, per text of the batch). `use_blocked_attention`
puts `attention_in_blocks` in the interface's place for "sdpa": on a CPU, a masked
attention past BLOCK_BYTES runs one text at a time and a block of queries at a time, each
block against all the keys with its rows of the mask, so it holds one block's scores at
once; the vectors are those of the one call (the same kernel on the same numbers). On a GPU,
without a mask, or with gradients, it is the interface's own function. The BERT family has
its own path on a CPU (`real_tokens.py`).
"""

from __future__ import annotations

from typing import Any

BLOCK_BYTES = 64 * 2**20  # one block's float32 scores, all heads


def use_blocked_attention() -> bool:
    """Install `attention_in_blocks` as transformers' "sdpa" attention (once); return
    whether this transformers has the attention interface."""
    try:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:
        return False
    current = ALL_ATTENTION_FUNCTIONS["sdpa"]
    if not getattr(current, "in_blocks", False):
        ALL_ATTENTION_FUNCTIONS["sdpa"] = _in_blocks(sdpa_attention_forward)
    return True


def _in_blocks(attention: Any) -> Any:
    import torch
    from torch.nn import functional

    def attention_in_blocks(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                            **kwargs: Any) -> tuple[torch.Tensor, None]:
        texts, heads, queries, _ = query.shape
        keys = key.shape[2]
        if (attention_mask is None or attention_mask.ndim != 4 or query.device.type != "cpu"
                or torch.is_grad_enabled() or heads * queries * keys * 4 <= BLOCK_BYTES):
            return attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        block = max(1, BLOCK_BYTES // (heads * keys * 4))
        groups = heads // key.shape[1]  # grouped-query attention: each key head serves `groups` query heads
        mask = attention_mask[:, :, :, :keys]
        rows = []
        for text in range(texts):
            text_key, text_value = key[text:text + 1], value[text:text + 1]
            if groups > 1:
                text_key = text_key.repeat_interleave(groups, dim=1)
                text_value = text_value.repeat_interleave(groups, dim=1)
            text_mask = mask[text:text + 1] if mask.shape[0] > 1 else mask
            pieces = [functional.scaled_dot_product_attention(
                query[text:text + 1, :, start:start + block], text_key, text_value,
                attn_mask=text_mask[:, :, start:start + block] if text_mask.shape[2] > 1 else text_mask,
                scale=scaling) for start in range(0, queries, block)]
            rows.append(torch.cat(pieces, dim=2))  # [1, heads, queries, size]
        return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None

    attention_in_blocks.in_blocks = True
    return attention_in_blocks
