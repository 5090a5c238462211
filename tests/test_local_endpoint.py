"""The local endpoint: the exact client code users ship runs against it unchanged.

The server is started as users start it (`python src/local_endpoint.py`), with the
bundled embedder and the tiny reranker loaded by hub id from the test cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from conftest import EMBEDDER_ID, RERANKER_ID, ROOT, start_local_endpoint
from process_watch import terminate_timed

API_KEY = "local-test-key"
TEXTS = ["Hello, world!", "The quick brown fox jumps over the lazy dog."]


@pytest.fixture(scope="module")
def endpoint(hub_cache):
    """Base URL `http://127.0.0.1:<port>/v2/local` of a running local endpoint."""
    server, base = start_local_endpoint(MODEL_NAMES=f"{EMBEDDER_ID};{RERANKER_ID}", LOCAL_API_KEY=API_KEY)
    yield base
    server.terminate()
    server.wait(30)


@pytest.fixture
def openai_client(endpoint):
    import openai

    return openai.OpenAI(base_url=f"{endpoint}/openai/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture
def runpod_endpoint(endpoint, monkeypatch):
    import runpod

    base = endpoint.removesuffix("/local")
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", base)
    monkeypatch.setattr(runpod, "endpoint_url_base", base)  # read once, at import
    monkeypatch.setattr(runpod, "api_key", API_KEY)
    return runpod.Endpoint("local")


def expected(sentence_transformer, texts):
    return sentence_transformer.encode(texts, normalize_embeddings=True)


# --- OpenAI SDK --------------------------------------------------------------------------


def test_openai_sdk_default_base64(openai_client, sentence_transformer):
    response = openai_client.embeddings.create(model=EMBEDDER_ID, input=TEXTS)
    got = np.array([item.embedding for item in response.data])
    assert np.abs(got - expected(sentence_transformer, TEXTS)).max() <= 1e-5
    assert response.model == EMBEDDER_ID and response.usage.total_tokens > 0


def test_openai_sdk_float(openai_client, sentence_transformer):
    response = openai_client.embeddings.create(model=EMBEDDER_ID, input=TEXTS[0], encoding_format="float")
    assert np.abs(np.array(response.data[0].embedding) - expected(sentence_transformer, TEXTS[:1])[0]).max() <= 1e-5


def test_openai_sdk_dimensions(openai_client):
    response = openai_client.embeddings.create(model=EMBEDDER_ID, input=TEXTS, dimensions=32)
    vectors = np.array([item.embedding for item in response.data])
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_openai_sdk_lists_the_models(openai_client):
    assert [model.id for model in openai_client.models.list()] == [EMBEDDER_ID, RERANKER_ID]


def test_openai_sdk_unknown_model_raises_with_the_workers_message(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.embeddings.create(model="not/deployed", input="x")
    assert raised.value.status_code == 404
    assert f"model: 'not/deployed' is not deployed; deployed: {EMBEDDER_ID}, {RERANKER_ID}" in str(raised.value)
    assert raised.value.code == "model_not_found"


def test_openai_sdk_bad_input_raises_bad_request(openai_client):
    import openai

    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.embeddings.create(model=EMBEDDER_ID, input=[], encoding_format="float")
    assert "input: must not be an empty list" in str(raised.value)
    assert raised.value.param == "input"


def test_openai_sdk_wrong_api_key_is_refused(endpoint):
    import openai

    client = openai.OpenAI(base_url=f"{endpoint}/openai/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_rerank_through_the_openai_base_url(endpoint, cross_encoder):
    docs = ["Paris is in France", "Rome is in Italy", "Paris"]
    reply = httpx.post(
        f"{endpoint}/openai/v1/rerank",
        json={"model": RERANKER_ID, "query": "Where is Paris?", "documents": docs, "top_n": 2},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert reply.status_code == 200
    scores = cross_encoder.predict([("Where is Paris?", d) for d in docs])
    assert [r["index"] for r in reply.json()["results"]] == list(np.argsort(-scores)[:2])


def test_cohere_sdk_reranks_with_documents(endpoint, cross_encoder):
    import cohere

    docs = ["Paris is in France", "Rome is in Italy", "Paris"]
    client = cohere.Client(api_key=API_KEY, base_url=f"{endpoint}/openai")
    response = client.rerank(model=RERANKER_ID, query="Where is Paris?", documents=docs, top_n=2,
                             return_documents=True)
    scores = cross_encoder.predict([("Where is Paris?", d) for d in docs])
    assert [r.index for r in response.results] == list(np.argsort(-scores)[:2])
    assert [r.document.text for r in response.results] == [docs[i] for i in np.argsort(-scores)[:2]]
    assert abs(response.results[0].relevance_score - float(np.sort(scores)[-1])) < 1e-5


def test_litellm_cohere_rerank(endpoint, cross_encoder, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of its price list
    import litellm

    docs = ["Paris is in France", "Rome is in Italy"]
    response = litellm.rerank(model=f"cohere/{RERANKER_ID}", query="Where is Paris?", documents=docs,
                              return_documents=True, api_base=f"{endpoint}/openai", api_key=API_KEY)
    scores = cross_encoder.predict([("Where is Paris?", d) for d in docs])
    results = response.results
    assert [r["index"] for r in results] == list(np.argsort(-scores))
    assert results[0]["document"]["text"] == docs[int(np.argmax(scores))]


def test_litellm_infinity_rerank_and_embeddings(endpoint, cross_encoder, sentence_transformer, monkeypatch):
    """LiteLLM's infinity/ provider calls Infinity's un-versioned routes and reads its string
    documents; the same api_base as cohere/ above, neither broken."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    docs = ["Paris is in France", "Rome is in Italy"]
    response = litellm.rerank(model=f"infinity/{RERANKER_ID}", query="Where is Paris?", documents=docs,
                              return_documents=True, api_base=f"{endpoint}/openai", api_key=API_KEY)
    scores = cross_encoder.predict([("Where is Paris?", d) for d in docs])
    assert [r["index"] for r in response.results] == list(np.argsort(-scores))
    assert response.results[0]["document"]["text"] == docs[int(np.argmax(scores))]
    raw = httpx.post(f"{endpoint}/openai/rerank", headers={"Authorization": f"Bearer {API_KEY}"},
                     json={"model": RERANKER_ID, "query": "Where is Paris?", "documents": docs,
                           "return_documents": True}).json()
    assert {r["document"] for r in raw["results"]} == set(docs)  # Infinity's shape: strings
    embedded = litellm.embedding(model=f"infinity/{EMBEDDER_ID}", input=TEXTS, api_base=f"{endpoint}/openai",
                                 api_key=API_KEY)
    got = np.array([item["embedding"] for item in embedded.data])
    assert np.abs(got - expected(sentence_transformer, TEXTS)).max() < 1e-4


