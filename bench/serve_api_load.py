"""Measure the worker as a user meets it, on the bundled model, and print the numbers.

1. in-process ceiling: the same requests straight to the service, no HTTP (the ceiling);
2. cold start: `python src/handler.py --test_input ...` from process start to exit;
3. throughput: N requests of 8 sentences through `src/handler.py --rp_serve_api`
   (runpod's local `/runsync`) at a given concurrency.

    python bench/serve_api_load.py [--requests 200] [--concurrency 16] [--runs 3]

Needs the bundled model in the local cache (`make run` lays it there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ENV = {
    **os.environ,
    "HF_HOME": str(ROOT / ".cache" / "huggingface"),
    "HF_HUB_OFFLINE": "1",
    "MODEL_NAMES": MODEL,
    "PYTHONUNBUFFERED": "1",
}
WORDS = "the a of embedding model worker request vector search query document token batch " \
        "engine serverless latency throughput cold start python runpod infinity rank score".split()


def corpus(count: int, words: int = 30, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(count)]


def cold_start(runs: int) -> list[float]:
    job = json.dumps({"input": {"model": MODEL, "input": "Hello, world!"}})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "src/handler.py", "--test_input", job], cwd=ROOT, env=ENV,
                       check=True, capture_output=True, timeout=300)
        times.append(time.perf_counter() - started)
    return times


async def load(port: int, requests: int, concurrency: int, batch: int) -> dict:
    texts = corpus(requests * batch)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        body = {"input": {"model": MODEL, "input": texts[i * batch:(i + 1) * batch]}}
        async with gate:
            started = time.perf_counter()
            reply = await client.post(f"http://127.0.0.1:{port}/runsync", json=body)
            latencies.append(time.perf_counter() - started)
        reply.raise_for_status()
        data = reply.json()["output"]["data"]
        assert len(data) == batch and len(data[0]["embedding"]) == 384, reply.text[:300]

    async with httpx.AsyncClient(timeout=300) as client:
        await one(client, 0)  # first request starts the engine
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(one(client, i) for i in range(requests)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(requests / elapsed, 1),
        "sentences_per_s": round(requests * batch / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p95_ms": round(1000 * latencies[int(len(latencies) * 0.95) - 1], 1),
    }


async def in_process(requests: int, concurrency: int, batch: int) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.update({k: v for k, v in ENV.items() if k.startswith(("HF_", "MODEL_"))})
    from embedding_worker.schemas import EmbeddingRequest
    from embedding_worker.worker import build_worker

    service = build_worker().handler.service
    texts = corpus(requests * batch)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            request = EmbeddingRequest(model=MODEL, input=texts[i * batch:(i + 1) * batch])
            response = (await service.embed(request)).model_dump(mode="json")
            assert len(response["data"]) == batch

    await one(0)
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    elapsed = time.perf_counter() - started
    await service.registry.stop()
    return {"seconds": round(elapsed, 2), "sentences_per_s": round(requests * batch / elapsed, 1)}


def serve_api_throughput(requests: int, concurrency: int, port: int = 8765) -> dict:
    server = subprocess.Popen(
        [sys.executable, "src/handler.py", "--rp_serve_api", "--rp_api_port", str(port)],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/docs", timeout=2)
                break
            except httpx.HTTPError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the --rp_serve_api server did not come up")
                time.sleep(0.5)
        return asyncio.run(load(port, requests, concurrency, batch=8))
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3, help="cold starts to time")
    args = parser.parse_args()
    ceiling = asyncio.run(in_process(args.requests, args.concurrency, batch=8))
    print(json.dumps({"in_process": ceiling}))
    starts = cold_start(args.runs)
    print(json.dumps({"cold_start_s": {"runs": [round(t, 2) for t in starts],
                                       "median": round(statistics.median(starts), 2)}}))
    served = serve_api_throughput(args.requests, args.concurrency)
    print(json.dumps({"rp_serve_api": served}))
    ratio = served["sentences_per_s"] / ceiling["sentences_per_s"]
    print(json.dumps({"rp_serve_api_over_in_process": round(ratio, 3)}))


if __name__ == "__main__":
    main()
