"""Build the worker from the environment: settings -> engines -> service -> handler.

Both entry points (`src/handler.py` for RunPod, `src/local_endpoint.py` for local use)
call `build_worker`, so they serve with the very same handler.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from embedding_worker.engine.registry import EngineRegistry
from embedding_worker.errors import WorkerError
from embedding_worker.engine.hardware import detect_hardware
from embedding_worker.serving.job_handler import JobHandler
from embedding_worker.engine.model_sources import ModelLocations
from embedding_worker.service import EmbeddingService
from embedding_worker.settings import WorkerSettings, load_settings


@dataclass(frozen=True)
class Worker:
    settings: WorkerSettings
    registry: EngineRegistry
    handler: JobHandler


def configure_logging() -> None:
    """One plain line per message for the worker's own log (Infinity's handler wraps lines)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("embedding_worker")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def build_worker() -> Worker:
    """Read settings and load every model; raise `WorkerError` (one line) on failure."""
    settings = load_settings()
    settings.export_engine_environment()  # before Infinity is first imported
    hardware = detect_hardware(settings.device, os.environ)  # before any model: fail in seconds
    locations = ModelLocations.of(settings.baked_hf_cache, settings.runpod_volume_dir)
    registry = EngineRegistry.load(
        settings.models,
        locations,
        hardware=hardware,
        timeout=settings.request_timeout,
        queue_size=settings.infinity_queue_size,
        onnx_quantized=settings.onnx_quantized,
        trust_remote_code=settings.trust_remote_code,
    )
    handler = JobHandler(EmbeddingService(registry), settings.runpod_max_concurrency, settings.limits)
    return Worker(settings, registry, handler)


def start_worker() -> Worker | None:
    """For the entry points: log setup, then `build_worker`; on failure, print one line."""
    configure_logging()
    try:
        return build_worker()
    except WorkerError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def import_runpod():
    """Import runpod without its slowest start-up step.

    runpod's debugger module calls `cpuinfo.get_cpu_info()` at import, which spawns a
    subprocess and takes about a second of every cold start, for a CPU name it only shows
    in debug output. Reading the name from /proc/cpuinfo gives the same answer at once.
    """
    import cpuinfo

    # runpod logs at DEBUG by default: three lines a job, each stringifying the output.
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    cpuinfo.get_cpu_info = lambda: {"brand_raw": cpu_name()}
    import runpod

    return runpod


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"
