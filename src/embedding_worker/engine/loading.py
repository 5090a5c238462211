"""Loading one model: find its files, build its Infinity engine on the chosen device and
precision, fit its tokenizer, self-test it, and describe it (dimension, input limit,
prompts, architecture). Any failure is one `ModelLoadError` line naming the model."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from embedding_worker.engine.deployed import DeployedModel
from embedding_worker.engine.hardware import Hardware, choose_dtype, model_config
from embedding_worker.engine.infinity_internals import replicas as replicas_of
from embedding_worker.engine.cpu.int8_gate import gate_int8
from embedding_worker.engine.kinds import PLAIN, find_kind
from embedding_worker.engine.audio_models import fit_audio_model
from embedding_worker.engine.model_checks import (
    count_usage_as_read,
    fit_text_length,
    fit_tokenizer_inputs,
    private_tokenizer,
    self_test,
)
from embedding_worker.engine.model_sources import ModelLocations, resolve_model
from embedding_worker.engine.model_sources.hub import HubAccess
from embedding_worker.engine.token_inputs import take_token_ids
from embedding_worker.engine.onnx_support import ensure_onnx, fix_infinity_onnx_lookup, pooling_method
from embedding_worker.errors import ModelLoadError
from embedding_worker.prompts import read_model_prompts
from embedding_worker.settings import Backend, ModelSpec

if TYPE_CHECKING:
    from infinity_emb import AsyncEmbeddingEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """Settings that apply to every model's loading."""

    onnx_quantized: bool = False
    trust_remote_code: bool = False
    pack_cpu_weights: bool = True  # engine/cpu/kernels.py
    download_timeout: float = 300.0  # MODEL_DOWNLOAD_TIMEOUT: how long a download may go without progress


def load_model(spec: ModelSpec, locations: ModelLocations, hardware: Hardware, options: LoadOptions) -> DeployedModel:
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    started = time.perf_counter()
    onnx = spec.backend is Backend.optimum
    found = resolve_model(spec.source, spec.revision, locations, onnx=onnx,
                          access=HubAccess.from_environment(options.download_timeout))
    path = found.path
    dtype = choose_dtype(spec.dtype, hardware, path, spec.backend.value, spec.name)
    # int8 on a CPU: loaded at float32, then quantised only through the quality gate (int8_gate)
    gated_int8 = dtype == "int8" and hardware.device == "cpu" and spec.backend is Backend.torch
    if gated_int8:
        dtype = "float32"
    kind = find_kind(path, spec.kind)
    if kind is not None and kind.torch_only and spec.backend is not Backend.torch:
        raise ModelLoadError(f"model {spec.source!r} {kind.description}, which only "
                             f"BACKEND=torch serves; it was asked for {spec.backend.value}")
    try:
        if onnx:
            fix_infinity_onnx_lookup()
            path = ensure_onnx(path, locations.download_cache.parent, quantized=options.onnx_quantized)
        args = EngineArgs(
            model_name_or_path=str(path),
            pooling_method=pooling_method(path),  # read by the ONNX backend only
            onnx_do_not_prefer_quantized=not options.onnx_quantized,
            trust_remote_code=options.trust_remote_code,
            served_model_name=spec.name,
            batch_size=spec.batch_size,
            engine=spec.backend.value,
            device=hardware.device,
            dtype=dtype,
            lengths_via_tokenize=True,  # usage counts tokens, not characters
            model_warmup=False,  # a warm-up costs seconds of cold start and buys nothing here
        )
        engine = kind.build(args) if kind is not None else AsyncEmbeddingEngine.from_args(args)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any load failure ends start-up with one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model {spec.source!r}: {reason}") from exc
    if onnx:
        dtype = "int8" if options.onnx_quantized else "float32"
    replicas = replicas_of(engine)
    if hardware.device == "cpu":
        from embedding_worker.engine.cpu.long_attention import use_blocked_attention

        use_blocked_attention()
    if gated_int8:
        fallback = "bfloat16" if hardware.cpu_native_bf16 else "float32"
        outcomes = {gate_int8(spec.name, replica, set(engine.capabilities), fallback) for replica in replicas}
        dtype = outcomes.pop() if len(outcomes) == 1 else fallback
    takes_token_ids = False
    for replica in replicas:
        if dropped := fit_tokenizer_inputs(replica):
            log.info("model %r: its forward pass takes no %s; the tokenizer no longer emits them",
                     spec.name, ", ".join(dropped))
        takes_token_ids = take_token_ids(replica)
        if positions := fit_text_length(replica):
            log.info("model %r: text runs to the text tower's %d positions", spec.name, positions)
        fit_audio_model(replica, hardware.device, dtype)
        if (options.pack_cpu_weights and spec.backend is Backend.torch and hardware.device == "cpu" and dtype != "int8"
                and getattr(replica, "packable", True)):
            from embedding_worker.engine.cpu.kernels import pack_linear_layers
            from embedding_worker.engine.cpu.real_tokens import compute_on_real_tokens

            packed = pack_linear_layers(replica)
            encoders = compute_on_real_tokens(replica) if getattr(replica, "real_tokens_safe", True) else 0
            log.info("model %r: %d linear layers packed for oneDNN%s", spec.name, packed,
                     "; computes on real tokens only" if encoders else "")
    device, dtype = placement(replicas, hardware.device, dtype)
    config = model_config(found.path)
    architecture = (config.get("architectures") or [config.get("model_type", "unknown")])[0]
    tested = sum(self_test(spec.name, replica, set(engine.capabilities), architecture) for replica in replicas)
    log.info(
        "model %r: %s (%s); serving as %r (%s, %s, batch size %d) on %s; self-test %.0f ms; loaded in %.1f s",
        spec.source,
        found.source.value,
        path,
        spec.name,
        spec.backend.value,
        dtype,
        spec.batch_size,
        hardware.describe() if device == hardware.device else device,
        1000 * tested,
        time.perf_counter() - started,
    )
    dimension, max_tokens = _describe(engine)
    model = DeployedModel(
        spec=spec,
        engine=engine,
        created=int(time.time()),
        device=device,
        dtype=dtype,
        embedding_dimension=dimension,
        max_input_tokens=max_tokens,
        prompts=read_model_prompts(found.path, spec.prompts),
        architecture=architecture,
        tokenizer=private_tokenizer(replicas[0]) if replicas else None,
        traits=kind.traits if kind is not None else PLAIN,
        activation_bytes_per_token=activation_bytes_per_token(config, dtype, max_tokens),
        pair_template=getattr(replicas[0], "pair_template", None) if replicas else None,
        takes_token_ids=takes_token_ids,
        **_media_inputs(replicas[0] if replicas else None),
    )
    if max_tokens and model.tokenizer is not None:
        for replica in replicas:
            count_usage_as_read(replica, max_tokens - sum(model.special_tokens))
    return model


