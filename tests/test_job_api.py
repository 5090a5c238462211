"""The rest of RunPod's job API on the local endpoint, through the runpod SDK itself:
`job.cancel()`, `endpoint.purge_queue()` and `job.stream()`, with RunPod's semantics.

The endpoint runs one job at a time (RUNPOD_MAX_CONCURRENCY=1), so later jobs wait in its
queue; a job of 2048 texts of 256 tokens takes the bundled model most of a minute here.
"""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import EMBEDDER_ID, start_local_endpoint

API_KEY = "job-api-key"
LONG = ["word " * 300] * 2048


@pytest.fixture(scope="module")
def endpoint(hub_cache):
    server, base = start_local_endpoint(MODEL_NAMES=EMBEDDER_ID, LOCAL_API_KEY=API_KEY, RUNPOD_MAX_CONCURRENCY="1")
    yield base
    server.terminate()
    server.wait(30)


@pytest.fixture
def runpod_endpoint(endpoint, monkeypatch):
    import runpod

    base = endpoint.removesuffix("/local")
    monkeypatch.setattr(runpod, "endpoint_url_base", base)
    monkeypatch.setattr(runpod, "api_key", API_KEY)
    return runpod.Endpoint("local")


def request(texts: list[str]) -> dict:
    """A request as the SDK takes it: wrapped in "input" (the embeddings body has its own)."""
    return {"input": {"model": EMBEDDER_ID, "input": texts}}


def wait_for(job, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while job.status() != status:
        assert time.monotonic() < deadline, job.status()
        time.sleep(0.2)


def test_stream_yields_the_output_once_then_ends(runpod_endpoint):
    job = runpod_endpoint.run(request(["a cat"]))
    chunks = list(job.stream())
    assert len(chunks) == 1 and len(chunks[0]["data"][0]["embedding"]) == 384
    assert job.output()["data"] == chunks[0]["data"]


def test_purge_queue_cancels_the_queued_jobs_and_cancel_stops_the_running_one(runpod_endpoint, endpoint):
    running = runpod_endpoint.run(request(LONG))
    wait_for(running, "IN_PROGRESS")
    queued = [runpod_endpoint.run(request(["a dog"])) for _ in range(2)]
    assert [job.status() for job in queued] == ["IN_QUEUE", "IN_QUEUE"]

    assert runpod_endpoint.purge_queue() == {"removed": 2, "status": "completed"}
    assert [job.status() for job in queued] == ["CANCELLED", "CANCELLED"]
    assert running.status() == "IN_PROGRESS"  # a purge leaves the running job alone

    started = time.monotonic()
    assert running.cancel() == {"id": running.job_id, "status": "CANCELLED"}
    assert running.status() == "CANCELLED"
    # Its queued engine work is dropped: the next job runs at once, not after the minute
    # the cancelled one still had to go.
    after = runpod_endpoint.run_sync(request(["a bird"]), timeout=60)
    assert len(after["data"]) == 1
    assert time.monotonic() - started < 20
    health = httpx.get(f"{endpoint}/health").json()
    assert health["jobs"]["inProgress"] == health["jobs"]["inQueue"] == 0


def test_cancel_from_curl_and_of_unknown_or_finished_jobs(runpod_endpoint, endpoint):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    done = runpod_endpoint.run(request(["a cat"]))
    wait_for(done, "COMPLETED")
    answer = httpx.post(f"{endpoint}/cancel/{done.job_id}", headers=headers)  # no body, no content type
    assert answer.status_code == 200 and answer.json() == {"id": done.job_id, "status": "COMPLETED"}
    missing = httpx.post(f"{endpoint}/cancel/no-such-job", headers=headers)
    assert missing.status_code == 404 and "no-such-job" in missing.json()["error"]
    assert httpx.post(f"{endpoint}/purge-queue").status_code == 401
    assert httpx.post(f"{endpoint}/purge-queue", headers=headers).json() == {"removed": 0, "status": "completed"}
    assert httpx.get(f"{endpoint}/stream/no-such-job", headers=headers).status_code == 404
