"""Jobs of the local endpoint: queued, run up to a concurrency limit, kept for a while.

Statuses and timing fields follow RunPod's API (`IN_QUEUE`, `IN_PROGRESS`, `COMPLETED`,
`FAILED`; `delayTime` and `executionTime` in milliseconds). Finished jobs expire after
`ttl` seconds and at most `max_jobs` are kept, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

RunJob = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
FINAL = ("COMPLETED", "FAILED")


@dataclass
class LocalJob:
    id: str
    input: Any
    status: str = "IN_QUEUE"
    result: dict[str, Any] = field(default_factory=dict)  # runpod's {"output"?, "error"?}
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            body["delayTime"] = round(1000 * (self.started - self.submitted))
        if self.finished is not None and self.started is not None:
            body["executionTime"] = round(1000 * (self.finished - self.started))
        body.update({k: v for k, v in self.result.items() if k in ("output", "error")})
        return body


class JobStore:
    def __init__(self, run_job: RunJob, concurrency: int, ttl: float, max_jobs: int) -> None:
        self._run_job = run_job
        self._slots = asyncio.Semaphore(concurrency)
        self._ttl = ttl
        self._max_jobs = max_jobs
        self._jobs: OrderedDict[str, LocalJob] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()

    def submit(self, job_input: Any) -> LocalJob:
        self._expire()
        job = LocalJob(id=f"local-{uuid.uuid4()}", input=job_input)
        self._jobs[job.id] = job
        task = asyncio.create_task(self._execute(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def get(self, job_id: str) -> LocalJob | None:
        self._expire()
        return self._jobs.get(job_id)

    async def drain(self) -> None:
        """Wait for every submitted job to finish (on shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def run_exclusive(self, work: Awaitable[Any]) -> Any:
        """Run work that is not a stored job (the OpenAI routes) within the same limit."""
        async with self._slots:
            return await work

    def counts(self) -> dict[str, int]:
        self._expire()
        statuses = [job.status for job in self._jobs.values()]
        return {
            "completed": statuses.count("COMPLETED"),
            "failed": statuses.count("FAILED"),
            "inProgress": statuses.count("IN_PROGRESS"),
            "inQueue": statuses.count("IN_QUEUE"),
            "retried": 0,
        }

    async def _execute(self, job: LocalJob) -> None:
        async with self._slots:
            job.status, job.started = "IN_PROGRESS", time.monotonic()
            result = await self._run_job({"id": job.id, "input": job.input})
        job.result = result
        job.status = "FAILED" if "error" in result else "COMPLETED"
        job.finished = time.monotonic()
        job.done.set()

    def _expire(self) -> None:
        """Drop finished jobs past their TTL, or past `max_jobs`, oldest first.

        Jobs are kept in submission order, so this stops at the first job that stays and each
        call costs only what it removes. A job still running at the front holds back the
        expiry of later ones until it ends (REQUEST_TIMEOUT bounds that).
        """
        now = time.monotonic()
        while self._jobs:
            oldest = next(iter(self._jobs.values()))
            if oldest.status not in FINAL:
                return
            if now - oldest.finished <= self._ttl and len(self._jobs) <= self._max_jobs:
                return
            self._jobs.popitem(last=False)
