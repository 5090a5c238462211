"""How queued items become batches: full ones, formed when the forward pass is about to need
them.

Infinity forms batches as soon as the first queue of its pipeline has room, and the pipeline
holds many batches ahead of the forward pass (8 to be tokenized, 3 tokenized). Under steady
load this cuts the queue into small batches, each formed from what had arrived when the
previous one was: at 16 concurrent requests of 8 sentences, batches averaged 18 items of 32
on a 2-core CPU, and every forward pass paid its fixed costs for fewer items.

`FullBatchQueue` takes the place of Infinity's queue (`use_full_batches`). It forms batches
only when the forward pass has none waiting (with several model replicas: fewer than there
are replicas), so one batch is tokenized while the current one runs and everything that
arrived meanwhile goes into the next. Then, as Infinity does, it takes the oldest items
(as many batches' worth as Infinity asks for, 8), sorts them by length so that a batch pads
little, and hands them out in batches; but it hands out only full batches while it has any,
and leaves the newest items that would make a short batch at the front of the queue for the
next round. An item left there is among the oldest next time, so none waits more than one
extra round; when there is less than a batch, it goes out as it is, at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol

from embedding_worker.engine.infinity_internals import (
    batch_handler,
    model_workers,
    replace_hand_off_queue,
    replicas,
)


class FullBatchQueue:
    """Infinity's queue of items waiting for a batch (what its batch handler uses of it:
    `extend`, `len`, `pop_optimal_batches`), with the batching policy above. Items are
    Infinity's `PrioritizedQueueItem`s: ordered by length, with the request's future."""

    def __init__(self, forward_passes: int = 1, observe: BatchObserver | None = None) -> None:
        self._forward_passes = forward_passes  # model replicas, each running its own
        self._observe = observe
        self._items: list[Any] = []
        self._arrived_at: list[float] = []  # when each item of `_items` arrived
        self._lock = threading.Lock()
        self._arrived = threading.Event()
        self._ahead = threading.Condition()
        self._formed = 0  # batches handed out
        self._started = 0  # of those, batches whose forward pass has begun

    def __len__(self) -> int:
        return len(self._items)

    def extend(self, items: list[Any]) -> None:
        now = time.monotonic()
        with self._lock:
            self._items.extend(items)
            self._arrived_at.extend([now] * len(items))
        self._arrived.set()

    def forward_started(self) -> None:
        """Called by the forward-pass thread as it begins a batch."""
        with self._ahead:
            self._started = min(self._started + 1, self._formed)
            self._ahead.notify_all()

    def _none_waiting(self) -> bool:
        return self._formed - self._started < self._forward_passes

    def pop_optimal_batches(self, size: int, max_n_batches: int = 8, timeout: float = 0.2,
                            **kwargs: Any) -> Generator[list[Any], None, None]:
        """Batches of up to `size` items, from the oldest `max_n_batches * size`; none if the
        forward pass still has a batch waiting, or the queue stays empty, for `timeout`
        seconds (Infinity's loop then asks again)."""
        with self._ahead:
            if not self._ahead.wait_for(self._none_waiting, timeout):
                return
        if not self._arrived.wait(timeout):
            return
        with self._lock:
            oldest = size * max_n_batches
            window = [(queued, at) for queued, at in zip(self._items[:oldest], self._arrived_at[:oldest])
                      if not queued.item.future.done()]
            taken = len(window) // size * size or len(window)  # full batches, else all there is
            self._items[:oldest] = [queued for queued, _ in window[taken:]]  # the newest, in order, to wait
            self._arrived_at[:oldest] = [at for _, at in window[taken:]]
            if not self._items:
                self._arrived.clear()
        ordered = sorted(queued for queued, _ in window[:taken])  # by length (Infinity's priority)
        batches = [[queued.item for queued in ordered[i : i + size]] for i in range(0, taken, size)]
        with self._ahead:
            self._formed += len(batches)
        if self._observe is not None:
            self._observe.batches_formed([time.monotonic() - at for _, at in window[:taken]],
                                         [len(batch) for batch in batches])
        yield from batches


class HandOffQueue(queue.Queue):
    """The queue from Infinity's batching thread to pre-processing. Infinity asks `empty()`
    before it forms a batch, and sleeps its batch delay (5 ms) when the last one is not yet
    taken: a lone request arriving then waited out the sleep. Here `empty()` waits up to
    HAND_OFF_WAIT for the pre-processing thread to take what is there, so the batching thread
    goes on the moment it is taken, and sleeps only when pre-processing is busy for longer."""

    def empty(self) -> bool:
        with self.not_full:  # notified by every `get`
            self.not_full.wait_for(lambda: not self._qsize(), HAND_OFF_WAIT)
            return not self._qsize()


HAND_OFF_WAIT = 0.005  # seconds, Infinity's batch delay


class BatchObserver(Protocol):
    """Where the queue reports what it did (the worker's metrics)."""

    def batches_formed(self, waits: list[float], sizes: list[int]) -> None: ...

    def forward_done(self, seconds: float) -> None: ...


def use_full_batches(engine: Any, observe: BatchObserver | None = None) -> None:
    """Put a `FullBatchQueue` in place of a started engine's queue, before its first request,
    and have its forward pass report each batch it begins (and, to `observe`, its time).

    Infinity's post-processing thread also sleeps its batch delay (5 ms) before every batch
    that finds its queue empty (its test, last forward pass earlier than now + twice the delay,
    always holds), "to give the CPU to the next batch's transfer": 5 ms on every request's
    latency, whatever the device. The worker's post-processing is short and its forward pass
    has its own thread, so that wait is taken out. Its batching thread sleeps the same 5 ms
    whenever it finds the batch it handed on not yet taken; `HandOffQueue` has it wait for the
    taking instead."""
    handler = batch_handler(engine)
    queue = FullBatchQueue(len(replicas(engine)), observe)
    for replica in replicas(engine):
        replica.encode_core = _reporting_start(replica.encode_core, queue.forward_started, observe)
    handler._queue_prio = queue
    for worker in model_workers(engine):
        worker._batch_delay = 0.0
    replace_hand_off_queue(engine, HandOffQueue)


def _reporting_start(forward: Callable, started: Callable[[], None], observe: BatchObserver | None) -> Callable:
    def reporting_start(*args, **kwargs):
        started()
        begun = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            if observe is not None:
                observe.forward_done(time.perf_counter() - begun)

    return reporting_start