def test_unknown_openai_paths_answer_an_openai_error(endpoint):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    reply = httpx.post(f"{endpoint}/openai/v1/chat/completions", json={"model": "x"}, headers=headers)
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["message"].startswith("/v1/chat/completions is not served here; served: /v1/models")
    assert error["type"] == "invalid_request_error"
    assert httpx.get(f"{endpoint}/openai/v1/nope", headers=headers).status_code == 404


@pytest.mark.parametrize("wrong_base", ["/v1", "/v2/local", ""])
def test_the_openai_sdk_with_a_wrong_base_url_shows_where_the_api_is(endpoint, wrong_base):
    import openai

    root = endpoint.removesuffix("/v2/local")
    client = openai.OpenAI(base_url=root + wrong_base, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        client.embeddings.create(model=EMBEDDER_ID, input="x")
    assert "the OpenAI API is under /v2/<endpoint id>/openai/v1/" in str(raised.value)
    assert f'base_url "{root}/v2/local/openai/v1"' in str(raised.value)


def test_one_error_shape_per_api_family_on_every_route_and_method(endpoint):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    wrong_method = httpx.get(f"{endpoint}/openai/v1/embeddings", headers=headers)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["message"] == "GET is not allowed on /v1/embeddings; use POST"
    assert httpx.post(f"{endpoint}/openai/v1/models", json={}, headers=headers).json()["error"]["message"] == (
        "POST is not allowed on /v1/models; use GET")
    for reply in (httpx.post(f"{endpoint}/openai/v1/embeddings", content=b"x", headers={**headers, "Content-Type": "text/plain"}),
                  httpx.post(f"{endpoint}/openai/v1/embeddings", content=b"x" * 30_000_000, headers=headers)):
        assert reply.status_code in (413, 415) and set(reply.json()["error"]) == {"message", "type", "param", "code"}
    runpod_routes = [httpx.get(f"{endpoint}/runsync", headers=headers), httpx.get(f"{endpoint}/nothing", headers=headers),
                     httpx.delete(f"{endpoint}/run", headers=headers), httpx.get(f"{endpoint.removesuffix('/v2/local')}/")]
    for reply in runpod_routes:
        assert reply.status_code in (404, 405) and isinstance(reply.json()["error"], str), reply.text
        assert "detail" not in reply.json()
    assert runpod_routes[0].json()["error"] == "GET is not allowed on /v2/local/runsync; use POST"
    unwrapped = httpx.post(f"{endpoint}/runsync", json={"model": EMBEDDER_ID, "input": ["a"]}, headers=headers)
    assert unwrapped.status_code == 400 and "looks like the request itself" in unwrapped.json()["error"]
    # Cohere's routes: Cohere's {"message"}, for a bad request and a wrong method alike
    cohere = [httpx.get(f"{endpoint}/openai/v2/embed", headers=headers),
              httpx.post(f"{endpoint}/openai/v2/rerank", json={"model": RERANKER_ID, "query": "q"}, headers=headers),
              httpx.post(f"{endpoint}/openai/v2/embed", json={"model": EMBEDDER_ID}, headers=headers)]
    cohere += [httpx.post(f"{endpoint}/openai/v2/embed", content=b"x", headers={**headers, "Content-Type": "text/plain"}),
               httpx.post(f"{endpoint}/openai/v2/rerank", content=b"x" * 30_000_000,
                          headers={**headers, "Content-Type": "application/json"})]
    assert [reply.status_code for reply in cohere] == [405, 400, 400, 415, 413]
    assert all(set(reply.json()) == {"message"} for reply in cohere), [reply.text for reply in cohere]
    assert cohere[0].json()["message"] == "GET is not allowed on /v2/local/openai/v2/embed; use POST"
    assert httpx.get(f"{endpoint}/metrics").status_code == 200  # the endpoint's own prefix serves them too


def test_cors_preflight_is_answered_for_local_pages_and_refused_for_others(endpoint):
    local = httpx.options(f"{endpoint}/runsync", headers={"Origin": "http://localhost:3000",
                                                           "Access-Control-Request-Method": "POST"})
    assert local.status_code == 204 and local.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "authorization" in local.headers["access-control-allow-headers"]
    foreign = httpx.options(f"{endpoint}/runsync", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["error"]


@pytest.mark.parametrize("authorization, status", [
    (f"Bearer {API_KEY}", 200), (f"bearer {API_KEY}", 200), (f"BEARER  {API_KEY}", 200),
    (API_KEY, 401), (f"Basic {API_KEY}", 401), (f"Bearer{API_KEY}", 401), ("", 401),
])
def test_the_auth_scheme_is_required_and_case_insensitive(endpoint, authorization, status):
    reply = httpx.get(f"{endpoint}/openai/v1/models", headers={"Authorization": authorization} if authorization else {})
    assert reply.status_code == status
    if status == 401:
        assert "Authorization: Bearer <key>" in reply.json()["error"]["message"]


def test_tokenize_route(endpoint, sentence_transformer):
    reply = httpx.post(f"{endpoint}/openai/v1/tokenize", json={"model": EMBEDDER_ID, "input": TEXTS},
                       headers={"Authorization": f"Bearer {API_KEY}"})
    assert reply.status_code == 200
    assert [item["tokens"] for item in reply.json()["data"]] == sentence_transformer.tokenizer(TEXTS)["input_ids"]


# --- runpod SDK --------------------------------------------------------------------------


def test_runpod_sdk_run_sync(runpod_endpoint, sentence_transformer):
    output = runpod_endpoint.run_sync({"input": {"model": EMBEDDER_ID, "input": TEXTS}}, timeout=120)
    got = np.array([item["embedding"] for item in output["data"]])
    assert np.abs(got - expected(sentence_transformer, TEXTS)).max() <= 1e-5


def test_runpod_sdk_run_then_status_and_output(runpod_endpoint):
    job = runpod_endpoint.run({"input": {"model": RERANKER_ID, "query": "q", "docs": ["a", "b"]}})
    output = job.output(timeout=60)
    assert job.status() == "COMPLETED"
    assert sorted(r["index"] for r in output["results"]) == [0, 1]


def test_a_failed_job_reports_failed_with_the_message(endpoint):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = httpx.post(f"{endpoint}/runsync", json={"input": {"model": "x/y", "input": "a"}}, headers=headers).json()
    assert body["status"] == "FAILED"
    assert body["error"].startswith("model: 'x/y' is not deployed")
    assert body["id"].startswith("local-") and body["executionTime"] >= 0 and body["delayTime"] >= 0


def test_runpod_api_wrong_key_gets_401_and_health_stays_open(endpoint):
    reply = httpx.post(f"{endpoint}/runsync", json={"input": {}}, headers={"Authorization": "Bearer nope"})
    assert reply.status_code == 401
    assert httpx.post(f"{endpoint}/run", json={"input": {}}).status_code == 401
    health = httpx.get(f"{endpoint}/health")
    assert health.status_code == 200 and set(health.json()["jobs"]) >= {"completed", "failed", "inQueue"}


def test_unknown_job_and_malformed_bodies(endpoint):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(f"{endpoint}/status/nope", headers=headers).status_code == 404
    json_type = {**headers, "Content-Type": "application/json"}
    assert httpx.post(f"{endpoint}/runsync", content=b"{", headers=json_type).status_code == 400
    assert httpx.post(f"{endpoint}/runsync", json={"no": "input"}, headers=headers).status_code == 400


def test_concurrent_run_jobs_are_each_answered_once(endpoint, sentence_transformer):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    texts = [f"text number {i}" for i in range(24)]
    with httpx.Client(headers=headers, timeout=60) as client:
        ids = [client.post(f"{endpoint}/run", json={"input": {"model": EMBEDDER_ID, "input": t}}).json()["id"]
               for t in texts]
        assert len(set(ids)) == len(ids)
        outputs = {}
        deadline = time.time() + 120
        while len(outputs) < len(ids) and time.time() < deadline:
            for job_id in ids:
                if job_id not in outputs:
                    state = client.get(f"{endpoint}/status/{job_id}").json()
                    if state["status"] == "COMPLETED":
                        outputs[job_id] = state["output"]
            time.sleep(0.2)
    got = np.array([outputs[i]["data"][0]["embedding"] for i in ids])
    assert np.abs(got - expected(sentence_transformer, texts)).max() <= 1e-5


# --- LangChain ---------------------------------------------------------------------------


def test_langchain_openai_embeddings(endpoint, sentence_transformer):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        base_url=f"{endpoint}/openai/v1", api_key=API_KEY, model=EMBEDDER_ID,
        check_embedding_ctx_length=False, max_retries=0,
    )
    documents = embeddings.embed_documents(TEXTS)
    query = embeddings.embed_query("Hello, world!")
    assert np.abs(np.array(documents) - expected(sentence_transformer, TEXTS)).max() <= 1e-5
    assert np.abs(np.array(query) - expected(sentence_transformer, TEXTS[:1])[0]).max() <= 1e-5


# --- the README's snippets, as written ----------------------------------------------------

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", ["first call", "openai", "runpod", "langchain", "litellm", "cohere"])
def test_readme_snippet_runs_against_the_local_endpoint(endpoint, name):
    import re

    code = re.search(rf"<!-- snippet: {name} -->\s*```python\n(.*?)```", README, re.S).group(1)
    code = code.replace("http://127.0.0.1:8000", endpoint.removesuffix("/v2/local"))
    assert "BAAI/bge-reranker-base" not in code  # every snippet runs against `make serve`, as written
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "RUNPOD_API_KEY": API_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    comments = re.findall(r"print\(.*\)\s+# (.+)", code)
    printed = done.stdout.strip().splitlines()
    assert len(printed) == len(comments)
    for line, comment in zip(printed, comments):
        if "or later" not in comment:
            assert line == comment


def test_a_job_sent_while_the_models_load_waits_in_queue_and_its_delay_counts_the_wait(
        tiny_embedder_path, tmp_path):
    """The server answers from its first second: /health says the worker is initializing, a
    /runsync sent then waits for the models, and its delayTime counts that wait."""
    from conftest import free_port
    from stand_in_hub import Fault, StandInHub

    size = (tiny_embedder_path / "model.safetensors").stat().st_size
    with StandInHub({"stand-in/slow": tiny_embedder_path}) as hub:
        hub.add_fault(Fault("model.safetensors", rate=size / 2))  # two seconds for the weights
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "src/local_endpoint.py", "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MODEL_NAMES": "stand-in/slow", "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
                 "HF_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(tmp_path / "home/hub"),
                 "BAKED_HF_CACHE": str(tmp_path / "none"), "RUNPOD_VOLUME_DIR": str(tmp_path / "none")})
        base = f"http://127.0.0.1:{port}/v2/local"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = httpx.get(f"{base}/health", timeout=2)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            assert health.status_code == 503 and health.json()["workers"] == {"initializing": 1}
            reply = httpx.post(f"{base}/runsync", json={"input": {"model": "stand-in/slow", "input": "hi"}},
                               timeout=120).json()
        finally:
            server.terminate()
            code = server.wait(60)
    assert reply["status"] == "COMPLETED" and len(reply["output"]["data"]) == 1
    assert reply["delayTime"] > 1000, reply["delayTime"]
    assert code == 0


