"""No hang, no crash, nothing lost: a failing, stuck or overloaded engine, and fuzzed input.

Faults are injected into real engines by replacing the model's forward pass.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import EMBEDDER_ID, RERANKER_ID, start_worker


def embedder_forward(running):
    """The torch module whose forward the embedder's engine runs."""
    replica = running.registry.resolve(EMBEDDER_ID).engine._model_replicas[0]
    return replica[0].auto_model


def slow_down(running, monkeypatch, seconds: float) -> None:
    """Make each forward pass of the embedder take `seconds` longer."""
    module = embedder_forward(running)
    original = module.forward

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "forward", slow)


def timed(running, job_input, timeout: float = 60):
    started = time.perf_counter()
    output = running.run(job_input, timeout=timeout)
    return output, time.perf_counter() - started


@pytest.fixture
def two_models(hub_cache):
    running = start_worker(MODEL_NAMES=f"{EMBEDDER_ID};{RERANKER_ID}", REQUEST_TIMEOUT="20")
    assert "data" in running.run({"model": EMBEDDER_ID, "input": "warm"})
    yield running
    running.close()


def test_a_forward_pass_that_raises_fails_fast_and_asks_for_a_new_worker(two_models, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (injected)")

    monkeypatch.setattr(embedder_forward(two_models), "forward", out_of_memory)

    output, elapsed = timed(two_models, {"model": EMBEDDER_ID, "input": "boom"})
    assert elapsed < 5, "the request in flight must not wait for the 20 s timeout"
    assert output["refresh_worker"] is True
    assert output["error"].startswith(f"model '{EMBEDDER_ID}' is unavailable: its engine failed in encode_core: "
                                      "RuntimeError: CUDA out of memory (injected)")

    later, elapsed = timed(two_models, {"model": EMBEDDER_ID, "input": "again"})
    assert elapsed < 0.5 and later == output  # refused at once: nothing queues behind a dead engine

    assert two_models.registry.healthy is False
    assert two_models.registry.health()[RERANKER_ID] == "ok"
    ranked = two_models.run({"model": RERANKER_ID, "query": "q", "docs": ["a", "b"]})
    assert len(ranked["results"]) == 2  # the other model keeps serving


def test_runpod_sees_a_failed_job_and_a_stop_request(two_models, monkeypatch):
    from runpod.serverless.modules.rp_job import run_job

    def broken(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(embedder_forward(two_models), "forward", broken)
    job = {"id": "j1", "input": {"model": EMBEDDER_ID, "input": "x"}}
    result = asyncio.run_coroutine_threadsafe(run_job(two_models.handler, job), two_models.loop).result(30)
    assert result["stopPod"] is True and "is unavailable" in result["error"]


def test_a_forward_that_hangs_is_detected_at_the_timeout(hub_cache, monkeypatch):
    running = start_worker(MODEL_NAMES=EMBEDDER_ID, REQUEST_TIMEOUT="1")
    try:
        assert "data" in running.run({"model": EMBEDDER_ID, "input": "warm"})
        slow_down(running, monkeypatch, 5)  # no batch finishes within the 1 s timeout
        output, elapsed = timed(running, {"model": EMBEDDER_ID, "input": "hangs"})
        assert 0.9 < elapsed < 2, elapsed
        assert output == {
            "error": f"model '{EMBEDDER_ID}' is unavailable: its engine finished no batch in 1 s while it "
                     "had work; the worker asked to be replaced",
            "refresh_worker": True,
        }
        assert running.registry.healthy is False
    finally:
        running.close()


def burst(running, requests: int, texts: int):
    async def send():
        jobs = [running.handler({"id": str(i), "input": {"model": EMBEDDER_ID,
                                                         "input": [f"text {i} {j} " * 8 for j in range(texts)]}})
                for i in range(requests)]
        return await asyncio.gather(*jobs)

    return asyncio.run_coroutine_threadsafe(send(), running.loop).result(300)


def test_a_burst_of_many_timeouts_of_work_never_declares_a_busy_engine_dead(hub_cache):
    # 24 x 128 texts is about 10 times REQUEST_TIMEOUT of work on 2 CPU cores
    running = start_worker(MODEL_NAMES=EMBEDDER_ID, REQUEST_TIMEOUT="2")
    try:
        assert "data" in running.run({"model": EMBEDDER_ID, "input": "warm"})
        outputs = burst(running, 24, 128)
        served = [o for o in outputs if "data" in o]
        failed = [o for o in outputs if "error" in o]
        assert served and len(served) + len(failed) == 24
        assert not any("refresh_worker" in o for o in outputs)
        assert all("retry later" in o["error"] for o in failed), failed[:2]
        assert all(len(o["data"]) == 128 for o in served)
        assert running.registry.healthy
        output, elapsed = timed(running, {"model": EMBEDDER_ID, "input": "right after"})
        assert "data" in output and elapsed < 1.5, elapsed
    finally:
        running.close()


def test_a_batch_that_runs_out_of_memory_is_retried_in_halves_and_the_engine_keeps_serving(
        hub_cache, monkeypatch, sentence_transformer):
    import numpy as np
    import torch

    running = start_worker(MODEL_NAMES=EMBEDDER_ID)
    try:
        assert "data" in running.run({"model": EMBEDDER_ID, "input": "warm"})
        module = embedder_forward(running)
        original = module.forward

        def out_of_memory_above_4(*args, **kwargs):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            if len(input_ids) > 4:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
            return original(*args, **kwargs)

        monkeypatch.setattr(module, "forward", out_of_memory_above_4)
        texts = [f"sentence {i} of an oversized batch" for i in range(16)]
        output = running.run({"model": EMBEDDER_ID, "input": texts})
        got = np.array([item["embedding"] for item in output["data"]])
        expected = sentence_transformer.encode(texts, normalize_embeddings=True)
        assert np.abs(got - expected).max() < 1e-5
        assert running.registry.healthy
        assert running.registry.resolve(EMBEDDER_ID).health.oom_retries >= 2
        assert "data" in running.run({"model": EMBEDDER_ID, "input": "still serving"})
    finally:
        running.close()


def test_overload_fails_fast_and_the_rest_complete(hub_cache, monkeypatch):
    running = start_worker(MODEL_NAMES=EMBEDDER_ID, INFINITY_QUEUE_SIZE="6", BATCH_SIZES="2")
    try:
        assert "data" in running.run({"model": EMBEDDER_ID, "input": "warm"})
        slow_down(running, monkeypatch, 0.2)

        async def burst():
            jobs = [running.handler({"id": str(i), "input": {"model": EMBEDDER_ID, "input": [f"t{i}", f"u{i}"]}})
                    for i in range(20)]
            return await asyncio.gather(*jobs)

        started = time.perf_counter()
        outputs = asyncio.run_coroutine_threadsafe(burst(), running.loop).result(120)
        overloaded = [o for o in outputs if "error" in o]
        served = [o for o in outputs if "data" in o]
        assert len(overloaded) + len(served) == 20
        assert overloaded and served
        assert all("is overloaded" in o["error"] and "INFINITY_QUEUE_SIZE" in o["error"] for o in overloaded)
        assert all(len(o["data"]) == 2 for o in served)
        assert time.perf_counter() - started < 60
        assert running.registry.healthy  # overload is not a failure
    finally:
        running.close()


def test_trust_remote_code_is_off_unless_asked_for(worker):
    engine = worker.registry.resolve(EMBEDDER_ID).engine
    assert engine.engine_args.trust_remote_code is False


def test_the_local_endpoint_reports_a_failed_engine(hub_cache, monkeypatch):
    from fastapi.testclient import TestClient

    from embedding_worker.serving.local_endpoint import LocalEndpointConfig, create_app
    from embedding_worker.serving.worker import build_worker

    monkeypatch.setenv("MODEL_NAMES", f"{EMBEDDER_ID};{RERANKER_ID}")
    built = build_worker()
    with TestClient(create_app(built, LocalEndpointConfig()), base_url="http://localhost") as client:
        assert client.get("/v2/x/health").status_code == 200
        job = {"input": {"model": EMBEDDER_ID, "input": "x"}}
        assert client.post("/v2/x/runsync", json=job).json()["status"] == "COMPLETED"

        def broken(*args, **kwargs):
            raise RuntimeError("injected")

        replica = built.registry.resolve(EMBEDDER_ID).engine._model_replicas[0]
        monkeypatch.setattr(replica[0].auto_model, "forward", broken)
        failed = client.post("/v2/x/runsync", json=job).json()
        assert failed["status"] == "FAILED" and "is unavailable" in failed["error"]
        assert "stopPod" not in failed  # RunPod's own API shows status and error

        health = client.get("/v2/x/health")
        assert health.status_code == 503
        assert health.json()["models"][EMBEDDER_ID].startswith("failed: its engine failed in encode_core")
        assert health.json()["models"][RERANKER_ID] == "ok"
        assert health.json()["workers"]["unhealthy"] == 1

        openai = client.post("/v2/x/openai/v1/embeddings", json={"model": EMBEDDER_ID, "input": "x"})
        assert openai.status_code == 503 and openai.json()["error"]["type"] == "server_error"
        ranked = client.post("/v2/x/runsync", json={"input": {"model": RERANKER_ID, "query": "q", "docs": ["a"]}})
        assert ranked.json()["status"] == "COMPLETED"
