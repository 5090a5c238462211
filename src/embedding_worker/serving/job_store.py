"""Jobs of the local endpoint: queued, run as the worker's concurrency allows, kept a while.

Statuses and timing fields follow RunPod's API (`IN_QUEUE`, `IN_PROGRESS`, `COMPLETED`,
`FAILED`, `CANCELLED`; `delayTime` and `executionTime` in milliseconds).

A job can be cancelled (a queued one never runs; a running one is stopped, and its items
still queued in the engine are dropped) and the queue purged (every job still queued is
cancelled), as RunPod's `/cancel` and `/purge-queue` do. `stream` hands out a finished job's
output once, as RunPod's `/stream` does for a handler that does not yield.

Memory is bounded by bytes, not by a count of jobs:
- a job's input is dropped once it has run, and its result is kept as its JSON bytes;
- a `/runsync` result stays readable for `runsync_ttl` seconds (RunPod keeps them about a
  minute), a `/run` result for `ttl` seconds;
- when the kept results pass `max_bytes` (or `max_jobs`), the oldest finished are dropped
  first; their `/status` then answers 404.

Jobs start in arrival order whenever fewer are running than `capacity(running)` allows:
the worker's concurrency modifier, which lowers the number while the engines' backlog is
near its limit, so a burst waits here (`IN_QUEUE`) instead of failing as overloaded.
"""

from __future__ import annotations

import asyncio
import heapq
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from embedding_worker.serving import json_io

RunJob = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
FINAL = ("COMPLETED", "FAILED", "CANCELLED")


@dataclass
class LocalJob:
    id: str
    input: Any  # dropped once the job has run
    keep_for: float  # seconds the result stays readable once finished
    status: str = "IN_QUEUE"
    result_json: bytes = b""  # runpod's {"output"} or {"error"}, as JSON
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    streamed: bool = False  # its output was handed out by `stream`

    def to_api_json(self) -> bytes:
        """RunPod's status body, with the stored result spliced in unparsed."""
        head: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            head["delayTime"] = round(1000 * (self.started - self.submitted))
        if self.finished is not None and self.started is not None:
            head["executionTime"] = round(1000 * (self.finished - self.started))
        return with_result(head, self.result_json)

    def to_api(self) -> dict[str, Any]:
        return orjson.loads(self.to_api_json())


def with_result(head: dict[str, Any], result_json: bytes) -> bytes:
    """`head` as JSON with a stored result's fields (`output` or `error`) spliced in unparsed."""
    body = orjson.dumps(head)
    return body[:-1] + b"," + result_json[1:] if len(result_json) > 2 else body  # not "{}"


