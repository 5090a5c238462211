"""int8 on a CPU for the encoders: static, smoothed int8 products on oneDNN.

What `DTYPES=int8` runs on a CPU, through the quality gate (`int8_gate.py`). In each encoder
layer the two products whose input is a layer norm's output run as int8 x int8 products on
oneDNN's kernels (VNNI where the CPU has it): the attention's query, key and value (one
fused product) and the feed-forward's first (BERT's with its GELU fused; ModernBERT's gated
`Wi`). For each:

- the weight is int8 per output channel, symmetric;
- the input is uint8 per tensor, with a zero point, over a range calibrated once at load on
  ACTIVATION_TEXTS (static: a text's vector never depends on what else is in its batch);
- before both, each input channel is divided by a smoothing factor and the weight's column
  multiplied by it (SmoothQuant, alpha SMOOTHING): the few channels where a layer norm's
  output runs large no longer set the whole tensor's scale.

Everything else runs at the fallback precision (bfloat16 on CPUs with native bf16): the
attention, the layer norms and the two output projections, whose inputs (the attention's
context, the activation's output) are not a layer norm's and which cost retrieval quality
in int8 (docs/BENCHMARKS.md, "int8 on this CPU"). The encoder always computes on real
tokens (`real_tokens.py`), where the fused product is used.

Covered: the encoders of `real_tokens.ENCODERS` (BERT, RoBERTa, XLM-RoBERTa, CamemBERT,
MPNet, ModernBERT) where the real-token path runs them. Anything else is left to the gate's
fallback, with the reason.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

SMOOTHING = 0.5
# Held apart from the quality gate's corpus (compact.CALIBRATION_TEXTS): what sets the
# inputs' ranges must not be what judges the result. Varied on purpose: questions, prose of
# a few lengths, numbers, code, other languages and scripts, markup.
ACTIVATION_TEXTS = [
    "How do I renew my passport if it expired more than five years ago?",
    "best hiking trails near lake tahoe",
    "The mitochondria is the powerhouse of the cell.",
    "Quarterly revenue rose 12.4% to $3.91 billion, beating analysts' estimates of $3.75 billion.",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "for (let i = 0; i < items.length; i++) { total += items[i].price * items[i].qty; }",
    "Der Zug nach Berlin hat heute zwanzig Minuten Verspätung.",
    "El paciente presentó fiebre alta y dolor de cabeza durante tres días.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "Москва — столица России.",
    "<div class=\"price\">19,99 €</div>",
    "lol that game last night was insane!!! 🔥🔥",
    "ERROR 2024-05-17T08:12:44Z worker-3 connection reset by peer (errno 104)",
    "Photosynthesis converts light energy into chemical energy that plants store as glucose. "
    "It takes place in the chloroplasts, where chlorophyll absorbs mostly blue and red light, "
    "and it releases oxygen as a by-product, which is why forests matter for the air we breathe.",
    "The contract may be terminated by either party with thirty (30) days' written notice. Upon "
    "termination, the Supplier shall deliver all work in progress, and the Customer shall pay for "
    "services rendered up to the date of termination, less any amounts already invoiced and paid. "
    "Sections 7, 9 and 12 survive termination. Neither party is liable for indirect or "
    "consequential damages, including lost profits, except in cases of gross negligence or wilful "
    "misconduct. This agreement is governed by the laws of the State of New York.",
    "Once upon a time, in a village at the edge of a great forest, there lived an old clockmaker "
    "who had never left home. Every morning he wound the clocks of the square, and every evening "
    "he listened to the travellers at the inn describe cities he would never see: harbours full "
    "of ships, towers of glass, markets that sold spices from across the sea. One winter a girl "
    "arrived with a broken pocket watch and a map, and asked him to mend both. The watch took him "
    "an afternoon; the map, he said, would take the rest of his life, and he closed his shop the "
    "next morning and followed her down the road.",
    "a", "1 2 3 4 5 6 7 8 9 10", "N/A", "?",
]
ACTIVATION_TEXTS += [" ".join(ACTIVATION_TEXTS[13:16] * 3)]  # a long one: ~750 words, as far as the model reads


def can_quantise() -> bool:
    """Whether this torch build has oneDNN's int8 linear kernels."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


