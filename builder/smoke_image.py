"""Image smoke test, for a machine with Docker, the NVIDIA container toolkit and a GPU.

    python builder/smoke_image.py [--tag infinity-worker:smoke] [--no-build] [--port 18000]

1. builds the image (`docker build`);
2. runs one job with `--test_input` on the GPU and checks it exits 0 with a result that
   says it ran on `cuda`;
3. starts the image with runpod's test server (`--rp_serve_api`) and the models of
   `.runpod/tests.json`, and sends each of its tests to `/runsync`, within the test's
   timeout: every one must complete without an error.
Prints one line per step and exits 1 on the first failure. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = json.loads((ROOT / ".runpod" / "tests.json").read_text())


def docker(*args: str, timeout: float = 3600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"FAILED: docker {' '.join(args[:2])}: {done.stderr.strip()[-2000:]}")
    return done


def env_flags(env: dict[str, str]) -> list[str]:
    return [flag for key, value in env.items() for flag in ("-e", f"{key}={value}")]


def post(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the image and test it on this machine's GPU.")
    parser.add_argument("--tag", default="infinity-worker:smoke")
    parser.add_argument("--no-build", action="store_true", help="test an image already built as --tag")
    parser.add_argument("--port", type=int, default=18000)
    args = parser.parse_args()
    env = {item["key"]: item["value"] for item in TESTS["config"]["env"]}

    if not args.no_build:
        docker("build", "-t", args.tag, str(ROOT))
        print(f"build: {args.tag}")

    embedder = env["MODEL_NAMES"].split(";")[0]
    job = {"input": {"openai_route": "/v1/models"}}
    done = docker("run", "--rm", "--gpus", "all", *env_flags({"MODEL_NAMES": embedder}), args.tag,
                  "python", "-u", "src/handler.py", "--test_input", json.dumps(job), timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("{", "["))]
    if done.returncode != 0 or not lines:
        print(f"FAILED: --test_input exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return 1
    devices = {card["stats"]["device"] for card in json.loads(lines[-1])[0]["data"]}
    if devices != {"cuda"}:
        print(f"FAILED: --test_input served on {devices}, not cuda")
        return 1
    print("--test_input: exit 0, served on cuda")

    container = docker("run", "-d", "--rm", "--gpus", "all", "-p", f"127.0.0.1:{args.port}:8000",
                       *env_flags(env), args.tag, "python", "-u", "src/handler.py", "--rp_serve_api",
                       "--rp_api_host", "0.0.0.0", "--rp_api_port", "8000").stdout.strip()
    try:
        url = f"http://127.0.0.1:{args.port}/runsync"
        for test in TESTS["tests"]:
            deadline = time.time() + test["timeout"] / 1000
            while True:  # the first test also waits for start-up (model downloads)
                try:
                    result = post(url, {"input": test["input"]}, timeout=max(1.0, deadline - time.time()))
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                    if time.time() > deadline:
                        print(f"FAILED: {test['name']}: no answer within {test['timeout']} ms: {exc}")
                        return 1
                    time.sleep(2)
            if result.get("status") != "COMPLETED" or "error" in result:
                print(f"FAILED: {test['name']}: {json.dumps(result)[:2000]}")
                return 1
            print(f"tests.json {test['name']}: COMPLETED")
    finally:
        docker("stop", container, check=False, timeout=120)
    print("image smoke test: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
