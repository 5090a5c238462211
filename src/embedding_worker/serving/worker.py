"""Build the worker from the environment: settings -> engines -> service -> handler.

Both entry points (`src/handler.py` for RunPod, `src/local_endpoint.py` for local use)
call `build_worker`, so they serve with the very same handler.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

from embedding_worker.engine.cpu.memory import MemoryTrimmer
from embedding_worker.engine.registry import EngineRegistry
from embedding_worker.engine.loading import LoadOptions
from embedding_worker.errors import SettingsError, WorkerError
from embedding_worker.engine.hardware import detect_hardware
from embedding_worker.engine.lean_imports import import_infinity
from embedding_worker.serving.job_handler import JobHandler
from embedding_worker.engine.model_sources import ModelLocations
from embedding_worker.service import EmbeddingService
from embedding_worker.serving.logs import configure_logging, print_error
from embedding_worker.serving.metrics import metrics
from embedding_worker.serving.preflight import check_process_inputs
from embedding_worker.settings import WorkerSettings, load_settings


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    settings: WorkerSettings
    registry: EngineRegistry
    handler: JobHandler
    trimmer: MemoryTrimmer


def build_worker(settings: WorkerSettings | None = None) -> Worker:
    """Load every model of `settings` (read from the environment if not given); raise
    `WorkerError` (one line) on failure."""
    if settings is None:
        settings = load_settings()
        settings.export_engine_environment()
    hardware = detect_hardware(settings.device, os.environ)  # before any model: fail in seconds
    locations = ModelLocations.of(settings.baked_hf_cache, settings.runpod_volume_dir)
    registry = EngineRegistry.load(
        settings.models,
        locations,
        hardware=hardware,
        timeout=settings.request_timeout,
        queue_size=settings.infinity_queue_size,
        options=LoadOptions(settings.onnx_quantized, settings.trust_remote_code, settings.pack_cpu_weights,
                            settings.model_download_timeout),
    )
    for model in registry.models:
        free = free_memory(model.device)
        budget = batch_token_budget(settings, model.name, model.max_input_tokens,
                                    model.activation_bytes_per_token, free)
        model.health.max_batch_tokens = budget
        if budget:
            cost = "" if not model.activation_bytes_per_token else (
                f": about {budget * model.activation_bytes_per_token / 2**20:,.0f} MiB of activations for its "
                f"shape, of {free / 2**30:,.1f} GiB free on {model.device}")
            log.info("model %r: a forward pass takes at most %d padded tokens (MAX_BATCH_TOKENS)%s; a batch past it "
                     "runs in parts", model.name, budget, cost)
    registry.observe_batches(metrics().for_model)
    metrics().health_sources.append(registry.health)
    service = EmbeddingService(registry, settings.media_limits, settings.max_output_values,
                               chunked_by_default=settings.long_inputs_chunked,
                               max_request_tokens=settings.max_request_tokens)
    handler = JobHandler(service, settings.runpod_max_concurrency, settings.limits)
    trimmer = MemoryTrimmer(every=settings.memory_trim_interval)
    return Worker(settings, registry, handler, trimmer.start() if settings.memory_trim_interval else trimmer)


def batch_token_budget(settings: WorkerSettings, model: str, max_input_tokens: int | None,
                       bytes_per_token: int | None = None, free: int | None = None) -> int | None:
    """The padded tokens a forward pass of `model` may take.

    MAX_BATCH_TOKENS as set; one set smaller than one input of the model's longest cannot
    hold the model's own input, and start-up fails in one line. The default is sized from
    the model and the device: MAX_BATCH_TOKENS' default, lowered until the activations of
    one pass (`bytes_per_token`, from the model's shape) take at most a quarter of the
    device's `free` memory (BUDGET_SHARE), and raised to one input of the model's longest.
    """
    budget = settings.max_batch_tokens
    explicit = "max_batch_tokens" in settings.model_fields_set
    if not budget:
        return None
    if max_input_tokens and budget < max_input_tokens and explicit:
        raise SettingsError(f"MAX_BATCH_TOKENS: {budget} cannot hold one input of model {model!r}, which takes up "
                            f"to {max_input_tokens} tokens; set at least {max_input_tokens}, or 0 for no bound")
    if explicit:
        return budget
    if bytes_per_token and free:
        budget = min(budget, max(1, int(BUDGET_SHARE * free / bytes_per_token)))
    return max(budget, max_input_tokens or 0)


BUDGET_SHARE = 0.25  # of the device's free memory after loading, for one forward pass's activations


def free_memory(device: str) -> int | None:
    """Bytes free on `device` now: the GPU's, or the memory this process may still take."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    from embedding_worker.engine.cpu.memory import available_memory

    return available_memory()


def exit_while_loading() -> NoReturn:
    """SIGTERM while the models load: the load runs in a thread that Python cannot stop (a
    download, torch reading weights), so the process ends here, at once, with status 0; a
    download cut short is taken over by the next worker (`model_sources/download.py`)."""
    log.info("stopping while the models load: the load is abandoned")
    logging.shutdown()
    os._exit(0)


def start_worker(settings: WorkerSettings | None = None) -> Worker | None:
    """For the entry points: log setup, settings and the engine's environment (unless given,
    read and set already), Infinity's import, then `build_worker`; on failure, print one line."""
    configure_logging()
    try:
        if settings is None:
            check_process_inputs(sys.argv, os.environ)
            settings = load_settings()
            # What Infinity and the math libraries read when imported (queue size, thread pools)...
            settings.export_engine_environment()
        # ...then Infinity, without the backends this process does not serve.
        import_infinity(settings.backend.value)
        configure_logging()  # again: Infinity put its own handler on the root logger
        return build_worker(settings)
    except WorkerError as err:
        print_error(str(err))
        return None
