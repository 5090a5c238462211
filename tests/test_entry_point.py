"""`python src/handler.py`: runs one job, prints it, and exits 0 or 1 within seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import EMBEDDER_ID, ROOT
from embedding_worker.settings import WorkerSettings

TIMEOUT = 180  # generous: a hang is what these tests catch


def run_handler(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "src/handler.py", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return done, time.perf_counter() - started


def printed_output(stdout: str):
    """The job output, printed whole as one JSON line."""
    lines = [line for line in stdout.splitlines() if line.startswith(("{", "["))]
    assert len(lines) == 1, stdout[-3000:]
    return json.loads(lines[0])


def test_test_input_by_local_path_prints_the_body_and_exits_0(embedder_path, sentence_transformer):
    job = {"input": {"model": str(embedder_path), "input": ["Hello, world!", "Bye"]}}
    done, _ = run_handler({"MODEL_NAMES": str(embedder_path)}, "--test_input", json.dumps(job))

    assert done.returncode == 0, done.stderr[-2000:]
    body = printed_output(done.stdout)
    expected = sentence_transformer.encode(["Hello, world!", "Bye"], normalize_embeddings=True)
    got = np.array([item["embedding"] for item in body["data"]])
    assert np.abs(got - expected).max() <= 1e-5


def test_test_input_json_by_hub_id_loads_offline_from_the_hf_cache(hub_cache, sentence_transformer):
    """The README's run command: the hub id resolved from a local cache, no network."""
    assert json.loads((ROOT / "test_input.json").read_text())["input"]["model"] == EMBEDDER_ID
    done, _ = run_handler({"MODEL_NAMES": EMBEDDER_ID, "HF_HUB_OFFLINE": "1"})

    assert done.returncode == 0, done.stderr[-2000:]
    body = printed_output(done.stdout)
    assert body["model"] == EMBEDDER_ID
    expected = sentence_transformer.encode(["Hello, world!"], normalize_embeddings=True)[0]
    assert np.abs(np.array(body["data"][0]["embedding"]) - expected).max() <= 1e-5


def test_unknown_model_exits_1_with_the_reason(embedder_path):
    job = {"input": {"model": "not/deployed", "input": "x"}}
    done, _ = run_handler({"MODEL_NAMES": str(embedder_path)}, "--test_input", json.dumps(job))
    assert done.returncode == 1
    assert "model: 'not/deployed' is not deployed" in done.stdout + done.stderr


