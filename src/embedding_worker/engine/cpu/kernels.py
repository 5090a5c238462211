"""Faster linear layers for torch models on a CPU: oneDNN kernels with weights packed once.

On a CPU, torch's `nn.Linear` runs a GEMM on the weight in its stored layout, then adds the
bias and any activation in further passes over the output. `pack_linear_layers` swaps every
`nn.Linear` whose weight is float32 or bfloat16 on the CPU for a `PackedLinear`: the weight
is reordered once, at load, into oneDNN's blocked layout, and the bias is added inside the
GEMM. Where a layer is a transformer feed-forward of the BERT family (a module holding only
`dense` and a GELU `intermediate_act_fn`: BERT, RoBERTa, XLM-R, MPNet, ELECTRA, DeBERTa), the
GELU is fused into the same kernel, computed on the GEMM's float32 accumulator before rounding.

Vectors stay those of the unpacked model (float32: differences at rounding level; bfloat16:
cosine to float32 as close or closer). docs/BENCHMARKS.md has the forward pass's speed-up.

A packed weight is an opaque oneDNN tensor kept outside the module's parameters: pack a model
once it is on its device and in its dtype, and do not move it afterwards. Imported only where
a model loads (it imports torch). `PACK_CPU_WEIGHTS=false` keeps torch's own layers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from transformers.activations import GELUActivation

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)


class PackedLinear(torch.nn.Module):
    """`activation(linear(x))` with `linear`'s weight packed for oneDNN; `activation` is
    oneDNN's post-op: "none", or "gelu" (the exact, erf GELU)."""

    def __init__(self, linear: torch.nn.Linear, activation: str = "none") -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activation = activation
        self.algorithm = "none" if activation == "gelu" else ""  # erf GELU; no variant otherwise
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.packed_bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(
            x, self.packed_weight, self.packed_bias, self.activation, [], self.algorithm
        )

    def extra_repr(self) -> str:
        fused = "" if self.activation == "none" else f", {self.activation} fused"
        return f"in_features={self.in_features}, out_features={self.out_features}, packed{fused}"


def can_pack() -> bool:
    """Whether this torch build has oneDNN's packed linear kernels."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def pack_linear_layers(model: Any) -> int:
    """Pack the CPU float32 and bfloat16 linear layers of `model` (an nn.Module, or one of
    Infinity's wrappers holding them); return how many layers were packed."""
    if not can_pack():
        return 0
    packed = 0
    for root in torch_modules(model):
        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if _packable(child):
                    setattr(parent, name, PackedLinear(child))
                    packed += 1
                elif _fusable_gelu_feed_forward(child):
                    child.dense = PackedLinear(child.dense, "gelu")
                    child.intermediate_act_fn = torch.nn.Identity()
                    packed += 1
    return packed


def torch_modules(model: Any) -> Iterator[torch.nn.Module]:
    """`model` itself when it is an nn.Module, else the nn.Modules it holds: Infinity keeps a
    reranker's and an image model's as `model`, a classifier's pipeline as `_pipe`."""
    if isinstance(model, torch.nn.Module):
        yield model
        return
    holders = [model, getattr(model, "_pipe", None)]
    found = {id(value): value for holder in holders if hasattr(holder, "__dict__")
             for value in vars(holder).values() if isinstance(value, torch.nn.Module)}
    yield from found.values()


def _packable(module: torch.nn.Module) -> bool:
    if type(module) is not torch.nn.Linear:  # subclasses may change forward
        return False
    weight = module.weight
    return weight.device.type == "cpu" and weight.dtype in PACKABLE_DTYPES


def _fusable_gelu_feed_forward(module: torch.nn.Module) -> bool:
    """Whether `module` is BERT's feed-forward, `act(dense(x))` and nothing else, with the
    exact (erf) GELU."""
    children = dict(module.named_children())
    if children.keys() != {"dense", "intermediate_act_fn"} or not _packable(children["dense"]):
        return False
    return is_erf_gelu(children["intermediate_act_fn"])


def is_erf_gelu(activation: Any) -> bool:
    """Whether `activation` is the exact (erf) GELU, transformers' or torch's module."""
    if type(activation) is GELUActivation:
        return activation.act is torch.nn.functional.gelu
    return type(activation) is torch.nn.GELU and activation.approximate == "none"
