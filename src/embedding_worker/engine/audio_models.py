"""CLAP-style models as Infinity runs them, fitted to give transformers' vectors cheaply.

- Features: Infinity calls the processor with `padding=True`, which the CLAP feature
  extractor reads as its padding *mode* and so pads a clip shorter than its window with
  silence, where the model's own mode (`repeatpad`) repeats the clip. The vectors then
  differ from `ClapModel.get_audio_features` on the processor's defaults; `fit_audio_model`
  has text padded by the tokenizer and audio featurised with the extractor's own settings.
- Placement: Infinity leaves a CLAP model on the CPU at float32 whatever the device and
  dtype asked; on a GPU it is moved and cast here, its audio features cast to match and its
  outputs read back as float32. On a CPU it stays at float32, and `/v1/models` says so.
- Usage: Infinity counts every item's tokens, and spells an audio clip for it as the word
  "token" repeated once per sample: for a 10 s clip at 48 kHz, a 2.4 MB string through the
  tokenizer on every request. A clip counts no tokens here (usage counts text, as for
  images) and costs no tokenizing. Infinity counts a text at the padded length of the
  model's input (64 for every text of a tiny CLAP); here a text counts its real tokens.
"""

from __future__ import annotations

from typing import Any

AUDIO_STAND_IN = "an audio is worth a repeated"  # how Infinity spells an audio item for its usage count


def fit_audio_model(model_object: Any, device: str = "cpu", dtype: str = "float32") -> bool:
    """Fit a CLAP-style replica as the module says; False for any other model."""
    if "audio_embed" not in getattr(model_object, "capabilities", ()):
        return False
    import torch

    if device != "cpu":  # on a CPU it stays at float32, and says so (`loading.placement`)
        precision = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype, torch.float32)
        model_object.model.to(device=torch.device(device), dtype=precision)

    def normalized(tensor: Any) -> Any:  # Infinity's own cannot turn half precision into numpy
        if tensor is None:
            return iter([])
        tensor = tensor.float()
        return iter((tensor / tensor.norm(p=2, dim=-1, keepdim=True)).cpu().numpy())

    model_object._normalize_cpu = normalized
    processor = model_object.processor

    def count(texts: list[str]) -> list[int]:
        encoded = processor.tokenizer(texts, truncation=True, max_length=model_object.max_length,
                                      return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode_pre(items: list) -> tuple[dict, list[bool]]:
        is_audio = [not isinstance(item, str) for item in items]
        texts = [item for item in items if isinstance(item, str)]
        clips = [item for item in items if not isinstance(item, str)]
        features: dict = {}
        if texts:
            features.update(processor.tokenizer(texts, padding=True, return_tensors="pt"))
        if clips:
            features.update(processor.feature_extractor(clips, sampling_rate=model_object.sampling_rate,
                                                        return_tensors="pt"))
        features.pop("token_type_ids", None)
        model = model_object.model
        return {key: value.to(model.device, dtype=model.dtype if value.is_floating_point() else None)
                for key, value in features.items()}, is_audio

    def text_lengths(texts: list[str]) -> list[int]:
        lengths = dict.fromkeys((i for i, text in enumerate(texts) if text.startswith(AUDIO_STAND_IN)), 0)
        words = [(i, text) for i, text in enumerate(texts) if i not in lengths]
        lengths.update(zip((i for i, _ in words), count([text for _, text in words]) if words else []))
        return [lengths[i] for i in range(len(texts))]

    model_object.encode_pre = encode_pre
    model_object.tokenize_lengths = text_lengths
    return True
