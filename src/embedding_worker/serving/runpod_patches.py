"""runpod, imported with the cuts this worker makes to its serving path.

- Import: runpod's debugger module calls `cpuinfo.get_cpu_info()` at import, which spawns a
  subprocess and takes about a second of every cold start, for a CPU name it only shows in
  debug output. Reading the name from /proc/cpuinfo gives the same answer at once. Its
  command-line tool's SSH commands import paramiko (and cryptography, PyNaCl, bcrypt) at
  import: 15 MiB of memory for the worker's whole life (measured), which serving never uses.
  paramiko stands in until first used, which serving never does (`import_lazily`).
- Logging: runpod logs at DEBUG by default, three lines a job; INFO unless set otherwise,
  and through the worker's one log format (`logs.route_runpod_logs`).
- Results, production loop: runpod posts each job's result with the standard library's
  `json.dumps`, 1.7 ms for 8 vectors of 384 floats (orjson: 0.07 ms), on the one event
  loop that also feeds the engines. It uses orjson instead (same JSON; the worker's
  outputs hold no NaN, see `service`).
- Results, `--rp_serve_api`: runpod passes each body through FastAPI's `jsonable_encoder`
  and its response model; the body is already JSON-ready, so it is sent as it is, by orjson.
- Job loop: runpod's `JobScaler.run_jobs` polls its queue of taken jobs every 100 ms, so a
  job waits up to 100 ms before it starts (the whole compute time of a small request). It
  starts each job as it arrives instead; shutdown still drains every job taken.
- Concurrency: whenever the concurrency modifier's number changes, runpod's `set_scale`
  stops taking jobs until every job in flight has finished (checking once a second) and
  rebuilds its job queue. The worker's modifier follows the engines' backlog, so that would
  idle the worker under load; the number takes effect at once instead (runpod takes at most
  that many jobs whatever the queue's size).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sys
import types
from types import SimpleNamespace
from typing import Any

import orjson


def import_runpod():
    import cpuinfo

    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    cpuinfo.get_cpu_info = lambda: {"brand_raw": cpu_name()}
    import_lazily("paramiko")
    import runpod
    from runpod.serverless.modules import rp_fastapi, rp_http, rp_scale

    from embedding_worker.serving.logs import route_runpod_logs

    route_runpod_logs()
    rp_http.json = SimpleNamespace(dumps=_dumps)
    rp_fastapi.jsonable_encoder = _json_response
    rp_scale.JobScaler.run_jobs = _run_jobs_as_they_arrive
    rp_scale.JobScaler.set_scale = _set_scale_at_once
    return runpod


async def _set_scale_at_once(self) -> None:
    self.current_concurrency = max(1, self.concurrency_modifier(self.current_concurrency))
    if self.jobs_queue.maxsize and self.jobs_queue.empty():
        self.jobs_queue = asyncio.Queue()  # unbounded: runpod fills it up to the concurrency only


async def _run_jobs_as_they_arrive(self, session) -> None:
    """runpod's `JobScaler.run_jobs`, woken by a job's arrival rather than a 100 ms poll."""
    tasks: set[asyncio.Task] = set()
    arrival: asyncio.Future | None = None
    arrival_queue = None

    def start(job: dict) -> None:
        task = asyncio.create_task(self.handle_job(session, job))
        tasks.add(task)
        self.jobs_tasks[job["id"]] = task

    while self.is_alive() or not self.jobs_queue.empty() or (arrival is not None and arrival.done()):
        if arrival is not None and arrival.done():
            start(arrival.result())
            arrival = None
        while len(tasks) < self.current_concurrency and not self.jobs_queue.empty():
            start(self.jobs_queue.get_nowait())
        if arrival is not None and arrival_queue is not self.jobs_queue:  # runpod replaced its queue
            arrival.cancel()
            arrival = None
        if arrival is None and len(tasks) < self.current_concurrency:
            arrival_queue = self.jobs_queue
            arrival = asyncio.ensure_future(arrival_queue.get())
        waiting = tasks | ({arrival} if arrival is not None else set())
        if not waiting:  # no room for a job (a concurrency of 0): check again soon
            await asyncio.sleep(0.1)
            continue
        done, _ = await asyncio.wait(waiting, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
        tasks.difference_update(done)
    if arrival is not None:
        arrival.cancel()  # an asyncio.Queue loses no item to a cancelled get()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
            rp_logger().error(f"JobScaler.run_jobs | Task failed during shutdown drain: {result}")


def rp_logger():
    from runpod.serverless.modules.rp_logger import RunPodLogger

    return RunPodLogger()


def _dumps(payload: Any, **_: Any) -> str:
    return orjson.dumps(payload).decode()


def _json_response(payload: Any):
    from fastapi.responses import Response

    return Response(orjson.dumps(payload), media_type="application/json")


def import_lazily(name: str) -> None:
    """Register a stand-in for module `name` that imports the real one on its first attribute
    access (`import name` alone does not count). Python's own `LazyLoader` cannot do this on
    3.11: the import statement reads the module's spec, which already runs it."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    stand_in = types.ModuleType(name)
    stand_in.__spec__ = spec

    def load(attribute: str):
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attribute)

    stand_in.__getattr__ = load
    sys.modules[name] = stand_in


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"
