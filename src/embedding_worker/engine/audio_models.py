"""CLAP-style models as Infinity runs them, fitted to give transformers' vectors cheaply.

- Features: Infinity calls the processor with `padding=True`, which the CLAP feature
  extractor reads as its padding *mode* and so pads a clip shorter than its window with
  silence, where the model's own mode (`repeatpad`) repeats the clip. The vectors then
  differ from `ClapModel.get_audio_features` on the processor's defaults; `fit_audio_model`
  has text padded by the tokenizer and audio featurised with the extractor's own settings.
- Usage: Infinity counts every item's tokens, and spells an audio clip for it as the word
  "token" repeated once per sample: for a 10 s clip at 48 kHz, a 2.4 MB string through the
  tokenizer on every request. A clip counts no tokens here (usage counts text, as for
  images) and costs no tokenizing. Infinity counts a text at the padded length of the
  model's input (64 for every text of a tiny CLAP); here a text counts its real tokens.
"""

from __future__ import annotations

from typing import Any

AUDIO_STAND_IN = "an audio is worth a repeated"  # how Infinity spells an audio item for its usage count


def fit_audio_model(model_object: Any) -> bool:
    """Fit a CLAP-style replica as the module says; False for any other model."""
    if "audio_embed" not in getattr(model_object, "capabilities", ()):
        return False
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
        return {key: value.to(model_object.model.device) for key, value in features.items()}, is_audio

    def text_lengths(texts: list[str]) -> list[int]:
        lengths = dict.fromkeys((i for i, text in enumerate(texts) if text.startswith(AUDIO_STAND_IN)), 0)
        words = [(i, text) for i, text in enumerate(texts) if i not in lengths]
        lengths.update(zip((i for i, _ in words), count([text for _, text in words]) if words else []))
        return [lengths[i] for i in range(len(texts))]

    model_object.encode_pre = encode_pre
    model_object.tokenize_lengths = text_lengths
    return True
