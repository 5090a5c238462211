"""Batches are full ones, formed when the forward pass is about to need them: the queue's
policy on its own (every item out once, soon, in length order), and a real engine under
concurrent load."""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import EMBEDDER_ID
from embedding_worker.engine.batching import FullBatchQueue

SIZE = 32
_numbers = itertools.count()


@dataclass
class Request:  # what Infinity's queued item carries: the request's future
    number: int
    future: Future = field(default_factory=Future)


@dataclass(order=True)
class Queued:  # Infinity's PrioritizedQueueItem: ordered by length
    priority: int
    item: Request = field(compare=False)


def arrive(queue: FullBatchQueue, lengths: list[int]) -> list[Request]:
    requests = [Request(next(_numbers)) for _ in lengths]
    queue.extend([Queued(length, request) for length, request in zip(lengths, requests)])
    return requests


def pop(queue: FullBatchQueue, timeout: float = 0.05) -> list[list[Request]]:
    return list(queue.pop_optimal_batches(SIZE, 8, timeout=timeout))


def started(queue: FullBatchQueue, batches: list) -> None:
    for _ in batches:
        queue.forward_started()


def test_less_than_a_batch_goes_out_at_once():
    queue = FullBatchQueue()
    requests = arrive(queue, [5, 3, 9])
    assert pop(queue) == [[requests[1], requests[0], requests[2]]]  # by length
    assert len(queue) == 0


def test_only_full_batches_while_there_are_any_and_the_newest_wait_at_the_front():
    queue = FullBatchQueue()
    first = arrive(queue, list(range(70, 0, -1)))  # 70 items, longest first
    batches = pop(queue)
    assert [len(batch) for batch in batches] == [SIZE, SIZE]
    handed = [request for batch in batches for request in batch]
    assert sorted(r.number for r in handed) == [r.number for r in first[:64]]  # the oldest 64
    assert handed == sorted(first[:64], key=lambda r: 70 - first.index(r))  # shortest first
    assert len(queue) == 6

    started(queue, batches)
    later = arrive(queue, [1] * 10)
    length = {r.number: 70 - i for i, r in enumerate(first)} | {r.number: 1 for r in later}
    expected = sorted(first[64:] + later, key=lambda r: length[r.number])  # the 6 first among equals
    assert pop(queue) == [expected]  # all 16 at once


def test_no_batch_is_formed_while_one_waits_for_the_forward_pass():
    queue = FullBatchQueue()
    arrive(queue, [1] * SIZE)
    waiting = pop(queue)
    assert len(waiting) == 1
    arrive(queue, [1] * 3)
    assert pop(queue) == []  # the forward pass has a batch waiting: the 3 wait for company
    arrive(queue, [1] * 40)
    queue.forward_started()
    assert [len(batch) for batch in pop(queue)] == [SIZE]  # 43 waited: one full batch, 11 left
    assert len(queue) == 11


def test_with_two_replicas_one_batch_may_wait_for_each():
    queue = FullBatchQueue(forward_passes=2)
    arrive(queue, [1] * SIZE * 3)
    assert len(pop(queue)) == 3
    arrive(queue, [1] * SIZE)
    assert pop(queue) == []
    queue.forward_started()
    queue.forward_started()
    assert len(pop(queue)) == 1  # 1 waits, fewer than 2 replicas


def test_items_whose_request_gave_up_are_dropped():
    queue = FullBatchQueue()
    requests = arrive(queue, [1, 2, 3, 4])
    requests[1].future.cancel()
    requests[2].future.set_result("done elsewhere")
    assert pop(queue) == [[requests[0], requests[3]]]
    assert len(queue) == 0


def test_an_empty_queue_hands_out_nothing_after_the_timeout():
    assert pop(FullBatchQueue(), timeout=0.01) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 500), max_size=200), min_size=1, max_size=12))
def test_every_item_goes_out_once_within_two_rounds_in_full_length_sorted_batches(arrivals):
    queue = FullBatchQueue()
    arrived_in: dict[int, int] = {}
    handed_in: dict[int, int] = {}
    for round_number, lengths in enumerate([*arrivals, [], []]):  # two more rounds to drain
        for request in arrive(queue, lengths):
            arrived_in[request.number] = round_number
        waiting = len(queue)
        batches = pop(queue, timeout=0.001)
        started(queue, batches)
        sizes = [len(batch) for batch in batches]
        assert all(0 < size <= SIZE for size in sizes)
        if waiting >= SIZE:  # full batches only, while there are any
            assert sizes == [SIZE] * len(sizes) and len(queue) < SIZE
        for batch in batches:
            for request in batch:
                assert request.number not in handed_in
                handed_in[request.number] = round_number
    assert handed_in.keys() == arrived_in.keys()
    assert all(handed_in[n] - arrived_in[n] <= 1 for n in arrived_in)


def test_a_real_engine_under_concurrent_load_runs_full_batches(worker, sentence_transformer):
    engine = worker.registry.resolve(EMBEDDER_ID).engine
    replica = engine._model_replicas[0]
    forward = replica.encode_core
    batch_sizes: list[int] = []

    def recording(features, *args, **kwargs):
        batch_sizes.append(len(features["input_ids"]))
        return forward(features, *args, **kwargs)

    texts = [f"request {i}, sentence {j}: " + "word " * (i % 7 + j) for i in range(96) for j in range(8)]
    gate = asyncio.Semaphore(16)

    async def send(i: int):
        async with gate:
            return await worker.handler({"id": str(i), "input": {"model": EMBEDDER_ID,
                                                                  "input": texts[i * 8 : (i + 1) * 8]}})

    async def load():
        return await asyncio.gather(*(send(i) for i in range(96)))

    replica.encode_core = recording
    try:
        outputs = asyncio.run_coroutine_threadsafe(load(), worker.loop).result(300)
    finally:
        replica.encode_core = forward
    vectors = np.array([item["embedding"] for output in outputs for item in output["data"]])
    expected = sentence_transformer.encode(texts, normalize_embeddings=True)
    assert np.abs(vectors - expected).max() < 1e-5  # each text its own vector
    in_full_batches = sum(size for size in batch_sizes if size == SIZE)
    assert in_full_batches >= 0.75 * len(texts), batch_sizes