def test_while_loading_the_api_routes_answer_503_in_their_own_shape_and_sigterm_ends_the_load(
        tiny_embedder_path, tmp_path):
    """The OpenAI, Cohere and Infinity routes wait for the models as /runsync does
    (LOCAL_RUNSYNC_WAIT), then answer 503 with Retry-After in their own error shape (never a
    500 or a traceback); SIGTERM during the download ends the process within 5 s."""
    from conftest import free_port
    from stand_in_hub import Fault, StandInHub

    size = (tiny_embedder_path / "model.safetensors").stat().st_size
    log = tmp_path / "server.log"
    with StandInHub({"stand-in/slow": tiny_embedder_path}) as hub, log.open("w") as sink:
        hub.add_fault(Fault("model.safetensors", rate=size / 60))  # a minute for the weights
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "src/local_endpoint.py", "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**os.environ, "MODEL_NAMES": "stand-in/slow", "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
                 "HF_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(tmp_path / "home/hub"),
                 "BAKED_HF_CACHE": str(tmp_path / "none"), "RUNPOD_VOLUME_DIR": str(tmp_path / "none"),
                 "LOCAL_RUNSYNC_WAIT": "1", "LOG_FORMAT": "json"})
        api = f"http://127.0.0.1:{port}/v2/local/openai"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/v2/local/health", timeout=2)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            openai = httpx.post(f"{api}/v1/embeddings", json={"model": "stand-in/slow", "input": "hi"}, timeout=30)
            infinity = httpx.post(f"{api}/embeddings", json={"model": "stand-in/slow", "input": "hi"}, timeout=30)
            cohere = httpx.post(f"{api}/v2/embed", json={"model": "stand-in/slow", "texts": ["hi"]}, timeout=30)
            code, stopped = terminate_timed(server)
        finally:
            if server.poll() is None:
                server.kill()
    for reply in (openai, infinity):
        assert reply.status_code == 503 and reply.headers["Retry-After"] == "5"
        assert reply.json()["error"]["message"] == "the worker is still loading its models; retry shortly"
    assert cohere.status_code == 503 and cohere.json() == {"message": "the worker is still loading its models; "
                                                                      "retry shortly"}
    assert code == 0 and stopped < 5, (code, stopped)
    lines = log.read_text().splitlines()
    assert "Traceback" not in log.read_text() and all(line.startswith("{") for line in lines), lines[-5:]


