"""The local endpoint under load: a burst of concurrent requests, and a soak of mixed load
with the server's memory sampled throughout."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import numpy as np

from common import MODEL, WORDS, corpus
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
SOAK_SAMPLE_EVERY = 10  # seconds between RSS samples
# The worker as shipped; without trimming freed memory; and as it was before either bound (torch's
# kernel caches at their own 1024 shapes): all three get the very same requests, side by side.
SOAK_VARIANTS = {
    "as shipped": {},
    "kernel caches bounded, no trimming": {"MEMORY_TRIM_INTERVAL": "0"},
    "neither (torch's defaults)": {"MEMORY_TRIM_INTERVAL": "0", "LRU_CACHE_CAPACITY": "1024",
                                   "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"},
}


def mixed_texts(count: int, seed: int = 1) -> list[str]:
    """Texts of 3 to 300 words: every request meets new padded lengths (new kernel shapes)."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 300))).capitalize() + "." for _ in range(count)]


def soak(seconds: float = 1800, concurrency: int = 8, variants: dict[str, dict[str, str]] | None = None) -> dict:
    """Mixed load for `seconds`, the same requests to each variant of the local endpoint in turn:
    1 to 256 texts of 3 to 300 words through /runsync, /run then /status, the OpenAI route with
    base64, bad inputs; each server's RSS sampled every SOAK_SAMPLE_EVERY seconds. Finished
    results are kept SOAK_RESULT_TTL seconds, so what is kept settles within seconds and the
    curve shows the process's own growth rather than retention (retention has its own bound,
    LOCAL_MAX_RESULT_BYTES)."""
    variants = variants or SOAK_VARIANTS
    ttl = str(SOAK_RESULT_TTL)
    fleet = {name: Targets(["local endpoint"], "auto", env={"LOCAL_RESULT_TTL": ttl, "LOCAL_RUNSYNC_TTL": ttl, **env})
             for name, env in variants.items()}
    for targets in fleet.values():
        targets.start_processes()
    servers = {name: t.process("local endpoint") for name, t in fleet.items()}
    bases = {name: t.urls["local endpoint"] for name, t in fleet.items()}
    texts = mixed_texts(4096)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fleet}
    counts = {name: {"completed": 0, "failed": 0, "refused": 0, "seconds_in_requests": 0.0} for name in fleet}

    async def one(client: httpx.AsyncClient, base: str, kind: float, batch: list[str], tally: dict) -> None:
        started = time.perf_counter()
        if kind < 0.45:
            reply = await client.post(f"{base}/runsync", json={"input": {"model": MODEL, "input": batch}})
        elif kind < 0.65:
            job = (await client.post(f"{base}/run", json={"input": {"model": MODEL, "input": batch}})).json()
            while (reply := await client.get(f"{base}/status/{job['id']}")).json()["status"] in ("IN_QUEUE", "IN_PROGRESS"):
                await asyncio.sleep(0.1)
        elif kind < 0.95:
            reply = await client.post(f"{base}/openai/v1/embeddings", json={"model": MODEL, "input": batch,
                                                                            "encoding_format": "base64"})
        else:
            reply = await client.post(f"{base}/runsync", json={"input": {"model": MODEL, "input": [1, 2, 3]}})
        status = reply.json().get("status") if reply.status_code == 200 else None
        tally["completed" if status == "COMPLETED" or (status is None and reply.status_code == 200)
              else "failed" if status == "FAILED" else "refused"] += 1
        tally["seconds_in_requests"] += time.perf_counter() - started

    async def run_all() -> None:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        def sample() -> None:
            for name, server in servers.items():
                samples[name].append((time.perf_counter() - started, server.memory_info().rss / 2**20))

        async def sampler() -> None:
            while time.perf_counter() < deadline:
                sample()
                await asyncio.sleep(SOAK_SAMPLE_EVERY)

        async def client_loop(seed: int) -> None:
            rng = random.Random(seed)
            names, turn = list(fleet), seed
            async with httpx.AsyncClient(timeout=600) as client:
                while time.perf_counter() < deadline:
                    kind, size = rng.random(), rng.choice([1, 1, 2, 8, 8, 16, 32, 64, 256])
                    batch = rng.sample(texts, size)
                    turn += 1  # the same request to each variant in turn, each first as often
                    for name in names[turn % len(names):] + names[:turn % len(names)]:
                        await one(client, bases[name], kind, batch, counts[name])

        await asyncio.gather(sampler(), *(client_loop(i) for i in range(concurrency)))
        sample()

    try:
        asyncio.run(run_all())
    finally:
        for targets in fleet.values():
            asyncio.run(targets.stop())
    return {"seconds": seconds, "concurrency": concurrency, "result_ttl_s": SOAK_RESULT_TTL, "order_rotated": True,
            "sample_every_s": SOAK_SAMPLE_EVERY, "variants": {name: {"env": variants[name], **counts[name],
                                                                      **rss_summary(samples[name], seconds)}
                                                               for name in fleet}}


def rss_summary(samples: list[tuple[float, float]], seconds: float) -> dict:
    """Start, plateau (median of the last third), peak and the trend of the last half."""
    rss = [s[1] for s in samples]
    half = [s for s in samples if s[0] >= seconds / 2]
    slope = float(np.polyfit([s[0] for s in half], [s[1] for s in half], 1)[0]) * 60 if len(half) > 2 else 0.0
    plateau = float(np.median([s[1] for s in samples if s[0] >= seconds * 2 / 3] or rss[-1:]))
    return {"rss_start_mib": round(rss[0]), "rss_after_first_minute_mib": round(next(
                (s[1] for s in samples if s[0] >= 60), rss[-1])),
            "rss_plateau_mib": round(plateau), "rss_end_mib": round(rss[-1]), "rss_peak_mib": round(max(rss)),
            "rss_trend_second_half_mib_per_min": round(slope, 2),
            "rss_samples": [[round(t), round(m)] for t, m in samples]}


def trim_cost(seconds: float = 200) -> dict:
    """Speed of trimming freed memory against not trimming: the same load twice, once in each
    order, since the server asked first in a round is slower; the geometric mean of the two."""
    ratios, plateaus = [], {"trim": [], "no trim": []}
    for variants in ({"trim": {}, "no trim": {"MEMORY_TRIM_INTERVAL": "0"}},
                     {"no trim": {"MEMORY_TRIM_INTERVAL": "0"}, "trim": {}}):
        found = soak(seconds, 8, variants)["variants"]
        ratios.append(found["trim"]["seconds_in_requests"] / found["no trim"]["seconds_in_requests"])
        for name in plateaus:
            plateaus[name].append(found[name]["rss_plateau_mib"])
    return {"seconds": seconds, "ratios": [round(r, 3) for r in ratios],
            "geometric_mean": round(float(np.sqrt(ratios[0] * ratios[1])), 3),
            "plateau_mib": {name: round(float(np.mean(values))) for name, values in plateaus.items()}}
