"""The engine registry: one Infinity engine per configured model.

It loads the models (at start-up, outside any event loop), starts the engines inside the
event loop that serves jobs (Infinity binds to the loop it starts in), resolves the model
a request names, and stops the engines so the process can exit (Infinity's worker threads
are not daemons).

Every engine call goes through `call`, which keeps a failing engine from hanging the worker:
- it is bounded by REQUEST_TIMEOUT;
- it is refused at once when it would take the model past INFINITY_QUEUE_SIZE items in
  flight (memory stays bounded);
- when a forward pass raises, Infinity's worker thread dies and that engine never answers
  again: the model is marked failed at that moment, its requests in flight fail at once,
  later ones are refused at once, and the job results ask RunPod to replace the worker.
  An engine that times out STUCK_AFTER_TIMEOUTS times in a row is treated the same way.
  Other models keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from embedding_worker.errors import (
    EngineFailure,
    ModelLoadError,
    ModelNotFound,
    Overloaded,
    UnsupportedTask,
)
from embedding_worker.hardware import Hardware, choose_dtype
from embedding_worker.model_sources import ModelLocations, resolve_model
from embedding_worker.onnx_support import ensure_onnx, fix_infinity_onnx_lookup, pooling_method
from embedding_worker.settings import Backend, ModelSpec

if TYPE_CHECKING:
    from infinity_emb import AsyncEmbeddingEngine, AsyncEngineArray

log = logging.getLogger(__name__)
ResultT = TypeVar("ResultT")
STUCK_AFTER_TIMEOUTS = 3
PIPELINE_STAGES = ("encode_pre", "encode_core", "encode_post")  # each runs in its own thread


@dataclass
class DeployedModel:
    spec: ModelSpec
    engine: AsyncEmbeddingEngine
    created: int  # Unix time the model was loaded
    device: str = "cpu"  # where it runs: cuda or cpu
    dtype: str = "float32"  # the precision it runs at (DTYPES=auto resolved)
    embedding_dimension: int | None = None  # None until known (embedders only)
    max_input_tokens: int | None = None  # longer inputs are truncated to this
    failure: str | None = None  # why the engine can no longer answer
    timeouts_in_a_row: int = 0
    items_in_flight: int = 0  # admitted to the engine and not yet answered
    _failed: asyncio.Event | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(self.engine.capabilities)

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            can_do = ", ".join(sorted(self.capabilities)) or "nothing"
            raise UnsupportedTask(
                f"model: {self.name!r} cannot {capability}; it supports: {can_do}"
            )

    def mark_failed(self, reason: str) -> None:
        if self.failure is None:
            self.failure = " ".join(reason.split())[:300]
            log.error("model %r can no longer answer: %s", self.name, self.failure)
        if self._failed is not None:
            self._failed.set()

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Report a pipeline stage's exception (which ends Infinity's thread) to the loop."""
        self._failed = asyncio.Event()
        for replica in getattr(self.engine, "_model_replicas", []):
            for stage in PIPELINE_STAGES:
                setattr(replica, stage, self._guarded(getattr(replica, stage), stage, loop))

    def _guarded(self, run: Callable, stage: str, loop: asyncio.AbstractEventLoop) -> Callable:
        def guarded(*args, **kwargs):
            try:
                return run(*args, **kwargs)
            except BaseException as exc:
                reason = f"its engine failed in {stage}: {type(exc).__name__}: {exc}"
                loop.call_soon_threadsafe(self.mark_failed, reason)
                raise

        return guarded