class Int8Linear(torch.nn.Module):
    """`activation(x @ weight.T + bias)` with `weight` int8 per output channel and `x`
    quantised to uint8 per tensor over the calibrated range [`low`, `high`] of `x / smooth`;
    the output in `x`'s dtype. `activation` is oneDNN's post-op: "none" or "gelu" (erf)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, smooth: torch.Tensor,
                 low: float, high: float, activation: str = "none") -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.activation, self.algorithm = activation, ("none" if activation == "gelu" else "")
        low, high = min(low, 0.0), max(high, 0.0)  # zero stays exact
        self.x_scale = max(high - low, 1e-8) / 255
        self.x_zero = int(round(-low / self.x_scale))
        # the input's quantisation in one multiply-add: x * (1 / (smooth * scale)) + zero, rounded
        self.multiplier = (1 / (smooth.float() * self.x_scale)).contiguous()
        self.offset = torch.tensor(self.x_zero + 0.5)
        smoothed = weight.float() * smooth.float()[None, :]
        self.w_scale = smoothed.abs().amax(dim=1).clamp(min=1e-12) / 127
        quantised = (smoothed / self.w_scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        self.packed_weight = torch.ops.onednn.qlinear_prepack(quantised, None)
        self.w_zero = torch.zeros(self.out_features, dtype=torch.long)
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # floor(x * m + zero + 0.5), clamped: round half up onto the uint8 grid
        quantised = torch.addcmul(self.offset, x, self.multiplier).clamp_(0, 255).to(torch.uint8)
        return torch.ops.onednn.qlinear_pointwise(
            quantised, self.x_scale, self.x_zero, self.packed_weight, self.w_scale, self.w_zero, self.bias,
            1.0, 0, x.dtype, self.activation, [], self.algorithm)

    def extra_repr(self) -> str:
        fused = "" if self.activation == "none" else f", {self.activation} fused"
        return f"in_features={self.in_features}, out_features={self.out_features}, int8{fused}"


class _Part(torch.nn.Module):
    """One of query, key and value, cut from the fused product (for the model's own forward,
    which asks for each apart; the real-token path calls the fused product once)."""

    def __init__(self, fused: Int8Linear, index: int) -> None:
        super().__init__()
        self._fused = [fused]  # not a child: the fused product is its owner's
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fused[0](x).chunk(3, dim=-1)[self.index]


def _projections(layer: torch.nn.Module) -> tuple[torch.nn.Module, tuple[str, str, str]]:
    """The attention module holding query, key and value, and their names (BERT's or MPNet's)."""
    if hasattr(layer.attention, "self"):
        return layer.attention.self, ("query", "key", "value")
    return layer.attention.attn, ("q", "k", "v")


class _Target(NamedTuple):
    """Linear layers of one encoder layer that become one int8 product: query, key and value
    (fused), or a single one."""

    owner: torch.nn.Module
    names: tuple[str, ...]
    key: str  # the first one's name in the model: where its input's ranges are kept


def encoders(module: torch.nn.Module) -> list[torch.nn.Module]:
    from embedding_worker.engine.cpu.real_tokens import ENCODERS

    return [m for m in module.modules() if type(m).__name__ in ENCODERS]


def _targets(module: torch.nn.Module) -> list[_Target]:
    """What `quantise` replaces in each encoder layer of `module`: the products fed by a
    layer norm. BERT and MPNet: query/key/value and the feed-forward's first (`intermediate`);
    ModernBERT: `attn.Wqkv` and the gated feed-forward's `mlp.Wi`."""
    names = {id(m): name for name, m in module.named_modules()}
    found = []
    for encoder in encoders(module):
        if type(encoder).__name__ == "ModernBertModel":
            pairs = [(owner, (name,)) for layer in encoder.layers
                     for owner, name in ((layer.attn, "Wqkv"), (layer.mlp, "Wi"))]
        else:
            pairs = [pair for layer in encoder.encoder.layer
                     for pair in (_projections(layer), (layer.intermediate, ("dense",)))]
        found += [_Target(owner, attrs, names[id(getattr(owner, attrs[0]))]) for owner, attrs in pairs]
    return found