def activation_bytes_per_token(config: dict, dtype: str, max_input_tokens: int | None = None) -> int | None:
    """What one token costs in a forward pass, from the model's shape: inference keeps one
    layer's activations at a time (the layer's input and output, query, key and value, the
    attention's output, the feed-forward's inner activation before and after its
    nonlinearity), at the width the activations run at, and its row of the padding mask
    transformers builds (a byte per key, up to `max_input_tokens`); attention itself is
    linear in length (`real_tokens.py`, `long_attention.py`, torch's flash and
    memory-efficient kernels)."""
    shape = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    hidden = shape.get("hidden_size") or shape.get("d_model")
    if not isinstance(hidden, int) or hidden <= 0:
        return None
    inner = shape.get("intermediate_size") or shape.get("ffn_dim") or 4 * hidden
    width = 4 if dtype in ("float32", "int8") else 2
    return width * (6 * hidden + 2 * int(inner)) + (max_input_tokens or 0)


def _describe(engine: AsyncEmbeddingEngine) -> tuple[int | None, int | None]:
    """Embedding dimension and input token limit, where the loaded model tells them.

    Infinity keeps the loaded model on a private attribute, so read it defensively; an
    embedder's dimension is otherwise learnt from its first vectors.
    """
    model = (replicas_of(engine) or [None])[0]
    dimension = getattr(model, "dimension", None)  # sparse and multi-vector encoders
    if dimension is None and "embed" in engine.capabilities:
        get_dimension = getattr(model, "get_sentence_embedding_dimension", None)
        dimension = get_dimension() if callable(get_dimension) else None
    max_tokens = getattr(model, "max_seq_length", None) or getattr(model, "max_length", None) or getattr(
        getattr(model, "_infinity_tokenizer", None), "model_max_length", None
    )
    if not isinstance(max_tokens, int) or max_tokens > 1_000_000:  # "no limit" sentinels
        max_tokens = None
    return dimension, max_tokens


def _media_inputs(model: object) -> dict[str, int | None]:
    """What an image-text model's processor makes of a picture (its largest side in pixels;
    a page reader's pixels a page is rendered at) and the sampling rate an audio-text model takes, read from Infinity's replica."""
    processor = getattr(getattr(model, "processor", None), "image_processor", None)
    sides = [value for size in (getattr(processor, "size", None), getattr(processor, "crop_size", None))
             if isinstance(size, dict) for value in size.values() if isinstance(value, int)]
    side = getattr(model, "image_side", None) or (max(sides) if sides else None)  # a page reader says its own
    rate = getattr(model, "sampling_rate", None)
    return {"image_side": side, "page_pixels": getattr(model, "page_pixels", None),
            "page_tokens": getattr(model, "page_tokens", None),
            "sampling_rate": rate if isinstance(rate, int) else None}


def placement(replicas: list, device: str, dtype: str) -> tuple[str, str]:
    """The device and precision a torch model really runs at, read from its own parameters
    (what was asked, for other backends and for int8 and fp8, whose packed weights are not
    parameters)."""
    if dtype in ("int8", "fp8"):
        return device, dtype
    import torch

    for replica in replicas:
        modules = [replica] if isinstance(replica, torch.nn.Module) else [
            value for value in vars(replica).values() if isinstance(value, torch.nn.Module)]
        for module in modules:
            for parameter in module.parameters():
                return parameter.device.type, str(parameter.dtype).removeprefix("torch.")
    return device, dtype