class JobStore:
    def __init__(
        self,
        run_job: RunJob,
        capacity: Callable[[int], int],
        ttl: float,
        runsync_ttl: float,
        max_bytes: int,
        max_jobs: int,
        ready: asyncio.Event | None = None,
    ) -> None:
        """`ready`: jobs wait IN_QUEUE until it is set (the models are loading), so their
        `delayTime` counts that wait, as RunPod's does."""
        self._ready = ready
        self._run_job = run_job
        self._capacity = capacity
        self._ttl = ttl
        self._runsync_ttl = runsync_ttl
        self._max_bytes = max_bytes
        self._max_jobs = max_jobs
        self._jobs: dict[str, LocalJob] = {}
        self._expiries: list[tuple[float, str]] = []  # heap of (expiry time, job id)
        self._finish_order: deque[str] = deque()  # finished job ids, oldest first
        self._bytes = 0
        self._running = 0
        self._turn = asyncio.Condition()
        self._tasks: set[asyncio.Task] = set()
        self.finished: dict[str, int] = dict.fromkeys(FINAL, 0)  # every job that ended, kept or not

    @property
    def result_bytes(self) -> int:
        return self._bytes

    def submit(self, job_input: Any, sync: bool = False) -> LocalJob:
        self._expire()
        job = LocalJob(id=f"local-{uuid.uuid4()}", input=job_input,
                       keep_for=self._runsync_ttl if sync else self._ttl)
        self._jobs[job.id] = job
        job.task = asyncio.create_task(self._execute(job))
        self._tasks.add(job.task)
        job.task.add_done_callback(self._tasks.discard)
        return job

    def cancel(self, job_id: str) -> LocalJob | None:
        """Cancel a queued or running job; a finished one stays as it is."""
        job = self.get(job_id)
        if job is not None and job.status not in FINAL and job.task is not None:
            job.task.cancel()
            self._finish(job, "CANCELLED", b"{}")
        return job

    def purge_queue(self) -> int:
        """Cancel every job still waiting in the queue; return how many."""
        queued = [job.id for job in self._jobs.values() if job.status == "IN_QUEUE"]
        for job_id in queued:
            self.cancel(job_id)
        return len(queued)

    def stream(self, job_id: str) -> dict[str, Any] | None:
        """RunPod's stream body: the output as one item once the job has completed, handed out
        once; nothing while it runs."""
        job = self.get(job_id)
        if job is None:
            return None
        body: dict[str, Any] = {"id": job.id, "status": job.status, "stream": []}
        result = orjson.loads(job.result_json) if job.status in FINAL and job.result_json else {}
        if job.status == "COMPLETED" and not job.streamed:
            body["stream"] = [{"output": result.get("output")}]
            job.streamed = True
        if "error" in result:
            body["error"] = result["error"]
        return body

    def get(self, job_id: str) -> LocalJob | None:
        self._expire()
        return self._jobs.get(job_id)

    async def drain(self) -> None:
        """Wait for every submitted job to finish (on shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def run_exclusive(self, work: Awaitable[Any]) -> Any:
        """Run work that is not a stored job (the OpenAI routes) under the same capacity."""
        await self._start_turn()
        try:
            return await work
        finally:
            await self._end_turn()

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

    async def _start_turn(self) -> None:
        if self._ready is not None:
            await self._ready.wait()
        async with self._turn:
            await self._turn.wait_for(lambda: self._running < max(1, self._capacity(self._running)))
            self._running += 1

    async def _end_turn(self) -> None:
        async with self._turn:
            self._running -= 1
            self._turn.notify_all()

    async def _execute(self, job: LocalJob) -> None:
        try:
            await self._start_turn()
        except asyncio.CancelledError:
            return  # cancelled in the queue: it never runs
        try:
            job.status, job.started = "IN_PROGRESS", time.monotonic()
            result = await self._run_job({"id": job.id, "input": job.input})
        except asyncio.CancelledError:
            return  # `cancel` has finished the job
        finally:
            await self._end_turn()
        kept = {k: v for k, v in result.items() if k in ("output", "error")}
        output = kept.get("output")
        large = json_io.is_large(output[0] if isinstance(output, list) and output else output or {})
        self._finish(job, "FAILED" if "error" in result else "COMPLETED",
                     await json_io.off_loop_if(large, lambda: orjson.dumps(kept)))

    def _finish(self, job: LocalJob, status: str, result_json: bytes) -> None:
        job.input = None
        job.result_json, job.status, job.finished = result_json, status, time.monotonic()
        self.finished[status] += 1
        self._bytes += len(job.result_json)
        heapq.heappush(self._expiries, (job.finished + job.keep_for, job.id))
        self._finish_order.append(job.id)
        job.done.set()
        self._expire()

    def _expire(self) -> None:
        """Drop results past their time, then the oldest while over the byte or job bounds."""
        now = time.monotonic()
        while self._expiries and self._expiries[0][0] < now:
            self._drop(heapq.heappop(self._expiries)[1])
        while self._finish_order and (self._bytes > self._max_bytes or len(self._jobs) > self._max_jobs):
            self._drop(self._finish_order.popleft())
        if len(self._finish_order) > 2 * len(self._jobs) + 1000:  # ids of jobs that expired
            self._finish_order = deque(i for i in self._finish_order if i in self._jobs)

    def _drop(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        if job is not None:
            self._bytes -= len(job.result_json)