def test_invalid_settings_exit_1_within_seconds_with_one_line():
    done, elapsed = run_handler({"MODEL_NAMES": "a/b", "BACKEND": "tpu"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: invalid settings: BACKEND: 'tpu'")
    assert elapsed < 30


def test_runpods_variables_and_arguments_are_checked_before_any_model_loads():
    for env, args, message in (
        ({"RUNPOD_LOG_LEVEL": "verbose"}, ["--test_input", '{"input": {}}'],
         "error: RUNPOD_LOG_LEVEL: 'verbose' is not one of NOTSET, TRACE, DEBUG, INFO, WARN, ERROR"),
        ({}, ["--test_input", "{bad"], "error: --test_input: not valid JSON"),
        ({}, ["--test_input=[1]"], 'error: --test_input: must be a JSON object whose "input" is the request object'),
        ({}, ["--test_input", '{"model": "m", "input": "Hello"}'],
         "error: --test_input: this looks like the request itself; wrap it as the job's input: "
         '\'{"input": {"model": "...", "input": "Hello"}}\''),
        ({}, ["--no-such-flag"], "error: --no-such-flag: not a flag of this worker; flags: --rp_log_level"),
        ({"RUNPOD_REALTIME_PORT": "eighty"}, [], "error: RUNPOD_REALTIME_PORT: 'eighty' is not a whole number"),
    ):
        done, seconds = run_handler({"MODEL_NAMES": "no-such/model-anywhere", **env}, *args)
        assert done.returncode == 1 and seconds < 15
        assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr[-500:]
        assert done.stderr.count("error:") == 1  # said once
        assert "Traceback" not in done.stderr and "no-such/model" not in done.stderr  # nothing loaded


def test_help_prints_usage_with_the_variables_that_matter_and_exits_0():
    done, seconds = run_handler({}, "--help")
    assert done.returncode == 0 and seconds < 15
    assert done.stdout.startswith("usage: python src/handler.py")
    for variable in ("MODEL_NAMES", "HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT", "ENDPOINT_TYPE", "--test_input"):
        assert variable in done.stdout
    local = subprocess.run([sys.executable, "src/local_endpoint.py", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert local.returncode == 0 and "MODEL_NAMES" in local.stdout and "HF_HUB_OFFLINE" in local.stdout


def test_logs_are_one_event_per_line_in_one_format(embedder_path):
    import re

    done, _ = run_handler({"MODEL_NAMES": str(embedder_path), "SERVED_MODEL_NAMES": "mini"}, "--test_input",
                          json.dumps({"input": {"model": "mini", "input": "hello"}}))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    stamped = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
    assert all(stamped.match(line) for line in lines), [line for line in lines if not stamped.match(line)]
    assert not [line for line in lines if " WARNING " in line]  # a healthy start warns of nothing
    assert any(re.search(r"job local_test: /v1/embeddings, model .+, 1 items, \d+ ms$", line) for line in lines)
    assert sum(str(embedder_path) in line for line in lines) == 1  # the model's folder, said once
    as_json, _ = run_handler({"MODEL_NAMES": str(embedder_path), "LOG_FORMAT": "json"}, "--test_input",
                             json.dumps({"input": {"model": "nope", "input": "hello"}}))
    stdout = [json.loads(line) for line in as_json.stdout.strip().splitlines()]  # every line, both streams
    entries = [json.loads(line) for line in as_json.stderr.strip().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e.get("message", "").startswith("--- Starting Serverless Worker") for e in stdout + entries)
    ends = [e for e in entries if e["message"].startswith("job local_test: /v1/embeddings, model nope, 1 items")]
    assert len(ends) == 1 and ends[0]["job_id"] == "local_test"
    assert "failed: model: 'nope' is not deployed" in ends[0]["message"]
    said = [e for e in stdout + entries if "'nope' is not deployed" in json.dumps(e)]
    assert len(said) == 2  # the job's line, and its output (the error, as the job's result)


def test_a_model_that_cannot_load_exits_1_naming_it(tmp_path: Path):
    done, _ = run_handler({"MODEL_NAMES": str(tmp_path / "missing-model"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not load model '{tmp_path / 'missing-model'}'")


def test_rp_serve_api_answers_runsync_and_exits_on_sigterm(hub_cache, sentence_transformer):
    import httpx

    port = 18731
    server = subprocess.Popen(
        [sys.executable, "src/handler.py", "--rp_serve_api", "--rp_api_port", str(port)],
        cwd=ROOT,
        env={**os.environ, "MODEL_NAMES": EMBEDDER_ID},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + TIMEOUT
        while server.poll() is None and time.time() < deadline:
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/runsync",
                    json={"input": {"model": EMBEDDER_ID, "input": ["Hello, world!"]}},
                    timeout=60,
                )
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert reply.status_code == 200
        body = reply.json()
        assert body["status"] == "COMPLETED"
        expected = sentence_transformer.encode(["Hello, world!"], normalize_embeddings=True)[0]
        got = np.array(body["output"]["data"][0]["embedding"])
        assert np.abs(got - expected).max() <= 1e-5
    finally:
        server.terminate()
        exit_code = server.wait(30)  # a hang here means the engines kept the process alive
    assert exit_code == 0  # a graceful stop, not death by the re-raised signal (143)
    import re

    lines = server.stderr.read().strip().splitlines()
    stamped = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
    assert any("uvicorn" in line for line in lines)  # uvicorn's own lines, in the worker's format
    assert all(stamped.match(line) for line in lines), [line for line in lines if not stamped.match(line)]


def test_a_corrupt_model_exits_1_within_seconds_naming_it(tmp_path: Path, embedder_path):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(embedder_path, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    done, elapsed = run_handler({"MODEL_NAMES": str(broken), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not load model '{broken}': ")
    assert elapsed < 60


ENGINE_ENVIRONMENT = """
import sys
sys.path.insert(0, "src")
from embedding_worker.engine.cpu import quota as cpu_quota
cpu_quota.cpu_quota = lambda *args: 1.0  # a container allowed one CPU
from embedding_worker.serving.worker import start_worker
worker = start_worker()
assert worker is not None
import inspect, torch
from infinity_emb.inference.batch_handler import BatchHandler
limit = inspect.signature(BatchHandler.__init__).parameters["max_queue_wait"].default
print(torch.get_num_threads(), limit)
worker.registry.stop_outside_loop()
"""


def test_the_engine_environment_is_set_before_infinity_and_torch_are_imported(embedder_path):
    """The thread pools follow the CPU quota and Infinity's queue the worker's default
    INFINITY_QUEUE_SIZE: both are read when torch and Infinity are first imported."""
    if len(os.sched_getaffinity(0)) < 2:
        return  # one CPU: the quota would change nothing
    env = {**os.environ, "MODEL_NAMES": str(embedder_path)}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "INFINITY_QUEUE_SIZE"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", ENGINE_ENVIRONMENT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["1", str(WorkerSettings.model_fields["infinity_queue_size"].default)]
