"""The local endpoint under load: a burst of concurrent requests, and a soak of mixed load
with the server's memory sampled throughout."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import numpy as np

from common import MODEL, corpus
from quality import embed_once
from servers import Targets


def burst(requests: int = 300) -> dict:
    """`requests` single-text requests at once to `/runsync`: each must be answered, once,
    with its own text's vector; the server's peak memory is sampled."""
    texts = [f"load request {i}: " + sentence for i, sentence in enumerate(corpus(requests))]
    targets = Targets(["local endpoint"], "auto")
    targets.start_processes()
    server, peak = targets.process("local endpoint"), [0]
    url = f"{targets.urls['local endpoint']}/runsync"

    async def run_all() -> tuple[list[dict], float]:
        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], server.memory_info().rss)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=requests)) as client:
            started = time.perf_counter()
            replies = await asyncio.gather(*(client.post(url, json={"input": {"model": MODEL, "input": text}})
                                             for text in texts))
            elapsed = time.perf_counter() - started
        sampler.cancel()
        return [reply.json() for reply in replies], elapsed

    idle = server.memory_info().rss
    try:
        bodies, elapsed = asyncio.run(run_all())
    finally:
        asyncio.run(targets.stop())
    completed = sum(body["status"] == "COMPLETED" for body in bodies)
    vectors = np.array([body["output"]["data"][0]["embedding"] for body in bodies])
    expected = embed_once(texts, DTYPES="auto")
    cosine = (vectors * expected).sum(1) / np.linalg.norm(vectors, axis=1)
    return {"requests": requests, "completed": completed, "distinct_job_ids": len({b["id"] for b in bodies}),
            "min_cosine_to_own_vector": round(float(cosine.min()), 5), "seconds": round(elapsed, 2),
            "server_rss_idle_mib": round(idle / 2**20), "server_rss_peak_mib": round(peak[0] / 2**20)}


SOAK_RESULT_TTL = 10  # seconds results are kept during the soak (defaults: /run 1800, /runsync 60)


def soak(seconds: float = 180, concurrency: int = 8) -> dict:
    """Mixed load for `seconds`: small and large embeddings through /runsync, /run then
    /status, the OpenAI route, bad inputs; RSS sampled every 5 s. Finished results are kept
    SOAK_RESULT_TTL seconds, so what is kept settles within seconds and the trend shows
    leaks rather than retention (retention has its own bound, LOCAL_MAX_RESULT_BYTES)."""
    ttl = str(SOAK_RESULT_TTL)
    targets = Targets(["local endpoint"], "auto", env={"LOCAL_RESULT_TTL": ttl, "LOCAL_RUNSYNC_TTL": ttl})
    targets.start_processes()
    server = targets.process("local endpoint")
    base = targets.urls["local endpoint"]
    texts = corpus(2048)
    samples: list[tuple[float, float]] = []
    counts = {"completed": 0, "failed": 0, "refused": 0}

    async def one(client: httpx.AsyncClient, rng: random.Random) -> None:
        kind = rng.random()
        if kind < 0.5:
            reply = await client.post(f"{base}/runsync", json={"input": {"model": MODEL, "input": rng.sample(texts, 8)}})
        elif kind < 0.6:
            reply = await client.post(f"{base}/runsync", json={"input": {"model": MODEL, "input": rng.sample(texts, 512)}})
        elif kind < 0.8:
            job = (await client.post(f"{base}/run", json={"input": {"model": MODEL, "input": rng.sample(texts, 16)}})).json()
            while (reply := await client.get(f"{base}/status/{job['id']}")).json()["status"] in ("IN_QUEUE", "IN_PROGRESS"):
                await asyncio.sleep(0.1)
        elif kind < 0.95:
            reply = await client.post(f"{base}/openai/v1/embeddings", json={"model": MODEL, "input": rng.sample(texts, 4),
                                                                            "encoding_format": "base64"})
        else:
            reply = await client.post(f"{base}/runsync", json={"input": {"model": MODEL, "input": [1, 2, 3]}})
        status = reply.json().get("status") if reply.status_code == 200 else None
        counts["completed" if status == "COMPLETED" or (status is None and reply.status_code == 200)
               else "failed" if status == "FAILED" else "refused"] += 1

    async def run_all() -> None:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def sampler() -> None:
            while time.perf_counter() < deadline:
                samples.append((time.perf_counter() - started, server.memory_info().rss / 2**20))
                await asyncio.sleep(5)

        async def client_loop(seed: int) -> None:
            rng = random.Random(seed)
            async with httpx.AsyncClient(timeout=600) as client:
                while time.perf_counter() < deadline:
                    await one(client, rng)

        await asyncio.gather(sampler(), *(client_loop(i) for i in range(concurrency)))
        samples.append((time.perf_counter() - started, server.memory_info().rss / 2**20))

    try:
        asyncio.run(run_all())
    finally:
        asyncio.run(targets.stop())
    half = [s for s in samples if s[0] >= seconds / 2]
    slope = float(np.polyfit([s[0] for s in half], [s[1] for s in half], 1)[0]) * 60 if len(half) > 2 else 0.0
    return {"seconds": seconds, "concurrency": concurrency, "result_ttl_s": SOAK_RESULT_TTL, **counts,
            "rss_start_mib": round(samples[0][1]), "rss_end_mib": round(samples[-1][1]),
            "rss_peak_mib": round(max(s[1] for s in samples)),
            "rss_trend_second_half_mib_per_min": round(slope, 1),
            "rss_samples_mib": [round(s[1]) for s in samples]}
