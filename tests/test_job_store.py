"""The local endpoint's job store: results stay readable for a while, then expire, and
memory stays bounded."""

from __future__ import annotations

import asyncio

from embedding_worker.job_store import JobStore


async def echo(job: dict) -> dict:
    return {"output": job["input"]}


def test_finished_jobs_expire_after_the_ttl():
    async def scenario():
        store = JobStore(echo, concurrency=4, ttl=0.2, max_jobs=100)
        jobs = [store.submit(i) for i in range(3)]
        await store.drain()
        assert [store.get(j.id).to_api()["output"] for j in jobs] == [0, 1, 2]
        await asyncio.sleep(0.3)
        assert all(store.get(j.id) is None for j in jobs)

    asyncio.run(scenario())


def test_at_most_max_jobs_finished_jobs_are_kept_oldest_dropped_first():
    async def scenario():
        store = JobStore(echo, concurrency=4, ttl=3600, max_jobs=5)
        jobs = [store.submit(i) for i in range(8)]
        await store.drain()
        store.submit(99)  # expiry runs on each submission
        await store.drain()
        kept = [j for j in jobs if store.get(j.id) is not None]
        assert kept == jobs[-4:]  # plus the new job: 5 in all
        assert store.counts()["completed"] == 5

    asyncio.run(scenario())


def test_a_running_job_is_never_expired():
    async def slow(job: dict) -> dict:
        await asyncio.sleep(0.3)
        return {"output": job["input"]}

    async def scenario():
        store = JobStore(slow, concurrency=1, ttl=0, max_jobs=1)
        running = store.submit("a")
        queued = store.submit("b")
        await asyncio.sleep(0.05)
        assert store.get(running.id).status == "IN_PROGRESS"
        assert store.get(queued.id).status == "IN_QUEUE"
        await store.drain()

    asyncio.run(scenario())
