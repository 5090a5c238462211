"""Whole corpora: `python src/corpus.py` through each endpoint type against the real local
endpoint and load-balancing worker (vectors equal to the same texts embedded directly, each id
once), a run killed with SIGKILL and run again, a busy worker (429s), bad corpora; and the
local endpoint's Batch API as RunPod documents it."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import ROOT, free_port, start_local_endpoint
from stand_in_load_balancer import StandInLoadBalancer

ROWS = 20_000
WORDS = ["the", "cat", "sat", "on", "a", "mat", "rivers", "run", "past", "old", "towns", "quietly", "paris", "rome"]
MODEL = "tiny"


def texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(3, 12)))) for _ in range(count)]


def write_parquet(path: Path, ids: list, values: list) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ids, "text": values}), path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    return write_parquet(folder / "corpus.parquet", [f"doc-{i:05d}" for i in range(ROWS)], texts(ROWS))


@pytest.fixture(scope="module")
def local(tiny_embedder_path):
    server, base = start_local_endpoint(MODEL_NAMES=str(tiny_embedder_path), SERVED_MODEL_NAMES=MODEL,
                                        DTYPES="float32", BATCH_SIZES="64")
    yield base
    server.terminate()
    server.wait(60)


def start_load_balancer(model_path: Path, **variables: str):
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="corpus-load-balancer-", suffix=".log", delete=False)  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "src/handler.py"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "ENDPOINT_TYPE": "load_balancer", "PORT": str(port),
                                   "MODEL_NAMES": str(model_path), "SERVED_MODEL_NAMES": MODEL, "DTYPES": "float32",
                                   "BATCH_SIZES": "64", **variables})
    balancer = StandInLoadBalancer(port)
    balancer.__enter__()
    balancer.wait_ready(120)
    return worker, balancer


@pytest.fixture(scope="module")
def load_balancer(tiny_embedder_path):
    worker, balancer = start_load_balancer(tiny_embedder_path)
    yield balancer.url
    balancer.__exit__(None, None, None)
    worker.terminate()
    worker.wait(60)


def run_client(corpus_path: Path, output: Path, endpoint: str, *flags: str, wait: bool = True):
    command = [sys.executable, "src/corpus.py", str(corpus_path), str(output), "--model", MODEL, "--endpoint", endpoint,
               "--no-progress", *flags]
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def read_output(output: Path) -> dict:
    import pyarrow.parquet as pq

    table = pq.read_table(output)
    ids = table.column("id").to_pylist()
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    return {"ids": ids, "vectors": dict(zip(ids, vectors))}


def direct(local: str, values: list[str]) -> np.ndarray:
    reply = httpx.post(f"{local}/runsync", json={"input": {"model": MODEL, "input": values}}, timeout=120).json()
    return np.array([item["embedding"] for item in reply["output"]["data"]], dtype=np.float32)


def completed_jobs(local: str) -> int:
    return httpx.get(f"{local}/health", timeout=10).json()["jobs"]["completed"]


@pytest.mark.parametrize("via", ["queue", "batch", "openai"])
def test_a_corpus_through_each_endpoint_type_equals_embedding_it_directly(corpus, local, load_balancer, tmp_path, via):
    endpoint = load_balancer if via == "openai" else local  # openai: the load-balancing worker's root
    output = tmp_path / "vectors.parquet"
    done = run_client(corpus, output, endpoint, "--via", via, "--rows-per-request", "256")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{ROWS:,} rows, {ROWS:,} embedded, 0 failed" in done.stderr
    found = read_output(output)
    assert len(found["ids"]) == ROWS and len(set(found["ids"])) == ROWS
    sample = list(range(0, ROWS, 997))
    all_texts = texts(ROWS)
    expected = direct(local, [all_texts[i] for i in sample])
    got = np.stack([found["vectors"][f"doc-{i:05d}"] for i in sample])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not output.with_name(output.name + ".parts").exists()
    assert not output.with_name(output.name + ".failed.jsonl").exists()
    if via == "batch":  # every request answered through the Batch API, none through the queue after it
        newest = httpx.get(f"{local}/batch").json()["batches"][0]
        assert newest["requestTotal"] == newest["requestCompleted"] == -(-ROWS // 256)


def test_a_run_killed_midway_resumes_without_loss_or_a_second_send(corpus, local, tmp_path):
    """SIGKILL in the middle, then the same command: each id once; no chunk whose job the
    checkpoint recorded is sent again (its result is asked for instead), so the server ran at
    most one job a chunk, plus those in flight whose id had not been recorded yet."""
    output = tmp_path / "vectors.parquet"
    log = output.with_name(output.name + ".progress.jsonl")
    before = completed_jobs(local)
    flags = ("--via", "queue", "--rows-per-request", "64", "--concurrency", "2")
    client = run_client(corpus, output, local, *flags, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or log.read_text().count('"done"') < 40):
        time.sleep(0.05)
    client.send_signal(signal.SIGKILL)
    client.wait(30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    done_before_kill = {entry["done"] for entry in lines if "done" in entry}
    assert 40 <= len(done_before_kill) < ROWS // 64, "the kill came too late to test a resume"
    finished = run_client(corpus, output, local, *flags)
    assert finished.returncode == 0, finished.stderr[-2000:]
    found = read_output(output)
    assert sorted(found["ids"]) == [f"doc-{i:05d}" for i in range(ROWS)]
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    sent = [entry["sent"] for entry in lines if "sent" in entry]
    assert len(sent) == len(set(sent))  # no chunk with a recorded job was sent again
    chunks = -(-ROWS // 64)
    assert chunks <= completed_jobs(local) - before <= chunks + 2  # 2: --concurrency, in flight unrecorded


def test_a_busy_worker_behind_the_load_balancer_still_completes(tiny_embedder_path, tmp_path):
    worker, balancer = start_load_balancer(tiny_embedder_path, RUNPOD_MAX_CONCURRENCY="1")
    try:
        small = write_parquet(tmp_path / "small.parquet", list(range(3000)), texts(3000, seed=1))
        done = run_client(small, tmp_path / "out.parquet", balancer.url, "--concurrency", "6",
                          "--rows-per-request", "64")
        assert done.returncode == 0, done.stderr[-2000:]
        retries = int(done.stderr.split(" retries")[0].rsplit(";", 1)[-1].strip().replace(",", ""))
        assert retries > 0  # it was refused (429) and waited, as Retry-After said
        assert sorted(read_output(tmp_path / "out.parquet")["ids"]) == list(range(3000))
    finally:
        balancer.__exit__(None, None, None)
        worker.terminate()
        worker.wait(60)


def test_bad_rows_are_recorded_with_their_reason_and_the_rest_embedded(local, tmp_path):
    """JSONL with an empty text, a line that is not UTF-8, and a text past MAX_INPUT_CHARS
    (which the worker refuses: the request is split until that row is alone)."""
    path = tmp_path / "corpus.jsonl"
    good = texts(300, seed=2)
    lines = [json.dumps({"id": f"row-{i}", "text": text}).encode() for i, text in enumerate(good)]
    lines[10] = json.dumps({"id": "row-10", "text": ""}).encode()
    lines[20] = b'{"id": "row-20", "text": "caf\xe9"}'
    lines[30] = json.dumps({"id": "row-30", "text": "x " * 60_000}).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "out.parquet"
    done = run_client(path, output, local, "--rows-per-request", "50")
    assert done.returncode == 1, done.stderr[-2000:]
    failures = {json.loads(line)["id"]: json.loads(line)["reason"]
                for line in output.with_name(output.name + ".failed.jsonl").read_text().splitlines()}
    assert failures["row-10"] == "empty text"
    assert failures["line 21"] == "line 21 is not UTF-8 JSON"
    assert failures["row-30"].startswith("input: item 0") and "MAX_INPUT_CHARS" in failures["row-30"]
    assert len(failures) == 3
    assert len(read_output(output)["ids"]) == 297


@pytest.mark.parametrize(("rows", "flags", "expected"), [
    ({"id": ["a", "b"], "body": ["x", "y"]}, (), "no column 'text' (the value column); its columns: id, body"),
    ({"key": ["a", "b"], "text": ["x", "y"]}, (), "no column 'id' (--id-column); its columns: key, text"),
    ({"id": ["a", "b", "a"], "text": ["x", "y", "z"]}, (), "id 'a' appears more than once (rows 0 and 2)"),
])
def test_bad_corpora_end_in_one_line_before_any_request(local, tmp_path, rows, flags, expected):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table(rows), path)
    before = completed_jobs(local)
    done = run_client(path, tmp_path / "out.parquet", local, *flags)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    assert completed_jobs(local) == before


def test_the_batch_api_as_runpod_documents_it(local):
    api = local + "/batch"
    job = {"input": {"model": MODEL, "input": ["a cat"], "custom_id": "first"}}
    created = httpx.post(api, json=[job, job]).json()
    assert created["status"] == "DRAFT" and created["id"].startswith("batch-")
    batch = f"{api}/{created['id']}"
    assert httpx.post(f"{batch}/requests", json={"requests": [{"input": {"model": MODEL, "input": [""]}}]}).json()[
        "requestTotal"] == 3
    assert httpx.get(f"{batch}/requests").json()["requests"][0]["status"] == "DRAFT"
    assert httpx.post(f"{batch}/finalize").json()["status"] == "FINALIZED"
    refused = httpx.post(f"{batch}/requests", json={"requests": [job]})
    assert refused.status_code == 409 and "FINALIZED" in refused.json()["error"]
    deadline = time.time() + 60
    while time.time() < deadline:
        summary = httpx.get(batch).json()
        if summary["requestCompleted"] + summary["requestFailed"] == summary["requestTotal"]:
            break
        time.sleep(0.1)
    assert (summary["status"], summary["requestTotal"], summary["requestCompleted"], summary["requestFailed"]) == (
        "FINALIZED", 3, 2, 1)
    assert isinstance(summary["createdAt"], int)
    page = httpx.get(f"{batch}/requests", params={"offset": 1, "limit": 1}).json()
    assert (page["total"], page["offset"], page["limit"], page["hasMore"]) == (3, 1, 1, True)
    assert page["requests"][0]["output"]["custom_id"] == "first"  # the request's own, returned
    last = httpx.get(f"{batch}/requests", params={"offset": 2, "limit": 50}).json()
    assert last["hasMore"] is False and last["requests"][0]["status"] == "FAILED"
    assert last["requests"][0]["error"].startswith("input: item 0 must not be an empty string")
    listing = httpx.get(api).json()["batches"]
    assert listing[0]["id"] == created["id"]
    assert httpx.get(f"{api}/batch-nope").status_code == 404
    too_many = httpx.post(api, json=[job] * 5001)
    assert too_many.status_code == 400 and "5,000" in too_many.json()["error"]
    big = httpx.post(api, content=b"[" + b" " * (10 * 2**20) + b"]", headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    draft = httpx.post(api, json=[job]).json()["id"]
    assert httpx.post(f"{api}/{draft}/cancel").json()["status"] == "CANCELLED"
    bad_custom = httpx.post(f"{local}/runsync", json={"input": {"model": MODEL, "input": ["a"], "custom_id": 5}}).json()
    assert bad_custom["error"] == "custom_id: must be a string of 1 to 256 characters"
    for custom_id, ok in (("c" * 256, True), ("c" * 257, False), ("", False)):
        reply = httpx.post(f"{local}/runsync", json={"input": {"model": MODEL, "input": ["a"], "custom_id": custom_id}})
        assert (reply.json().get("output", {}).get("custom_id") == custom_id) if ok else "custom_id" in reply.json()["error"]
    at_bound = httpx.post(api, json=[job] * 5000)
    assert at_bound.status_code == 200 and at_bound.json()["status"] == "DRAFT"
    httpx.post(f"{api}/{at_bound.json()['id']}/cancel")


RAY_VENV = ROOT / ".cache" / "ray-venv"
RAY = ("ray[data]==2.60.0", "httpx==0.28.1")  # its own environment: Ray's pins are not the worker's


def ray_python() -> Path:
    python = RAY_VENV / "bin" / "python"
    if not (RAY_VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(RAY_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *RAY], check=True, timeout=600)
        (RAY_VENV / ".installed").write_text(" ".join(RAY))
    return python


def test_the_readme_ray_data_example_runs_against_the_endpoint(local, tmp_path):
    """The README's Ray Data snippet, as written, with the local endpoint for RunPod's URL."""
    import re

    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"\*\*From Ray Data\*\*.*?```python\n(.*?)```", readme, re.S).group(1)
    snippet = (snippet.replace("https://api.runpod.ai/v2/<ENDPOINT_ID>/openai/v1/embeddings", f"{local}/openai/v1/embeddings")
               .replace("BAAI/bge-small-en-v1.5", MODEL).replace('"docs.parquet"', repr(str(tmp_path / "docs.parquet")))
               .replace('"vectors/"', repr(str(tmp_path / "vectors"))))
    values = texts(500, seed=3)
    write_parquet(tmp_path / "docs.parquet", list(range(500)), values)
    done = subprocess.run([str(ray_python()), "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RUNPOD_API_KEY": "local", "RAY_DISABLE_IMPORT_WARNING": "1",
                               "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "vectors")
    found = dict(zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()))
    assert sorted(found) == list(range(500))
    sample = [0, 123, 499]
    np.testing.assert_allclose(np.array([found[i] for i in sample], dtype=np.float32),
                               direct(local, [values[i] for i in sample]), atol=1e-5)


def test_a_csv_of_image_references_through_an_image_model(tmp_path):
    """`--image-column` with a CSV: each row's picture, by data URI, embedded by a tiny CLIP;
    equal to embedding the same pictures directly."""
    import csv
    import io

    import tiny_families
    from PIL import Image

    clip = tiny_families.clip(tmp_path / "clip")
    rng = np.random.default_rng(4)
    uris = []
    for _ in range(40):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), "RGB").save(buffer, format="PNG")
        uris.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    path = tmp_path / "pictures.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "picture"])
        writer.writerows([f"p{i}", uri] for i, uri in enumerate(uris))
    server, base = start_local_endpoint(MODEL_NAMES=str(clip), SERVED_MODEL_NAMES=MODEL, DTYPES="float32")
    try:
        output = tmp_path / "out.parquet"
        done = run_client(path, output, base, "--id-column", "name", "--image-column", "picture",
                          "--rows-per-request", "16")
        assert done.returncode == 0, done.stderr[-2000:]
        found = read_output(output)
        reply = httpx.post(f"{base}/runsync", json={"input": {"model": MODEL, "input": [{"image": u} for u in uris[:3]]}},
                           timeout=120).json()
        expected = np.array([item["embedding"] for item in reply["output"]["data"]], dtype=np.float32)
        np.testing.assert_allclose(np.stack([found["vectors"][f"p{i}"] for i in range(3)]), expected, atol=1e-5)
        assert len(found["ids"]) == 40
    finally:
        server.terminate()
        server.wait(60)
