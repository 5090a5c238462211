"""Batching: the in-process engine with Infinity's own queue against this worker's
(`engine/batching.py`), side by side in interleaved rounds, with the batches' mean size.

One engine serves both: the queue is swapped between runs, while the engine is idle.
"""

from __future__ import annotations

import asyncio

from common import MODEL, drive, shaped, worker_for
from throughput import SHAPES, summarise

INFINITY, OURS = "Infinity's queue", "this worker's queue"


def compare(scale: float, rounds: int, dtype: str) -> dict:
    runs: dict[str, dict[str, list[dict]]] = {}

    async def run_all() -> None:
        from infinity_emb.inference.queue import CustomFIFOQueue

        from embedding_worker.engine.infinity_internals import batch_handler, replicas

        worker = worker_for("torch", DTYPES=dtype)
        await worker.registry.start()
        engine = worker.registry.resolve(MODEL).engine
        queues = {INFINITY: CustomFIFOQueue(), OURS: batch_handler(engine)._queue_prio}
        replica = replicas(engine)[0]
        forward, forwards = replica.encode_core, [0]

        def counting(*args, **kwargs):
            forwards[0] += 1
            return forward(*args, **kwargs)

        replica.encode_core = counting

        async def call(texts: list[str]) -> None:
            await engine.embed(texts)

        try:
            for shape, batch, concurrency, requests in SHAPES:
                batches = shaped(max(2, int(requests * scale)), batch)
                for _ in range(rounds):
                    for name, queue in queues.items():
                        batch_handler(engine)._queue_prio = queue
                        await asyncio.sleep(0.3)  # Infinity's batching thread picks the queue up
                        forwards[0] = 0
                        row = await drive(call, batches, concurrency)
                        items = sum(map(len, batches)) + len(batches[0])  # `drive` warms up with the first
                        row["mean_batch"] = round(items / max(1, forwards[0]), 1)
                        runs.setdefault(name, {}).setdefault(shape, []).append(row)
        finally:
            replica.encode_core = forward
            await worker.registry.stop()

    asyncio.run(run_all())
    return summarise(runs, INFINITY)