class EngineRegistry:
    def __init__(self, models: list[DeployedModel], timeout: float, queue_size: int) -> None:
        from infinity_emb import AsyncEngineArray

        self._models = {model.name: model for model in models}
        self._array: AsyncEngineArray = AsyncEngineArray([m.engine for m in models])
        self._timeout = timeout
        self._queue_size = queue_size
        self._start_lock: asyncio.Lock | None = None
        self._started = False

    @classmethod
    def load(
        cls,
        specs: list[ModelSpec],
        locations: ModelLocations,
        *,
        hardware: Hardware,
        timeout: float,
        queue_size: int,
        onnx_quantized: bool = False,
        trust_remote_code: bool = False,
    ) -> EngineRegistry:
        """Find and load every model; raise `ModelLoadError` naming the first that fails."""
        models = [_load(spec, locations, hardware, onnx_quantized, trust_remote_code) for spec in specs]
        return cls(models, timeout, queue_size)

    @property
    def models(self) -> list[DeployedModel]:
        return list(self._models.values())

    @property
    def healthy(self) -> bool:
        return all(model.failure is None for model in self._models.values())

    def health(self) -> dict[str, str]:
        return {m.name: "failed: " + m.failure if m.failure else "ok" for m in self._models.values()}

    def resolve(self, name: str) -> DeployedModel:
        # Never Infinity's own lookup: with one engine it answers for any name.
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(
                f"model: {name!r} is not deployed; deployed: {', '.join(self._models)}"
            )
        return model

    async def start(self) -> None:
        """Start the engines in the running loop; safe to call from every job."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self._array.astart()
                loop = asyncio.get_running_loop()
                for model in self._models.values():
                    model.watch(loop)
                self._started = True

    async def stop(self) -> None:
        await self._array.astop()
        self._started = False

    def stop_outside_loop(self) -> None:
        """Stop the engines after the serving loop has ended (e.g. after `--test_input`)."""
        if self._started:
            asyncio.run(self.stop())

    async def call(
        self, model: DeployedModel, work: Callable[[], Awaitable[ResultT]], items: int
    ) -> ResultT:
        """Run `work()` on the model's engine for `items` inputs, bounded as the module says."""
        self._refuse_if_failed(model)
        # Counted here, not read from Infinity's queue: items reach that queue only after
        # tokenisation, and its batcher moves them on to internal queues it does not report.
        if model.items_in_flight + items > self._queue_size:
            raise Overloaded(
                f"model {model.name!r} is overloaded: {model.items_in_flight} items in flight, this "
                f"request adds {items}, the limit is {self._queue_size} (INFINITY_QUEUE_SIZE); retry later"
            )
        model.items_in_flight += items
        task = asyncio.ensure_future(work())
        failed = asyncio.ensure_future(model._failed.wait())
        try:
            await asyncio.wait({task, failed}, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
            model.items_in_flight -= items
        if task.done():
            model.timeouts_in_a_row = 0
            return task.result()
        task.cancel()
        self._refuse_if_failed(model)
        model.timeouts_in_a_row += 1
        if model.timeouts_in_a_row >= STUCK_AFTER_TIMEOUTS:
            model.mark_failed(f"its engine did not answer {STUCK_AFTER_TIMEOUTS} times in a row")
            self._refuse_if_failed(model)
        raise EngineFailure(f"model {model.name!r} did not answer within {self._timeout:g} s (REQUEST_TIMEOUT)")

    @staticmethod
    def _refuse_if_failed(model: DeployedModel) -> None:
        if model.failure is not None:
            raise EngineFailure(
                f"model {model.name!r} is unavailable: {model.failure}; the worker asked to be replaced",
                refresh_worker=True,
            )


def _load(
    spec: ModelSpec,
    locations: ModelLocations,
    hardware: Hardware,
    onnx_quantized: bool,
    trust_remote_code: bool,
) -> DeployedModel:
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    started = time.perf_counter()
    onnx = spec.backend is Backend.optimum
    found = resolve_model(spec.source, spec.revision, locations, onnx=onnx)
    path = found.path
    dtype = choose_dtype(spec.dtype, hardware, path, spec.backend.value, spec.name)
    try:
        if onnx:
            fix_infinity_onnx_lookup()
            path = ensure_onnx(path, locations.download_cache.parent, quantized=onnx_quantized)
        engine = AsyncEmbeddingEngine.from_args(
            EngineArgs(
                model_name_or_path=str(path),
                pooling_method=pooling_method(path),  # read by the ONNX backend only
                onnx_do_not_prefer_quantized=not onnx_quantized,
                trust_remote_code=trust_remote_code,
                served_model_name=spec.name,
                batch_size=spec.batch_size,
                engine=spec.backend.value,
                device=hardware.device,
                dtype=dtype,
                lengths_via_tokenize=True,  # usage counts tokens, not characters
                model_warmup=False,  # a warm-up costs seconds of cold start and buys nothing here
            )
        )
    except Exception as exc:  # noqa: BLE001 - any load failure ends start-up with one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model {spec.source!r}: {reason}") from exc
    if onnx:
        dtype = "int8" if onnx_quantized else "float32"
    log.info(
        "model %r: %s (%s); serving as %r (%s, %s, batch size %d) on %s; loaded in %.1f s",
        spec.source,
        found.source.value,
        path,
        spec.name,
        spec.backend.value,
        dtype,
        spec.batch_size,
        hardware.describe(),
        time.perf_counter() - started,
    )
    dimension, max_tokens = _describe(engine)
    return DeployedModel(
        spec=spec,
        engine=engine,
        created=int(time.time()),
        device=hardware.device,
        dtype=dtype,
        embedding_dimension=dimension,
        max_input_tokens=max_tokens,
    )


def _describe(engine: AsyncEmbeddingEngine) -> tuple[int | None, int | None]:
    """Embedding dimension and input token limit, where the loaded model tells them.

    Infinity keeps the loaded model on a private attribute, so read it defensively; an
    embedder's dimension is otherwise learnt from its first vectors.
    """
    replicas = getattr(engine, "_model_replicas", None) or [None]
    model = replicas[0]
    dimension = None
    if "embed" in engine.capabilities:
        get_dimension = getattr(model, "get_sentence_embedding_dimension", None)
        dimension = get_dimension() if callable(get_dimension) else None
    max_tokens = getattr(model, "max_seq_length", None) or getattr(
        getattr(model, "_infinity_tokenizer", None), "model_max_length", None
    )
    if not isinstance(max_tokens, int) or max_tokens > 1_000_000:  # "no limit" sentinels
        max_tokens = None
    return dimension, max_tokens
