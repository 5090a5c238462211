"""Before a model takes jobs: make its tokenizer fit its forward pass, then prove it serves.

- A tokenizer decides the inputs the forward pass receives. One that emits `token_type_ids`
  for a model whose forward takes none (ModernBERT, Qwen3 and other decoders) passes
  loading, then raises on the first job and kills the engine's thread. Such tokenizers are
  told to stop emitting them.
- A self-test runs one tiny input through the model's own pipeline stages (tokenise,
  forward, post-process), the very functions Infinity's threads call, before the engine
  starts. A model that cannot serve fails start-up with one line naming the stage and the
  error, instead of failing its first job and asking for a new worker.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections.abc import Iterator
from typing import Any

from embedding_worker.errors import ModelLoadError

log = logging.getLogger(__name__)
SELF_TEST_TEXT = "self-test"


def fit_tokenizer_inputs(model_object: Any) -> list[str]:
    """Drop tokenizer outputs the forward pass does not take; return what was dropped."""
    dropped = []
    for tokenizer, module in _tokenizers_and_models(model_object):
        names = list(getattr(tokenizer, "model_input_names", []) or [])
        accepted = _forward_parameters(module)
        if accepted is None:
            continue
        extra = [name for name in names if name not in accepted and name != "input_ids"]
        if extra:
            tokenizer.model_input_names = [name for name in names if name not in extra]
            dropped += extra
    return sorted(set(dropped))


ROBERTA_STYLE_TEXT = ("roberta", "xlm-roberta", "clap_text_model")  # CLAP's text tower is RoBERTa
def fit_text_length(model_object: Any) -> int | None:
    """CLIP-style models: let text run to the text tower's full length.

    Infinity truncates their text to the model config's `max_length`, which for most of
    them is transformers' generation default of 20 tokens, not the text tower's 77 (CLIP)
    or 64 (SigLIP) positions."""
    text_config = getattr(getattr(getattr(model_object, "model", None), "config", None), "text_config", None)
    positions = getattr(text_config, "max_position_embeddings", None)
    if isinstance(positions, int) and getattr(text_config, "model_type", "") in ROBERTA_STYLE_TEXT:
        positions -= (getattr(text_config, "pad_token_id", None) or 1) + 1  # positions start after padding's
    if isinstance(positions, int) and hasattr(model_object, "max_length") and model_object.max_length != positions:
        model_object.max_length = positions
        return positions
    return None


def count_usage_as_read(model_object: Any, room: int) -> None:
    """Usage counts the text tokens the model reads, special tokens aside: a text cut at the
    model's limit counts the `room` its special tokens leave (254 of a 256-token model's), as
    a short one counts its own tokens. Infinity's count cuts at the tokenizer's length,
    special tokens aside."""
    lengths = getattr(model_object, "tokenize_lengths", None)
    if callable(lengths) and room > 0:
        model_object.tokenize_lengths = lambda sentences: [min(n, room) for n in lengths(sentences)]


def self_test(model_name: str, model_object: Any, capabilities: set[str], architecture: str) -> float:
    """Run one tiny input through the pipeline stages; return the seconds it took."""
    started = time.perf_counter()
    item: Any = (SELF_TEST_TEXT, SELF_TEST_TEXT) if "rerank" in capabilities else SELF_TEST_TEXT
    stage = "encode_pre"
    try:
        features = model_object.encode_pre([item])
        stage = "encode_core"
        output = model_object.encode_core(features)
        stage = "encode_post"
        model_object.encode_post(output)
    except Exception as exc:  # noqa: BLE001 - reported as the model's start-up failure
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ModelLoadError(
            f"model {model_name!r} ({architecture}) cannot serve: its self-test failed in {stage}: "
            f"{type(exc).__name__}: {reason}"
        ) from exc
    return time.perf_counter() - started


def private_tokenizer(model_object: Any) -> Any:
    """A copy of the model's tokenizer for counting and `tokenize` (Infinity's threads use theirs)."""
    processor = getattr(model_object, "processor", None)  # CLIP-style models
    candidates = [getattr(model_object, "_infinity_tokenizer", None),
                  *(tokenizer for tokenizer, _ in _tokenizers_and_models(model_object)),
                  getattr(processor, "tokenizer", None)]
    return next((copy.deepcopy(c) for c in candidates if c is not None and callable(c)), None)


def _tokenizers_and_models(model_object: Any) -> Iterator[tuple[Any, Any]]:
    """(tokenizer, torch module) pairs of Infinity's model classes, where they have them."""
    first = model_object[0] if hasattr(model_object, "_first_module") else None  # sentence-transformers
    if first is not None and hasattr(first, "tokenizer") and hasattr(first, "auto_model"):
        yield first.tokenizer, first.auto_model
    for owner in (model_object, getattr(model_object, "_pipe", None)):  # cross-encoders, classifiers
        if owner is not None and hasattr(owner, "tokenizer") and hasattr(owner, "model"):
            yield owner.tokenizer, owner.model


def _forward_parameters(module: Any) -> set[str] | None:
    forward = getattr(module, "forward", None)
    if forward is None:
        return None
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None  # takes **kwargs: cannot tell
    return set(parameters)