def quantisable(module: torch.nn.Module) -> str | None:
    """None where `module`'s encoders can run here; else why not, in a few words."""
    from embedding_worker.engine.cpu.real_tokens import supported

    if not can_quantise():
        return "this torch build has no oneDNN int8 kernels"
    found = encoders(module)
    if not found:
        return "int8 on a CPU covers BERT, RoBERTa, XLM-RoBERTa, MPNet and ModernBERT encoders"
    if not all(supported(encoder) for encoder in found):
        return "int8 on a CPU needs the real-token path, which this encoder's configuration is outside"
    for target in _targets(module):
        if not all(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32
                   for m in (getattr(target.owner, name) for name in target.names)):
            return "its encoder's layers are not plain float32 linear layers"
    return None


class _Ranges:
    """Per input channel, the least and greatest value each watched layer saw, by the
    layer's name in the model (so that a copy of the model finds them)."""

    def __init__(self) -> None:
        self.low: dict[str, torch.Tensor] = {}
        self.high: dict[str, torch.Tensor] = {}

    def watch(self, name: str, module: torch.nn.Module) -> Any:
        def seen(_module: torch.nn.Module, args: tuple) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            low, high = x.amin(dim=0), x.amax(dim=0)
            self.low[name] = torch.minimum(self.low.get(name, low), low)
            self.high[name] = torch.maximum(self.high.get(name, high), high)

        return module.register_forward_pre_hook(seen)

    def of(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.low[name], self.high[name]


def calibrate(module: torch.nn.Module, run_text: Any) -> _Ranges:
    """Run `run_text(text)` over ACTIVATION_TEXTS, one text a call (no padding among the
    tokens seen), watching the inputs of every layer `quantise` replaces."""
    ranges = _Ranges()
    hooks = [ranges.watch(target.key, getattr(target.owner, target.names[0])) for target in _targets(module)]
    try:
        with torch.inference_mode():
            for text in ACTIVATION_TEXTS:
                run_text(text)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def _smoothed(linears: list[torch.nn.Linear], low: torch.Tensor, high: torch.Tensor,
              activation: str = "none") -> Int8Linear:
    weight = torch.cat([m.weight.detach().float() for m in linears])
    biases = [m.bias for m in linears]
    bias = None if any(b is None for b in biases) else torch.cat([b.detach().float() for b in biases])
    reach = torch.maximum(low.abs(), high.abs()).clamp(min=1e-5)
    smooth = (reach ** SMOOTHING / weight.abs().amax(dim=0).clamp(min=1e-5) ** (1 - SMOOTHING)).clamp(min=1e-5)
    return Int8Linear(weight, bias, smooth, float((low / smooth).min()), float((high / smooth).max()), activation)


def quantise(module: torch.nn.Module, ranges: _Ranges) -> int:
    """Swap the products `_targets` finds in `module` (still at float32) for int8 ones
    calibrated by `ranges`; return how many encoder layers."""
    from embedding_worker.engine.cpu.kernels import is_erf_gelu

    for encoder in encoders(module):
        encoder._real_tokens_always = True  # real_tokens.py: query/key/value fused, no padding
    targets = _targets(module)
    for owner, names, key in targets:
        if len(names) == 3:  # query, key and value: one product, each a part of it for the model's own forward
            owner.qkv = _smoothed([getattr(owner, n) for n in names], *ranges.of(key))
            for index, name in enumerate(names):
                setattr(owner, name, _Part(owner.qkv, index))
            continue
        erf_gelu = is_erf_gelu(getattr(owner, "intermediate_act_fn", None))  # BERT's feed-forward: GELU fused in
        setattr(owner, names[0], _smoothed([getattr(owner, names[0])], *ranges.of(key), "gelu" if erf_gelu else "none"))
        if erf_gelu:
            owner.intermediate_act_fn = torch.nn.Identity()
    return len(targets) // 2
