"""What every measurement shares: the model, the environment, the corpus, the load driver."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HF_HOME = ROOT / ".cache" / "huggingface"
ENV = {**os.environ, "HF_HOME": str(HF_HOME), "HF_HUB_OFFLINE": "1", "MODEL_NAMES": MODEL,
       "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
WORDS = ("the a of and to in is that for it as with was on be by this are from at an embedding "
         "model worker request vector search query document token batch engine serverless latency "
         "throughput cold start python runpod infinity rank score sentence meaning similar text "
         "language cloud gpu memory fast slow answer question retrieval index").split()


def corpus(count: int = 1600, words: int = 30, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(count)]


def shaped(requests: int, batch: int) -> list[list[str]]:
    texts = corpus()
    return [[texts[(i * batch + j) % len(texts)] for j in range(batch)] for i in range(requests)]


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99)}


async def drive(call, batches: list[list[str]], concurrency: int) -> dict:
    """Run `call(texts)` for every batch, `concurrency` at a time; time each and the whole."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(texts: list[str]) -> None:
        async with gate:
            started = time.perf_counter()
            await call(texts)
            latencies.append(time.perf_counter() - started)

    await call(batches[0])  # warm: engine started, first shapes seen
    me = psutil.Process()
    cpu_before, started = me.cpu_times(), time.perf_counter()
    await asyncio.gather(*(one(texts) for texts in batches))
    elapsed = time.perf_counter() - started
    cpu_after = me.cpu_times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    sentences = sum(len(texts) for texts in batches)
    return {"sentences_per_s": round(sentences / elapsed, 1), "seconds": round(elapsed, 2),
            **percentiles(latencies), "this_process_cpu_share": round(cpu / elapsed / psutil.cpu_count(), 3)}


def cosines(reference, vectors):
    """Each row's cosine to its reference row, both normalised again in float32 (vectors
    normalised in a narrower precision are a little off unit length: their dot products are not
    cosines, and can pass 1)."""
    import numpy as np

    def unit(matrix):
        matrix = np.asarray(matrix, dtype=np.float32)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

    return np.sum(unit(reference) * unit(vectors), axis=1)


@contextlib.contextmanager
def checkout_of(commit: str, scratch: Path):
    """The tree at `commit`, checked out beside this one (git worktree) under `scratch`, for a
    before-and-after run; removed afterwards."""
    import subprocess

    tree = scratch / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True, capture_output=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


def serve_local_endpoint(tree: Path, variables: dict[str, str], prefix: str = "bench"):
    """`src/local_endpoint.py` of the checkout at `tree` with these variables, once its health
    answers 200; returns the process and its `/v2/local` base URL (its log in a temporary file)."""
    import subprocess
    import sys
    import tempfile

    import httpx

    port = free_port()
    log = open(tempfile.mkstemp(prefix=f"{prefix}-", suffix=".log")[1], "w")  # noqa: SIM115 - kept with the process
    server = subprocess.Popen([sys.executable, "src/local_endpoint.py", "--port", str(port)], cwd=tree,
                              env={**ENV, **variables}, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}/v2/local"
    deadline = time.time() + 300
    while time.time() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return server, base
        except httpx.TransportError:
            time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"the local endpoint of {tree} did not start: {Path(log.name).read_text()[-1500:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_for(backend: str = "torch", **variables: str):
    """The worker built in this process, as the entry points build it."""
    os.environ.update({k: v for k, v in ENV.items() if k.startswith(("HF_", "MODEL_", "TOKENIZERS"))})
    for key in ("BACKEND", "ONNX_QUANTIZED", "DTYPES"):
        os.environ.pop(key, None)
    os.environ.update({"BACKEND": backend, **variables})
    from embedding_worker.serving.logs import configure_logging
    from embedding_worker.serving.worker import build_worker

    worker = build_worker()
    configure_logging()  # as the entry points do: one plain line per event, not Infinity's rich handler
    return worker


async def timed_requests(service, requests: list, concurrency: int) -> float:
    """Seconds the worker's service takes for `requests`, `concurrency` at once, after the
    first one alone as a warm-up."""
    await service.embed(requests[0])
    gate = asyncio.Semaphore(concurrency)

    async def one(request) -> None:
        async with gate:
            await service.embed(request)

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - started
