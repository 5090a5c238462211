"""Cold start: from process start to the first result, this worker against the original.

Both are timed the same way, side by side in alternating runs: `--rp_serve_api` started,
`/runsync` polled until the first embedding comes back. This worker's own one-shot path,
`--test_input`, is timed too: model loaded, result printed, process exited. This worker
starts as in its image, with transformers' index already written at build time.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time

import httpx

import peers
from common import ENV, MODEL, ROOT, free_port

JOB = {"input": {"model": MODEL, "input": "Hello, world!"}}


def first_result(command: list[str], cwd, port: int, env: dict) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/runsync", json=JOB, timeout=30)
                if reply.status_code == 200 and reply.json().get("status") == "COMPLETED":
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.perf_counter() - started > 240:
                raise RuntimeError(f"{command} gave no result")
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(60)


def ours_first_result() -> float:
    port = free_port()
    return first_result([sys.executable, "src/handler.py", "--rp_serve_api", "--rp_api_port", str(port)], ROOT,
                        port, ENV)


def original_first_result() -> float:
    import shutil
    import tempfile
    from pathlib import Path

    scratch = Path(tempfile.mkdtemp(prefix="original-worker-"))
    shutil.copytree(peers.BASELINE / "src", scratch / "src")
    port = free_port()
    return first_result([sys.executable, "src/handler.py", "--rp_serve_api", "--rp_api_port", str(port)], scratch,
                        port, ENV)


def test_input_timeline() -> dict:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "src/handler.py", "--test_input", json.dumps(JOB)], cwd=ROOT,
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loaded = result = None
    for line in process.stderr:
        if "loaded in" in line:
            loaded = time.perf_counter() - started
            break
    for line in process.stdout:
        if line.startswith("{"):
            result = time.perf_counter() - started
    process.wait(120)
    exited = time.perf_counter() - started
    assert process.returncode == 0 and result is not None and loaded is not None
    return {"model_loaded_s": loaded, "first_result_s": result, "exit_s": exited}


def cold_start(runs: int) -> dict:
    # As the image's build step does: transformers' index of its model classes, written once.
    subprocess.run([sys.executable, "-m", "embedding_worker.engine.transformers_index"], cwd=ROOT,
                   env={**ENV, "PYTHONPATH": "src"}, check=True, capture_output=True)
    ours, original, timelines = [], [], []
    for _ in range(runs):  # alternating, so drift hits both alike
        ours.append(ours_first_result())
        original.append(original_first_result())
        timelines.append(test_input_timeline())
    ratios = [a / b for a, b in zip(ours, original)]
    return {
        "runs": runs,
        "ours_first_result_s": [round(x, 2) for x in ours],
        "original_first_result_s": [round(x, 2) for x in original],
        "ratio": round(statistics.median(ratios), 3),
        "ratio_by_run": [round(x, 3) for x in ratios],
        "test_input": {k: round(statistics.median(t[k] for t in timelines), 2) for k in timelines[0]},
    }


def import_costs() -> dict:
    """`python -X importtime` of what the worker imports, and runpod's import with and
    without its cpuinfo subprocess (the cut this worker makes)."""
    code = ("import sys; sys.path.insert(0, 'src'); from embedding_worker.engine.lean_imports import import_infinity; "
            "import_infinity('torch'); from embedding_worker.serving.runpod_patches import import_runpod; import_runpod()")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    cumulative = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if match and len(match.group(2)) <= 2:
            cumulative[match.group(3)] = round(int(match.group(1)) / 1e6, 2)
    top = dict(sorted(cumulative.items(), key=lambda kv: -kv[1])[:6])

    def timed(code: str) -> float:
        runs = []
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
            runs.append(float(out.stdout.strip().splitlines()[-1]))
        return round(statistics.median(runs), 2)

    plain = timed("import time; s = time.perf_counter(); import runpod; print(time.perf_counter() - s)")
    cut = timed("import sys, time; sys.path.insert(0, 'src'); s = time.perf_counter(); "
                "from embedding_worker.serving.runpod_patches import import_runpod; import_runpod(); "
                "print(time.perf_counter() - s)")
    full = timed("import time; s = time.perf_counter(); import infinity_emb; print(time.perf_counter() - s)")
    lean = timed("import sys, time; sys.path.insert(0, 'src'); s = time.perf_counter(); "
                 "from embedding_worker.engine.lean_imports import import_infinity; import_infinity('torch'); "
                 "print(time.perf_counter() - s)")
    return {"top_level_imports_s": top, "runpod_import_s": {"before": plain, "after": cut},
            "infinity_import_s": {"before": full, "after": lean}, "what_remains_s": what_remains()}


REMAINING = [  # in the order the worker's import reaches them
    ("torch", "import torch"),
    ("torch._dynamo and sympy (Infinity and transformers import them)", "import torch._dynamo"),
    ("transformers' model classes", "from transformers import AutoModel, PreTrainedModel"),
    ("sentence-transformers", "import sentence_transformers"),
    ("fastapi, aiohttp (Infinity's server module; runpod needs them too)", "import fastapi, aiohttp"),
    ("Infinity itself", "import infinity_emb"),
    ("runpod, with the worker's cut", "from embedding_worker.serving.runpod_patches import import_runpod; "
                                      "import_runpod()"),
]


def what_remains() -> dict[str, float]:
    """Each part of the worker's lean import on its own, in order, median of 3 processes:
    what a cold start still spends on imports."""
    steps = "".join(f"    s = time.perf_counter(); {code}; out[{label!r}] = time.perf_counter() - s\n"
                    for label, code in REMAINING)
    code = ("import sys, time, json; sys.path.insert(0, 'src'); out = {}\n"
            "from embedding_worker.engine.lean_imports import importing_for\n"
            f"with importing_for('torch'):\n{steps}print(json.dumps(out))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True,
                                      text=True, check=True).stdout.strip().splitlines()[-1]) for _ in range(3)]
    return {label: round(statistics.median(run[label] for run in runs), 2) for label, _ in REMAINING}
