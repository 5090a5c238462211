"""The engine registry: one Infinity engine per configured model.

It loads the models (at start-up, outside any event loop), starts the engines inside the
event loop that serves jobs (Infinity binds to the loop it starts in), resolves the model
a request names, and stops the engines so the process can exit (Infinity's worker threads
are not daemons).

Every engine call goes through `call`, which keeps the worker honest under load:
- admission: a request is refused at once, with a retry-later error, when it would take
  the model past INFINITY_QUEUE_SIZE items in flight, or when the backlog at the measured
  throughput would take longer than REQUEST_TIMEOUT to clear;
- each request has its own deadline, REQUEST_TIMEOUT from admission; past it the request
  fails with a clear message, its queued items are dropped, and nothing else is inferred;
- liveness comes from progress (`health.EngineHealth`): the engine is stuck only when it
  holds work and has finished no batch for REQUEST_TIMEOUT;
- when a pipeline stage raises, Infinity's thread dies and that engine never answers again:
  the model fails at that moment, its requests in flight fail at once, later ones are
  refused at once, and the job results ask RunPod to replace the worker. Other models keep
  serving. A forward pass that runs out of memory is retried in halves instead.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from embedding_worker.errors import (
    EngineFailure,
    ModelLoadError,
    ModelNotFound,
    Overloaded,
    UnsupportedTask,
)
from embedding_worker.engine.hardware import Hardware, choose_dtype
from embedding_worker.engine.health import EngineHealth
from embedding_worker.engine.model_checks import fit_text_length, fit_tokenizer_inputs, self_test
from embedding_worker.engine.model_sources import ModelLocations, resolve_model
from embedding_worker.engine.onnx_support import ensure_onnx, fix_infinity_onnx_lookup, pooling_method
from embedding_worker.prompts import ModelPrompts, read_model_prompts
from embedding_worker.settings import Backend, ModelSpec

if TYPE_CHECKING:
    from infinity_emb import AsyncEmbeddingEngine, AsyncEngineArray

log = logging.getLogger(__name__)
ResultT = TypeVar("ResultT")


@dataclass
class DeployedModel:
    spec: ModelSpec
    engine: AsyncEmbeddingEngine
    created: int  # Unix time the model was loaded
    device: str = "cpu"  # where it runs: cuda or cpu
    dtype: str = "float32"  # the precision it runs at (DTYPES=auto resolved)
    embedding_dimension: int | None = None  # None until known (embedders only)
    max_input_tokens: int | None = None  # longer inputs are truncated to this
    prompts: ModelPrompts = field(default_factory=ModelPrompts)
    architecture: str = "unknown"
    tokenizer: Any = None  # a copy of the model's tokenizer, for counting and `tokenize`
    int8_scales: dict[int, float] = field(default_factory=dict)  # per dimensions (compact.int8_scale)
    health: EngineHealth = field(init=False)
    _tokenizer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.health = EngineHealth(self.spec.name)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, special tokens included, untruncated (blocking: call in a thread)."""
        if self.tokenizer is None:
            raise UnsupportedTask(f"model: {self.name!r} has no tokenizer to count with")
        with self._tokenizer_lock:  # a fast tokenizer is not safe for concurrent calls
            return self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]

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
        return all(model.health.failure is None for model in self._models.values())

    def health(self) -> dict[str, str]:
        return {m.name: "failed: " + m.health.failure if m.health.failure else "ok" for m in self._models.values()}

    def fullness(self) -> float:
        """How full the fullest model is, 0 to 1: its items against INFINITY_QUEUE_SIZE, or
        its expected wait against REQUEST_TIMEOUT, whichever is nearer its limit."""
        fullest = 0.0
        for model in self._models.values():
            wait = model.health.expected_wait()
            fullest = max(fullest, model.health.backlog / self._queue_size,
                          0.0 if wait is None else wait / self._timeout)
        return min(1.0, fullest)

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
                    model.health.attach(model.engine, loop)
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
        health = model.health
        self._refuse_if_failed(model)
        self._admit(model, items)
        health.admit(items)
        task = asyncio.ensure_future(work())
        failed = asyncio.ensure_future(health.wait_failed())
        try:
            await asyncio.wait({task, failed}, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
        if task.done():
            health.finish(items)
            return task.result()
        task.cancel()  # Infinity skips the cancelled items still in its queue
        health.abandon(items)
        self._refuse_if_failed(model)
        if health.stuck(self._timeout):
            health.mark_failed(f"its engine finished no batch in {self._timeout:g} s while it had work")
            self._refuse_if_failed(model)
        raise EngineFailure(
            f"model {model.name!r} did not answer within {self._timeout:g} s (REQUEST_TIMEOUT): "
            "it is busy; retry later or send smaller requests"
        )

    def _admit(self, model: DeployedModel, items: int) -> None:
        """Refuse work that would overflow the queue or could not finish in time."""
        health = model.health
        # Counted here, not read from Infinity's queue: items reach that queue only after
        # tokenisation, and its batcher moves them on to internal queues it does not report.
        if health.backlog + items > self._queue_size:
            raise Overloaded(
                f"model {model.name!r} is overloaded: {health.backlog} items in flight, this "
                f"request adds {items}, the limit is {self._queue_size} (INFINITY_QUEUE_SIZE); retry later"
            )
        wait = health.expected_wait(items)
        if wait is not None and wait > self._timeout and health.backlog:
            raise Overloaded(
                f"model {model.name!r} is overloaded: {health.backlog + items} items would take "
                f"about {wait:.0f} s at {health.throughput:.0f} items/s, more than {self._timeout:g} s "
                "(REQUEST_TIMEOUT); retry later"
            )

    @staticmethod
    def _refuse_if_failed(model: DeployedModel) -> None:
        if model.health.failure is not None:
            raise EngineFailure(
                f"model {model.name!r} is unavailable: {model.health.failure}; the worker asked to be replaced",
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
    replicas = getattr(engine, "_model_replicas", [])
    for replica in replicas:
        if dropped := fit_tokenizer_inputs(replica):
            log.info("model %r: its forward pass takes no %s; the tokenizer no longer emits them",
                     spec.name, ", ".join(dropped))
        if positions := fit_text_length(replica):
            log.info("model %r: text runs to the text tower's %d positions", spec.name, positions)
    tested = sum(self_test(spec.name, replica, set(engine.capabilities), _architecture(found.path))
                 for replica in replicas)
    log.info(
        "model %r: %s (%s); serving as %r (%s, %s, batch size %d) on %s; self-test %.0f ms; loaded in %.1f s",
        spec.source,
        found.source.value,
        path,
        spec.name,
        spec.backend.value,
        dtype,
        spec.batch_size,
        hardware.describe(),
        1000 * tested,
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
        prompts=read_model_prompts(found.path, spec.prompts),
        architecture=_architecture(found.path),
        tokenizer=_own_tokenizer(replicas[0] if replicas else None),
    )


def _architecture(model_path) -> str:
    try:
        config = json.loads((model_path / "config.json").read_text())
        return (config.get("architectures") or [config.get("model_type", "unknown")])[0]
    except (OSError, ValueError):
        return "unknown"


def _own_tokenizer(model_object: Any) -> Any:
    """A private copy of the model's tokenizer (Infinity's threads use theirs)."""
    if model_object is None:
        return None
    first = model_object[0] if hasattr(model_object, "_first_module") else None
    for candidate in (getattr(model_object, "_infinity_tokenizer", None), getattr(first, "tokenizer", None),
                      getattr(model_object, "tokenizer", None),
                      getattr(getattr(model_object, "_pipe", None), "tokenizer", None),
                      getattr(getattr(model_object, "processor", None), "tokenizer", None)):
        if candidate is not None and callable(candidate):
            return copy.deepcopy(candidate)
    return None


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
    max_tokens = getattr(model, "max_seq_length", None) or getattr(model, "max_length", None) or getattr(
        getattr(model, "_infinity_tokenizer", None), "model_max_length", None
    )
    if not isinstance(max_tokens, int) or max_tokens > 1_000_000:  # "no limit" sentinels
        max_tokens = None
    return dimension, max_tokens