def test_a_local_endpoint_whose_models_cannot_load_exits_1_in_one_line():
    done = subprocess.run([sys.executable, "src/local_endpoint.py", "--port", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MODEL_NAMES": "a/b", "BACKEND": "tpu"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: invalid settings: BACKEND: 'tpu'")


def test_readme_curl_lines_run_as_written(endpoint):
    """The README's curl block, in bash, against the local endpoint: every line prints one
    JSON body, the /runsync and /status ones COMPLETED, the OpenAI one a list of vectors."""
    import json
    import re
    import shutil

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    script = re.search(r"<!-- snippet: curl -->\s*```bash\n(.*?)```", README, re.S).group(1)
    script = script.replace("http://127.0.0.1:8000", endpoint.removesuffix("/v2/local"))
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script.replace("curl -s", "curl -sS --fail-with-body")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RUNPOD_API_KEY": API_KEY})
    assert done.returncode == 0, done.stderr
    bodies = [json.loads(line) for line in done.stdout.splitlines()]  # one JSON body a line, as it says
    assert [body.get("status") for body in bodies[:2]] == ["COMPLETED", "COMPLETED"]
    assert len(bodies[0]["output"]["data"]) == 1 and len(bodies[1]["output"]["data"]) == 2
    assert bodies[2]["object"] == "list" and len(bodies[2]["data"][0]["embedding"]) == 384


def test_cohere_sdk_embed_float_and_int8_and_litellm_cohere_embeddings(endpoint, sentence_transformer, monkeypatch):
    """Cohere's `POST /v2/embed` at `.../openai`, as `ClientV2.embed` and LiteLLM's cohere/
    provider call it: vectors keyed by type, the texts, billed tokens; errors as Cohere's."""
    import cohere

    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    client = cohere.ClientV2(api_key=API_KEY, base_url=f"{endpoint}/openai")
    response = client.embed(model=EMBEDDER_ID, texts=TEXTS, input_type="search_document",
                            embedding_types=["float", "int8"])
    floats = np.array(response.embeddings.float_)
    assert np.abs(floats - expected(sentence_transformer, TEXTS)).max() <= 1e-5
    int8 = np.array(response.embeddings.int8)
    assert int8.shape == floats.shape and int8.dtype.kind == "i" and np.abs(int8).max() <= 127
    assert np.corrcoef(int8.ravel(), floats.ravel())[0, 1] > 0.99
    assert response.texts == TEXTS and response.meta.billed_units.input_tokens > 0
    short = client.embed(model=EMBEDDER_ID, texts=TEXTS[:1], input_type="search_query", embedding_types=["float"],
                         output_dimension=64)
    assert len(short.embeddings.float_[0]) == 64
    with pytest.raises(cohere.core.api_error.ApiError) as raised:
        client.embed(model="not/deployed", texts=["x"], input_type="search_query", embedding_types=["float"])
    assert raised.value.status_code == 404 and "is not deployed" in raised.value.body["message"]
    embedded = litellm.embedding(model=f"cohere/{EMBEDDER_ID}", input=TEXTS, api_key=API_KEY,
                                 api_base=f"{endpoint}/openai/v2/embed")
    got = np.array([item["embedding"] for item in embedded.data])
    assert np.abs(got - expected(sentence_transformer, TEXTS)).max() <= 1e-5
