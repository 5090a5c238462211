"""The local endpoint's job store: results stay readable for a while, then expire, memory
stays bounded by bytes, and jobs start as the worker's concurrency allows."""

from __future__ import annotations

import asyncio

from embedding_worker.serving.job_store import JobStore


async def echo(job: dict) -> dict:
    return {"output": job["input"]}


def store_of(run=echo, capacity=lambda running: 4, ttl=3600.0, runsync_ttl=3600.0,
             max_bytes=1 << 30, max_jobs=10_000) -> JobStore:
    return JobStore(run, capacity=capacity, ttl=ttl, runsync_ttl=runsync_ttl, max_bytes=max_bytes,
                    max_jobs=max_jobs)


def test_finished_jobs_expire_after_their_ttl_runsync_sooner():
    async def scenario():
        store = store_of(ttl=0.4, runsync_ttl=0.1)
        queued = [store.submit(i) for i in range(3)]
        synced = store.submit("sync", sync=True)
        await store.drain()
        assert [store.get(j.id).to_api()["output"] for j in queued] == [0, 1, 2]
        await asyncio.sleep(0.2)
        assert store.get(synced.id) is None and store.get(queued[0].id) is not None
        await asyncio.sleep(0.3)
        assert all(store.get(j.id) is None for j in queued)
        assert store.result_bytes == 0

    asyncio.run(scenario())


def test_results_are_bounded_by_bytes_oldest_dropped_first_and_inputs_are_not_kept():
    async def scenario():
        store = store_of(max_bytes=3 * 1100)
        jobs = [store.submit("x" * 1000) for _ in range(6)]
        await store.drain()
        kept = [j for j in jobs if store.get(j.id) is not None]
        assert kept == jobs[-3:]
        assert store.result_bytes <= 3 * 1100
        assert all(job.input is None for job in jobs)  # dropped once run
        assert store.get(jobs[0].id) is None  # its /status answers 404

    asyncio.run(scenario())


def test_at_most_max_jobs_are_kept():
    async def scenario():
        store = store_of(max_jobs=5)
        jobs = [store.submit(i) for i in range(8)]
        await store.drain()
        assert [j for j in jobs if store.get(j.id) is not None] == jobs[-5:]
        assert store.counts()["completed"] == 5

    asyncio.run(scenario())


def test_a_running_job_is_never_expired_and_queued_jobs_wait_their_turn():
    async def slow(job: dict) -> dict:
        await asyncio.sleep(0.3)
        return {"output": job["input"]}

    async def scenario():
        store = store_of(slow, capacity=lambda running: 1, ttl=0, runsync_ttl=0, max_bytes=0, max_jobs=1)
        running = store.submit("a")
        queued = store.submit("b")
        await asyncio.sleep(0.05)
        assert store.get(running.id).status == "IN_PROGRESS"
        assert store.get(queued.id).status == "IN_QUEUE"
        await store.drain()
        assert running.to_api()["output"] == "a" and queued.to_api()["output"] == "b"

    asyncio.run(scenario())


def test_capacity_follows_the_concurrency_modifier():
    allowed = {"jobs": 3}
    seen: list[int] = []

    async def scenario():
        async def tracked(job: dict) -> dict:
            seen.append(store._running)
            await asyncio.sleep(0.02)
            return {"output": store._running}

        store = store_of(tracked, capacity=lambda running: allowed["jobs"])
        jobs = [store.submit(i) for i in range(12)]
        await asyncio.sleep(0.05)
        allowed["jobs"] = 1
        await store.drain()
        return jobs

    jobs = asyncio.run(scenario())
    assert max(seen) == 3
    assert all(job.status == "COMPLETED" for job in jobs)
    assert jobs[-1].to_api()["output"] == 1  # ran alone once the modifier said one
