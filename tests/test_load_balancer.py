"""RunPod's load-balancing endpoint type: `ENDPOINT_TYPE=load_balancer python src/handler.py`,
as the image runs it, behind a stand-in for RunPod's load balancer that polls the health
route and routes only to a worker answering 200 (`stand_in_load_balancer.py`). Clients
written for such an endpoint run unchanged against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import EMBEDDER_ID, RERANKER_ID, ROOT, free_port, start_worker
from process_watch import terminate_timed
from stand_in_hub import Fault, StandInHub
from stand_in_load_balancer import StandInLoadBalancer

TEXTS = ["Hello, world!", "The quick brown fox jumps over the lazy dog."]


def start(**variables: str) -> tuple[subprocess.Popen, int, int]:
    """The worker as a load-balancing endpoint; returns it, its API port and its health port."""
    port = free_port()
    health = int(variables.pop("PORT_HEALTH", port))
    log = Path(tempfile.mkstemp(prefix="load-balancer-", suffix=".log")[1])
    with log.open("w") as sink:
        worker = subprocess.Popen([sys.executable, "src/handler.py"], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                  env={**os.environ, "ENDPOINT_TYPE": "load_balancer", "PORT": str(port),
                                       "PORT_HEALTH": str(health), **variables})
    worker.read_log = log.read_text
    return worker, port, health


def stop(worker: subprocess.Popen) -> int:
    worker.send_signal(signal.SIGTERM)
    return worker.wait(60)


@pytest.fixture(scope="module")
def endpoint(hub_cache):
    worker, port, health = start(MODEL_NAMES=f"{EMBEDDER_ID};{RERANKER_ID}", PORT_HEALTH=str(free_port()))
    with StandInLoadBalancer(port, health) as balancer:
        balancer.wait_ready(120)
        yield balancer, worker, port
    assert stop(worker) == 0
    assert "Traceback" not in worker.read_log()


def in_progress(api: str, job: dict, count: int) -> tuple[list[threading.Thread], list[httpx.Response]]:
    """`count` embeddings requests sent at once, returned once the worker has them all in progress."""
    replies: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: replies.append(httpx.post(f"{api}/v1/embeddings", json=job, timeout=300)))
               for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while f"embedding_worker_requests_in_progress {count}.0" not in httpx.get(f"{api}/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return threads, replies


def answer_to_headers(port: int, path: str, body_bytes: int) -> tuple[int, dict[str, str], float]:
    """A POST that announces `body_bytes` but sends only its first bytes: the status, headers and
    seconds of an answer that came without the body (a server that read it first never answers)."""
    import socket

    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {body_bytes}\r\n\r\n").encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b'{"model": "tiny", "input": "')
        reply = sock.recv(65536).decode("latin-1")
    took = time.perf_counter() - started
    status_line, *lines = reply.split("\r\n\r\n", 1)[0].split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, took


def test_while_loading_a_request_is_refused_before_its_body_and_sigterm_ends_the_load_at_once(
        tiny_embedder_path, tmp_path):
    """503 with Retry-After from the headers alone while the model downloads (a 30 MB body is
    never read); SIGTERM during the download ends the process within 5 s, status 0."""
    size = (tiny_embedder_path / "model.safetensors").stat().st_size
    with StandInHub({"stand-in/slow": tiny_embedder_path}) as hub:
        hub.add_fault(Fault("model.safetensors", rate=size / 60))  # a minute for the weights
        worker, port, _ = start(MODEL_NAMES="stand-in/slow", HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0",
                                HF_HOME=str(tmp_path / "home"), HF_HUB_CACHE=str(tmp_path / "home/hub"),
                                BAKED_HF_CACHE=str(tmp_path / "none"), RUNPOD_VOLUME_DIR=str(tmp_path / "none"))
        try:
            with StandInLoadBalancer(port) as balancer:
                deadline = time.monotonic() + 60
                while 204 not in balancer.statuses():
                    assert time.monotonic() < deadline, worker.read_log()
                    time.sleep(0.05)
                status, headers, took = answer_to_headers(port, "/v1/embeddings", 30 * 10**6)
                time.sleep(1)  # into the download
                code, stopped = terminate_timed(worker)
        finally:
            if worker.poll() is None:
                worker.kill()
    assert status == 503 and headers["retry-after"] == "5" and took < 1, (status, took)
    assert code == 0 and stopped < 5, (code, stopped)
    assert "Traceback" not in worker.read_log()


def expected(sentence_transformer, texts):
    return sentence_transformer.encode(texts, normalize_embeddings=True)


def test_health_answers_204_while_a_slow_download_loads_then_200(tiny_embedder_path, tmp_path):
    """Bound in the first second, 204 while the model downloads (a slow stand-in hub), 200 once
    it has loaded and passed its self-test; nothing else in between."""
    size = (tiny_embedder_path / "model.safetensors").stat().st_size
    with StandInHub({"stand-in/slow": tiny_embedder_path}) as hub:
        hub.add_fault(Fault("model.safetensors", rate=size / 3))  # three seconds for the weights
        started = time.monotonic()
        worker, port, _ = start(MODEL_NAMES="stand-in/slow", HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0",
                                HF_HOME=str(tmp_path / "home"), HF_HUB_CACHE=str(tmp_path / "home/hub"),
                                BAKED_HF_CACHE=str(tmp_path / "none"), RUNPOD_VOLUME_DIR=str(tmp_path / "none"))
        try:
            with StandInLoadBalancer(port) as balancer:
                balancer.wait_ready(120)
                first = next(at for at, status in balancer.health if status is not None)
                ready = next(at for at, status in balancer.health if status == 200)
                reply = httpx.post(f"{balancer.url}/v1/embeddings", json={"model": "stand-in/slow", "input": "hi"})
        finally:
            code = stop(worker)
    assert balancer.statuses()[-2:] == [204, 200] and set(balancer.statuses()) <= {None, 204, 200}
    assert first + (balancer.started - started) < 1.5, worker.read_log()  # the port answers at once
    assert ready - first > 2  # the download took its three seconds, answered 204 meanwhile
    assert reply.status_code == 200 and len(reply.json()["data"]) == 1
    assert code == 0


def test_openai_sdk_and_langchain_against_the_root_api(endpoint, sentence_transformer):
    import openai
    from langchain_openai import OpenAIEmbeddings

    balancer, _, _ = endpoint
    client = openai.OpenAI(base_url=f"{balancer.url}/v1", api_key="runpod-key", max_retries=0)
    response = client.embeddings.create(model=EMBEDDER_ID, input=TEXTS)
    assert np.abs(np.array([d.embedding for d in response.data]) - expected(sentence_transformer, TEXTS)).max() <= 1e-5
    assert [m.id for m in client.models.list()] == [EMBEDDER_ID, RERANKER_ID]
    with pytest.raises(openai.NotFoundError) as raised:
        client.embeddings.create(model="not/deployed", input="x")
    assert raised.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model=EMBEDDER_ID, input=[], encoding_format="float")
    assert bad.value.param == "input"
    documents = OpenAIEmbeddings(base_url=f"{balancer.url}/v1", api_key="runpod-key", model=EMBEDDER_ID,
                                 check_embedding_ctx_length=False, max_retries=0).embed_documents(TEXTS)
    assert np.abs(np.array(documents) - expected(sentence_transformer, TEXTS)).max() <= 1e-5


def test_cohere_sdk_and_litellm_rerank_against_the_root_api(endpoint, cross_encoder, sentence_transformer,
                                                            monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import cohere
    import litellm

    balancer, _, _ = endpoint
    docs = ["Paris is in France", "Rome is in Italy", "Paris"]
    order = list(np.argsort(-cross_encoder.predict([("Where is Paris?", d) for d in docs])))
    response = cohere.Client(api_key="runpod-key", base_url=balancer.url).rerank(
        model=RERANKER_ID, query="Where is Paris?", documents=docs, top_n=2, return_documents=True)
    assert [r.index for r in response.results] == order[:2]
    for provider in ("cohere", "infinity"):
        reranked = litellm.rerank(model=f"{provider}/{RERANKER_ID}", query="Where is Paris?", documents=docs,
                                  return_documents=True, api_base=balancer.url, api_key="runpod-key")
        assert [r["index"] for r in reranked.results] == order
        assert reranked.results[0]["document"]["text"] == docs[order[0]]
    for provider, base in (("openai", f"{balancer.url}/v1"), ("infinity", balancer.url)):
        embedded = litellm.embedding(model=f"{provider}/{EMBEDDER_ID}", input=TEXTS, api_base=base,
                                     api_key="runpod-key", encoding_format="float")
        got = np.array([item["embedding"] for item in embedded.data])
        assert np.abs(got - expected(sentence_transformer, TEXTS)).max() < 1e-4


def test_errors_and_the_health_port_in_openai_shapes(endpoint):
    balancer, _, port = endpoint
    api = f"http://127.0.0.1:{port}"
    unknown = httpx.post(f"{api}/v1/chat/completions", json={"model": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["message"].startswith("/v1/chat/completions is not")
    wrong_method = httpx.get(f"{api}/v1/embeddings")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["type"] == "invalid_request_error"
    big = httpx.post(f"{api}/v1/embeddings", content=b"x" * 31_000_000, headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and "RunPod's payload cap" in big.json()["error"]["message"]
    health_port = httpx.URL(balancer.health_url).port
    assert httpx.get(balancer.health_url).status_code == 200
    assert httpx.post(f"http://127.0.0.1:{health_port}/v1/embeddings", json={}).status_code == 404  # health only
    assert httpx.get(f"{api}/ping").status_code == 200  # also on the API's port


def test_metrics_count_a_request(endpoint):
    balancer, _, port = endpoint
    def count() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        line = next((line for line in text.splitlines() if line.startswith("embedding_worker_requests_total{")
                     and 'route="/v1/tokenize"' in line and 'status="ok"' in line), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = count()
    assert httpx.post(f"{balancer.url}/v1/tokenize", json={"model": EMBEDDER_ID, "input": "hi"}).status_code == 200
    assert count() == before + 1
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    for name in ("embedding_worker_queue_wait_seconds_count", "embedding_worker_forward_seconds_count",
                 "embedding_worker_batch_size_count", "embedding_worker_model_healthy{", "embedding_worker_tokens_total"):
        assert name in text, name


def test_one_request_past_the_concurrency_bound_gets_429_at_once(hub_cache, tiny_embedder_path):
    worker, port, _ = start(MODEL_NAMES=str(tiny_embedder_path), SERVED_MODEL_NAMES="tiny",
                            RUNPOD_MAX_CONCURRENCY="2", BATCH_SIZES="8")
    api = f"http://127.0.0.1:{port}"
    try:
        with StandInLoadBalancer(port) as balancer:
            balancer.wait_ready(120)
            busy = {"model": "tiny", "input": [f"text number {i} " * 20 for i in range(2048)]}
            threads, replies = in_progress(api, busy, 2)
            started = time.perf_counter()
            refused = httpx.post(f"{api}/v1/embeddings", json={"model": "tiny", "input": "one more"})
            took = time.perf_counter() - started
            unread = answer_to_headers(port, "/v1/embeddings", 30 * 10**6)  # a 30 MB body, never read
            for thread in threads:
                thread.join(300)
    finally:
        assert stop(worker) == 0
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1" and took < 0.1, took
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert unread[0] == 429 and unread[1]["retry-after"] == "1" and unread[2] < 1, unread
    assert [reply.status_code for reply in replies] == [200, 200]


def test_sigterm_in_the_middle_of_8_requests_loses_none(hub_cache, tiny_embedder_path):
    worker, port, _ = start(MODEL_NAMES=str(tiny_embedder_path), SERVED_MODEL_NAMES="tiny", BATCH_SIZES="16")
    api = f"http://127.0.0.1:{port}"
    with StandInLoadBalancer(port) as balancer:
        balancer.wait_ready(120)
        job = {"model": "tiny", "input": [f"sentence {i} " * 30 for i in range(256)]}
        threads, replies = in_progress(api, job, 8)
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            after = httpx.get(f"{api}/ping").status_code
        except httpx.TransportError:  # the listener is closed: no 200 either
            after = None
        for thread in threads:
            thread.join(300)
        code = worker.wait(60)
    assert [reply.status_code for reply in replies] == [200] * 8
    assert all(len(reply.json()["data"]) == 256 for reply in replies)
    assert code == 0 and after != 200
    assert 200 not in [status for at, status in balancer.health if at > balancer.health[-1][0] - 0.2]
    log = worker.read_log()
    assert "stopping: health answers 503; 8 request(s) in progress finish first" in log and "stopped:" in log


def test_a_failed_engine_turns_health_to_503_naming_it(tiny_embedder_path):
    """In process: the app over a loaded worker whose engine is then judged dead."""
    import asyncio

    from embedding_worker.serving.load_balancer import LoadBalancerState, create_app
    from embedding_worker.settings import load_settings

    running = start_worker(MODEL_NAMES=str(tiny_embedder_path), SERVED_MODEL_NAMES="tiny")
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MODEL_NAMES", str(tiny_embedder_path))
            state = LoadBalancerState(load_settings(), worker=running)
        app = create_app(state)

        async def ping() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker") as client:
                return await client.get("/ping")

        assert asyncio.run(ping()).status_code == 200
        running.registry.resolve("tiny").health.mark_failed("its engine finished no batch in 300 s while it had work")
        reply = asyncio.run(ping())
        assert reply.status_code == 503
        assert reply.json() == {"error": "model 'tiny' failed: its engine finished no batch in 300 s while it had work"}
    finally:
        running.close()


def test_settings_of_the_endpoint_type_fail_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "src/handler.py"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ENDPOINT_TYPE": "load_balancer", "MODEL_NAMES": "a/b",
                               "PORT": "70000", "HEALTH_CHECK_PATH": "ping"})
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]
    assert lines == ["error: invalid settings: PORT: 70000 is not a port (1 to 65535); HEALTH_CHECK_PATH: 'ping' "
                     "is not a URL path (it starts with /, without spaces)"], done.stdout + done.stderr


def test_an_address_that_cannot_be_listened_on_fails_in_one_line_naming_host():
    port = free_port()
    done = subprocess.run([sys.executable, "src/handler.py"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ENDPOINT_TYPE": "load_balancer", "MODEL_NAMES": "a/b",
                               "HOST": "not-an-address", "PORT": str(port)})
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on not-an-address:{port}: ")
    assert lines[0].endswith("; set HOST and PORT (or PORT_HEALTH)"), lines


def test_make_serve_lb_takes_the_port_and_listens_on_loopback_as_make_serve_does():
    """`PORT=18000 make serve-lb` listens on 18000 (the port-in-use advice names PORT), on
    127.0.0.1 like `make serve`; the README's port is the default."""
    shown = subprocess.run(["make", "-n", "serve-lb"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PORT": "18000"}).stdout
    assert "HOST=127.0.0.1 PORT=18000" in shown and "ENDPOINT_TYPE=load_balancer" in shown
    default = subprocess.run(["make", "-n", "serve-lb"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "PORT"}).stdout
    assert "HOST=127.0.0.1 PORT=8000" in default
