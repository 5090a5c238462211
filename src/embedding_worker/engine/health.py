"""Is an engine alive, and how much work does it hold? Judged by progress, not latency.

Infinity runs each model's pipeline (tokenise -> forward pass -> post-process) in its own
threads. `EngineHealth.attach` wraps those stages so that the serving loop learns of:
- every finished batch (progress): when, how many items, and the throughput so far;
- a stage that raises: Infinity's thread has died and the engine will never answer again,
  so the model fails at once;
- a forward pass that runs out of memory: retried in halves of the batch, so that one
  oversized batch fails nothing and the engine keeps serving; a batch of more padded tokens
  than MAX_BATCH_TOKENS is run in halves from the start, so that long inputs never meet
  BATCH_SIZES in one forward pass. The halves are made from the
  batch's items, not its features: each half goes through the model's own pre-processing
  again, so every kind of model splits alike (dicts, `BatchEncoding`s, CLIP's and CLAP's
  tuples, ColBERT's per-item lists, audio features), and the post-processing joins the
  halves' results. The retry starts only after the failed attempt's exception and traceback
  are released, its tensors collected and the GPU's cache emptied: a traceback holds every
  tensor of the failed forward pass, and on a nearly full GPU the halves would fail too.

A request queued behind others is not a sign of a dead engine. An engine is stuck only when
it holds work and has finished no batch for REQUEST_TIMEOUT seconds.

Work is counted in tokens as the request's price counts them (`work_units`: a text's bound,
a pair's two texts, a window's ids, a picture or clip as MEDIA_UNITS), both when a request is
admitted and as the pipeline finishes batches, so the expected wait (backlog over throughput)
weighs a long document as the long document it is, not as one item.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from embedding_worker.engine.infinity_internals import replicas
from embedding_worker.engine.token_inputs import TokenIds
from embedding_worker.pricing import token_bound

log = logging.getLogger(__name__)

PIPELINE_STAGES = ("encode_pre", "encode_core", "encode_post")  # each runs in its own thread
THROUGHPUT_SMOOTHING = 0.3  # weight of the newest batch in the throughput average
MEDIA_UNITS = 256  # a picture or a clip weighs as a text of this many tokens (a ViT's patches, about)


def work_units(item: Any, media_units: int = MEDIA_UNITS) -> int:
    """What one engine input weighs, in tokens as priced (`media_units`: a picture's or a
    clip's, the model's own where it says: a page reader's page)."""
    if isinstance(item, TokenIds):
        return len(item.ids)
    if isinstance(item, str):
        return token_bound(item)
    if isinstance(item, tuple):  # a rerank pair
        return sum(work_units(part, media_units) for part in item)
    return media_units


class EngineHealth:
    """Progress, backlog and failure of one model's engine (read and written on the loop,
    except the counters named as written by a pipeline thread)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failure: str | None = None  # why the engine can no longer answer
        self.items_in_flight = 0  # admitted for requests still waiting for their answer
        self.units_in_flight = 0  # their work, in tokens (`work_units`)
        self.media_units = MEDIA_UNITS  # what one of its pictures weighs (a page reader's: its page tokens)
        self.busy_since: float | None = None  # when the backlog last rose from 0
        self.last_progress = 0.0  # when the engine last finished a batch
        self.started_items = 0  # items that entered the pipeline (pre-processing thread only)
        self.completed_items = 0  # items the pipeline finished
        self.started_units = 0  # their work (pre-processing thread only)
        self.completed_units = 0
        self.throughput: float | None = None  # work units (tokens) per second while busy; None until measured
        self.oom_retries = 0  # forward passes that ran out of memory and were split
        self.max_batch_tokens: int | None = None  # MAX_BATCH_TOKENS: padded tokens per forward pass
        self._orphan_mark = 0  # items that had entered the pipeline when a request last gave up
        self._orphan_units = 0  # their work
        self._batch_units: deque[int] = deque()  # each batch's work, from pre-processing to its results
        self._failed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- the pipeline's side -------------------------------------------------------------
    def attach(self, engine: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Wrap the engine's pipeline stages (call once, in the loop that serves jobs)."""
        self._loop = loop
        self._failed = asyncio.Event()
        for replica in replicas(engine):
            pre, core, post = (getattr(replica, stage) for stage in PIPELINE_STAGES)
            batches = _BatchItems()
            replica.encode_pre = self._guarded(self._counting(batches.remembering(pre)), "encode_pre")
            replica.encode_core = self._guarded(self._splitting_on_oom(core, pre, batches), "encode_core")
            replica.encode_post = self._guarded(self._reporting(_joining_halves(post)), "encode_post")

    def _guarded(self, run: Callable, stage: str) -> Callable:
        def guarded(*args, **kwargs):
            try:
                return run(*args, **kwargs)
            except BaseException as exc:
                reason = f"its engine failed in {stage}: {type(exc).__name__}: {exc}"
                self._loop.call_soon_threadsafe(self.mark_failed, reason)
                raise

        return guarded

    def _counting(self, run: Callable) -> Callable:
        def counting(items, *args, **kwargs):
            features = run(items, *args, **kwargs)
            units = sum(work_units(item, self.media_units) for item in items)
            self._batch_units.append(units)  # the pipeline keeps batches in order
            self.started_items += len(items)
            self.started_units += units
            return features

        return counting

    def _reporting(self, run: Callable) -> Callable:
        def reporting(*args, **kwargs):
            results = run(*args, **kwargs)
            units = self._batch_units.popleft() if self._batch_units else len(results)
            self._loop.call_soon_threadsafe(self._progress, len(results), units)
            return results

        return reporting

    def _splitting_on_oom(self, run: Callable, pre: Callable, batches: _BatchItems) -> Callable:
        def forward(features, *args, **kwargs):
            items = batches.take(features)
            splittable = items is not None and len(items) >= 2
            if not (splittable and self.max_batch_tokens and _padded_tokens(features) > self.max_batch_tokens):
                try:
                    return run(features, *args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - only an out-of-memory is retried, below
                    if not _is_out_of_memory(exc) or not splittable:
                        raise
                # Here the exception and its traceback, which held the failed attempt's tensors,
                # are gone; cycles through them are collected and the GPU's cache handed back.
                features = None
                _release_memory()
                self.oom_retries += 1
                log.warning("model %r: a batch of %d ran out of memory; retrying it in halves", self.name,
                            len(items))
            middle = len(items) // 2
            parts = []
            for half in (items[:middle], items[middle:]):
                half_features = batches.pre_process(pre, half)
                parts.append(forward(half_features, *args, **kwargs))
            return _Halves(parts)

        return forward

    def _progress(self, items: int, units: int) -> None:
        now = time.monotonic()
        since = max(self.last_progress, self.busy_since or now)
        if now > since and units:
            sample = units / (now - since)
            self.throughput = sample if self.throughput is None else (
                THROUGHPUT_SMOOTHING * sample + (1 - THROUGHPUT_SMOOTHING) * self.throughput)
        self.last_progress = now
        self.completed_items += items
        self.completed_units += units
        if self.backlog == 0:
            self.busy_since = None

    # --- the serving loop's side ---------------------------------------------------------
    def mark_failed(self, reason: str) -> None:
        if self.failure is None:
            self.failure = " ".join(reason.split())[:300]
            log.error("model %r can no longer answer: %s", self.name, self.failure)
        if self._failed is not None:
            self._failed.set()

    async def wait_failed(self) -> None:
        await self._failed.wait()

    @property
    def backlog(self) -> int:
        """Items the engine still has to compute: those of requests waiting for an answer,
        and those of requests that gave up but had already entered a batch."""
        return self.items_in_flight + max(0, self._orphan_mark - self.completed_items)

    @property
    def backlog_units(self) -> int:
        """The backlog's work, in tokens (`work_units`)."""
        return self.units_in_flight + max(0, self._orphan_units - self.completed_units)

    def expected_wait(self, extra_units: int = 0) -> float | None:
        """Seconds to finish the backlog plus `extra_units` of work, at the measured throughput."""
        if not self.throughput:
            return None
        return (self.backlog_units + extra_units) / self.throughput

    def admit(self, items: int, units: int) -> None:
        if self.backlog == 0:
            self.busy_since = time.monotonic()
        self.items_in_flight += items
        self.units_in_flight += units

    def finish(self, items: int, units: int) -> None:
        self.items_in_flight -= items
        self.units_in_flight -= units
        if self.backlog == 0:
            self.busy_since = None

    def abandon(self, items: int, units: int) -> None:
        """A request gave up (its deadline passed): Infinity drops its items still queued,
        but computes those already in a batch, which stay in the backlog until everything
        that had entered the pipeline by now has come out."""
        self._orphan_mark = max(self._orphan_mark, self.started_items)
        self._orphan_units = max(self._orphan_units, self.started_units)
        self.finish(items, units)

    def stuck(self, timeout: float) -> bool:
        """It holds work and has finished no batch for `timeout` seconds."""
        if self.backlog == 0 or self.busy_since is None:
            return False
        return time.monotonic() - max(self.last_progress, self.busy_since) >= timeout


def _is_out_of_memory(exc: Exception) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def _padded_tokens(features: Any) -> int:
    """The padded token positions a forward pass of `features` computes (0 when it has no
    token ids: pictures, audio)."""
    if hasattr(features, "keys") and "input_ids" in features.keys():
        ids = features["input_ids"]
        return int(ids.numel()) if hasattr(ids, "numel") else sum(len(row) for row in ids)
    children = features.values() if hasattr(features, "values") else features if isinstance(features, (list, tuple)) \
        else ()
    return max((_padded_tokens(child) for child in children if isinstance(child, (dict, list, tuple))
                or hasattr(child, "keys")), default=0)


class _BatchItems:
    """The items each batch's features were made from, from pre-processing to the forward
    pass, which may need to make halves of them again. Kept for the last KEPT batches (the
    pipeline holds a few tokenized batches ahead of the forward pass), with the features
    themselves, so a recycled `id` can never pair a batch with another's items."""

    KEPT = 8

    def __init__(self) -> None:
        self._items: OrderedDict[int, tuple[Any, list]] = OrderedDict()
        self._lock = threading.Lock()
        self._pre_lock = threading.Lock()

    def remember(self, features: Any, items: list) -> None:
        with self._lock:
            self._items[id(features)] = (features, list(items))
            while len(self._items) > self.KEPT:
                self._items.popitem(last=False)

    def take(self, features: Any) -> list | None:
        with self._lock:
            kept, items = self._items.pop(id(features), (None, None))
        return items if kept is features else None

    def pre_process(self, pre: Callable, items: list, *args, **kwargs) -> Any:
        """`pre(items)`, one call at a time: the pre-processing thread and a retry in the
        forward pass's thread share the model's tokenizer, which is not safe for concurrent
        calls (a fast tokenizer raises "Already borrowed")."""
        with self._pre_lock:
            features = pre(items, *args, **kwargs)
        self.remember(features, items)
        return features

    def remembering(self, pre: Callable) -> Callable:
        def pre_processing(items, *args, **kwargs):
            return self.pre_process(pre, items, *args, **kwargs)

        return pre_processing


class _Halves:
    """A forward pass's output made in halves: post-processing runs on each and joins them."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts


def _joining_halves(post: Callable) -> Callable:
    def post_processing(output, *args, **kwargs):
        if not isinstance(output, _Halves):
            return post(output, *args, **kwargs)
        results = [post_processing(part, *args, **kwargs) for part in output.parts]
        if all(hasattr(result, "shape") for result in results):  # numpy arrays: one per item, stacked
            import numpy as np

            return np.concatenate(results)
        return [item for result in results for item in result]

    return post_processing


def _release_memory() -> None:
    gc.collect()
    _free_gpu_cache()


def _free_gpu_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
