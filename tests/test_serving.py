"""The local HTTP server under load and at shutdown, run as users run it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time

import httpx
import numpy as np
import psutil

from conftest import EMBEDDER_ID, start_local_endpoint


def start_server(**variables: str) -> tuple[subprocess.Popen, str]:
    return start_local_endpoint(MODEL_NAMES=EMBEDDER_ID, **variables)


class PeakMemory(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process, self.peak, self.stopped = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)


def test_300_concurrent_requests_each_answered_once_and_correctly(hub_cache, sentence_transformer):
    server, base = start_server()
    memory = PeakMemory(server.pid)
    memory.start()
    texts = [f"request {i} asks about topic {i % 13} and detail {i * 7 % 31}" for i in range(300)]

    async def all_at_once():
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=300)) as client:
            replies = await asyncio.gather(*(
                client.post(f"{base}/runsync", json={"input": {"model": EMBEDDER_ID, "input": text}})
                for text in texts))
            return [reply.json() for reply in replies]

    try:
        started = time.perf_counter()
        bodies = asyncio.run(all_at_once())
        elapsed = time.perf_counter() - started
    finally:
        memory.stopped.set()
        server.terminate()
        server.wait(60)
    assert [b["status"] for b in bodies] == ["COMPLETED"] * 300
    assert len({b["id"] for b in bodies}) == 300
    got = np.array([b["output"]["data"][0]["embedding"] for b in bodies])
    expected = sentence_transformer.encode(texts, normalize_embeddings=True)
    assert np.abs(got - expected).max() <= 1e-5  # each answer is its own request's
    print(f"\n300 concurrent requests in {elapsed:.1f} s; server peak RSS {memory.peak / 2**20:.0f} MiB")
    assert memory.peak < 4 * 2**30


def test_sigterm_lets_jobs_in_flight_finish_then_exits_0(hub_cache):
    server, base = start_server()
    texts = [f"sentence {i} " * 20 for i in range(64)]
    replies: list = []

    def post(i: int) -> None:
        replies.append(httpx.post(f"{base}/runsync", json={"input": {"model": EMBEDDER_ID, "input": texts}},
                                  timeout=120))

    senders = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for sender in senders:
        sender.start()
    time.sleep(0.5)  # the jobs are in flight
    server.send_signal(signal.SIGTERM)
    for sender in senders:
        sender.join(120)
    exit_code = server.wait(60)
    assert exit_code == 0
    assert [r.status_code for r in replies] == [200] * 4
    assert all(r.json()["status"] == "COMPLETED" and len(r.json()["output"]["data"]) == 64 for r in replies)


def test_a_queued_run_job_finishes_before_the_server_exits(hub_cache):
    server, base = start_server(RUNPOD_MAX_CONCURRENCY="1")
    ids = [httpx.post(f"{base}/run", json={"input": {"model": EMBEDDER_ID, "input": ["x " * 100] * 64}}).json()["id"]
           for _ in range(3)]
    server.send_signal(signal.SIGTERM)
    assert server.wait(120) == 0
    assert len(set(ids)) == 3
    # accepted before the signal, all run before the engines stopped
    assert "stopping: 3 jobs completed, 0 failed" in server.read_log()
