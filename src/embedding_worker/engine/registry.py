"""The engine registry: one Infinity engine per configured model.

It loads the models (at start-up, outside any event loop), starts the engines inside the
event loop that serves jobs (Infinity binds to the loop it starts in), resolves the model
a request names, and stops the engines so the process can exit (Infinity's worker threads
are not daemons).

Every engine call goes through `call`, which keeps the worker honest under load:
- admission: a request is refused at once, with a retry-later error, when it would take
  the model past INFINITY_QUEUE_SIZE items in flight, or when the backlog, counted in
  tokens (`health.work_units`), at the measured throughput would take longer than
  REQUEST_TIMEOUT to clear;
- each request has its own deadline, REQUEST_TIMEOUT from admission; past it the request
  fails with a clear message, its queued items are dropped, and nothing else is inferred;
  a request whose job is cancelled drops its queued items the same way;
- liveness comes from progress (`health.EngineHealth`): the engine is stuck only when it
  holds work and has finished no batch for REQUEST_TIMEOUT;
- when a pipeline stage raises, Infinity's thread dies and that engine never answers again:
  the model fails at that moment, its requests in flight fail at once, later ones are
  refused at once, and the job results ask RunPod to replace the worker. Other models keep
  serving. A forward pass that runs out of memory is retried in halves instead.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from embedding_worker.errors import (
    EngineFailure,
    ModelNotFound,
    Overloaded,
)
from embedding_worker.engine.batching import BatchObserver, use_full_batches
from embedding_worker.engine.deployed import DeployedModel
from embedding_worker.engine.health import work_units
from embedding_worker.engine.infinity_internals import replace_result_queue, replicas
from embedding_worker.engine.result_delivery import ResultsOnTheLoop
from embedding_worker.engine.token_inputs import tokenize_on_arrival
from embedding_worker.engine.hardware import Hardware
from embedding_worker.engine.loading import LoadOptions, load_model
from embedding_worker.engine.model_sources import ModelLocations
from embedding_worker.settings import ModelSpec

if TYPE_CHECKING:
    from infinity_emb import AsyncEngineArray

log = logging.getLogger(__name__)
ResultT = TypeVar("ResultT")


class EngineRegistry:
    def __init__(self, models: list[DeployedModel], timeout: float, queue_size: int) -> None:
        from infinity_emb import AsyncEngineArray

        self._models = {model.name: model for model in models}
        self._array: AsyncEngineArray = AsyncEngineArray([m.engine for m in models])
        self._timeout = timeout
        self._queue_size = queue_size
        self._start_lock: asyncio.Lock | None = None
        self._started = False
        self._observer: Callable[[str], BatchObserver] | None = None  # by model name

    def observe_batches(self, observer: Callable[[str], BatchObserver]) -> None:
        """Have each model's batch queue report its waits, batch sizes and forward passes
        (from the engines' start on)."""
        self._observer = observer

    @classmethod
    def load(
        cls,
        specs: list[ModelSpec],
        locations: ModelLocations,
        *,
        hardware: Hardware,
        timeout: float,
        queue_size: int,
        options: LoadOptions = LoadOptions(),
    ) -> EngineRegistry:
        """Find and load every model; raise `ModelLoadError` naming the first that fails."""
        models = [load_model(spec, locations, hardware, options) for spec in specs]
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
                    use_full_batches(model.engine, self._observer(model.name) if self._observer else None)
                    replace_result_queue(model.engine, partial(ResultsOnTheLoop, loop))
                    if model.takes_token_ids:
                        tokenize_on_arrival(model.engine, replicas(model.engine)[0])
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
        self, model: DeployedModel, work: Callable[[], Awaitable[ResultT]], inputs: Sequence[Any]
    ) -> ResultT:
        """Run `work()` on the model's engine for `inputs` (what it hands the engine: texts,
        pairs, pictures), bounded as the module says."""
        health = model.health
        items, units = len(inputs), sum(work_units(item, health.media_units) for item in inputs)
        self._refuse_if_failed(model)
        self._admit(model, items, units)
        health.admit(items, units)
        task = asyncio.ensure_future(work())
        failed = asyncio.ensure_future(health.wait_failed())
        try:
            await asyncio.wait({task, failed}, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the job was cancelled: its queued items are dropped
            task.cancel()
            health.abandon(items, units)
            raise
        finally:
            failed.cancel()
        if task.done():
            health.finish(items, units)
            return task.result()
        task.cancel()  # Infinity skips the cancelled items still in its queue
        health.abandon(items, units)
        self._refuse_if_failed(model)
        if health.stuck(self._timeout):
            health.mark_failed(f"its engine finished no batch in {self._timeout:g} s while it had work")
            self._refuse_if_failed(model)
        raise EngineFailure(
            f"model {model.name!r} did not answer within {self._timeout:g} s (REQUEST_TIMEOUT): "
            "it is busy; retry later or send smaller requests"
        )

    def _admit(self, model: DeployedModel, items: int, units: int) -> None:
        """Refuse work that would overflow the queue or could not finish in time."""
        health = model.health
        # Counted here, not read from Infinity's queue: items reach that queue only after
        # tokenisation, and its batcher moves them on to internal queues it does not report.
        if health.backlog + items > self._queue_size:
            raise Overloaded(
                f"model {model.name!r} is overloaded: {health.backlog} items in flight, this "
                f"request adds {items}, the limit is {self._queue_size} (INFINITY_QUEUE_SIZE); retry later"
            )
        wait = health.expected_wait(units)
        if wait is not None and wait > self._timeout and health.backlog:
            raise Overloaded(
                f"model {model.name!r} is overloaded: {health.backlog_units + units:,} tokens of work would take "
                f"about {wait:.0f} s at {health.throughput:,.0f} tokens/s, more than {self._timeout:g} s "
                "(REQUEST_TIMEOUT); retry later"
            )

    @staticmethod
    def _refuse_if_failed(model: DeployedModel) -> None:
        if model.health.failure is not None:
            raise EngineFailure(
                f"model {model.name!r} is unavailable: {model.health.failure}; the worker asked to be replaced",
                refresh_worker=True,
            )
