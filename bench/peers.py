"""The peers the worker is measured against, each started on loopback:

- RunPod's original worker (`../shared/baselines/worker-infinity-embedding`), copied to a
  scratch folder and run with this project's environment through `--rp_serve_api`;
- Infinity's own server (`infinity_emb v2`), installed once into a separate virtual
  environment that is cached in `.cache/bench/infinity-server` (its `[server]` extra pins
  click<8.2, which runpod cannot take), at the same engine, torch and transformers versions;
- a stand-in for RunPod's job API, so that the worker's production path (runpod's job loop:
  take a job, run it, post its result) can be driven like a server.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import ENV, MODEL, ROOT, free_port

BASELINE = ROOT.parent / "shared" / "baselines" / "worker-infinity-embedding"
INFINITY_VENV = ROOT / ".cache" / "bench" / "infinity-server"
# The same engine, torch and model stack as the worker's requirements, plus the server extra.
INFINITY_SERVER_PACKAGES = ["infinity-emb[server,torch]==0.0.78", "sentence-transformers==3.4.1",
                            "transformers==4.57.6", "tokenizers==0.22.2", "huggingface_hub==0.36.2",
                            "numpy==1.26.4"]


def torch_pin() -> str:
    return next(line.strip() for line in (ROOT / "requirements-cpu.txt").read_text().splitlines()
                if line.startswith("torch=="))


def ensure_infinity_server() -> Path:
    """The cached virtual environment with Infinity's server; made on first use."""
    python = INFINITY_VENV / "bin" / "python"
    if (INFINITY_VENV / ".installed").exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(INFINITY_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, torch_pin()], check=True)  # alone first: the CPU wheel (see Makefile)
    subprocess.run([*pip, torch_pin(), *INFINITY_SERVER_PACKAGES], check=True)
    (INFINITY_VENV / ".installed").touch()
    return python


def wait_until_up(process: subprocess.Popen, probe: str, what: str, timeout: float = 240,
                  ready: int | None = None) -> None:
    """Until `probe` answers below 500 (or exactly `ready`)."""
    deadline = time.time() + timeout
    while True:
        try:
            status = httpx.get(probe, timeout=2).status_code
            if status == ready if ready is not None else status < 500:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)


def start_original_worker(env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """RunPod's original worker behind `--rp_serve_api`; returns it and its /runsync URL."""
    scratch = Path(tempfile.mkdtemp(prefix="original-worker-"))
    shutil.copytree(BASELINE / "src", scratch / "src")
    port = free_port()
    process = subprocess.Popen([sys.executable, "src/handler.py", "--rp_serve_api", "--rp_api_port", str(port)],
                               cwd=scratch, env={**ENV, **(env or {})}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


def start_infinity_server(dtype: str, models: tuple[str, ...] = (MODEL,)) -> tuple[subprocess.Popen, str]:
    """`infinity_emb v2` for `models` (the bundled one by default) at `dtype`; returns it and its base URL."""
    python = ensure_infinity_server()
    port = free_port()
    per_model = [arg for model in models for arg in ("--model-id", model, "--dtype", dtype, "--engine", "torch",
                                                     "--device", "cpu")]
    process = subprocess.Popen(
        [str(python), "-m", "infinity_emb.cli", "v2", *per_model, "--port", str(port), "--no-model-warmup",
         "--log-level", "warning"],
        cwd=ROOT, env={**ENV, "INFINITY_ANONYMOUS_USAGE_STATS": "0"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


class JobApi:
    """A stand-in for RunPod's job API: `submit` queues a job and returns its result once
    the worker has taken it (job-take) and posted it back (job-done)."""

    def __init__(self) -> None:
        self.pending: asyncio.Queue = asyncio.Queue()
        self.waiting: dict[str, asyncio.Future] = {}
        self.port = free_port()
        self._runner = None
        self._count = 0

    @property
    def worker_env(self) -> dict[str, str]:
        base = f"http://127.0.0.1:{self.port}"
        return {"RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=bench",
                "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=bench",
                "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID", "RUNPOD_POD_ID": "bench-worker",
                "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_PING_INTERVAL": "100000"}

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/job-take/{worker}", self._take)
        app.router.add_get("/job-take-batch/{worker}", self._take_batch)
        app.router.add_post("/job-done/{pod}/{job}", self._done)
        app.router.add_get("/ping/{pod}", lambda request: web.Response(text="{}"))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def submit(self, job_input: dict) -> dict:
        self._count += 1
        job_id = f"bench-{self._count}"
        done = asyncio.get_running_loop().create_future()
        self.waiting[job_id] = done
        await self.pending.put({"id": job_id, "input": job_input})
        return await done

    async def _take(self, request):
        from aiohttp import web

        try:
            job = await asyncio.wait_for(self.pending.get(), 1.0)
        except TimeoutError:
            return web.Response(status=204)
        return web.json_response(job)

    async def _take_batch(self, request):
        from aiohttp import web

        size = int(request.query.get("batch_size", "1"))
        jobs = []
        try:
            jobs.append(await asyncio.wait_for(self.pending.get(), 1.0))
            while len(jobs) < size and not self.pending.empty():
                jobs.append(self.pending.get_nowait())
        except TimeoutError:
            return web.Response(status=204)
        return web.json_response(jobs)

    async def _done(self, request):
        import orjson
        from aiohttp import web

        result = orjson.loads(await request.read())
        future = self.waiting.pop(request.match_info["job"], None)
        if future is not None and not future.done():
            future.set_result(result)
        return web.json_response({})
