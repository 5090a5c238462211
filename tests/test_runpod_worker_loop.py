"""The production path: runpod's worker loop against a stand-in for RunPod's job API on
loopback. Jobs are taken, answered and posted back; on SIGTERM the jobs in flight finish,
their results are posted, and the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from conftest import EMBEDDER_ID, ROOT


class FakeJobApi(ThreadingHTTPServer):
    """Hands out `jobs` through job-take and records what job-done receives."""

    def __init__(self, jobs: list[dict]) -> None:
        super().__init__(("127.0.0.1", 0), _Requests)
        self.pending, self.taken, self.done = list(jobs), [], {}
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Requests(BaseHTTPRequestHandler):
    server: FakeJobApi

    def do_GET(self) -> None:  # noqa: N802
        path = urlparse(self.path).path
        if path.startswith(("/job-take/", "/job-take-batch/")):
            with self.server.lock:
                batch = self.server.pending[: 1 if path.startswith("/job-take/") else 4]
                del self.server.pending[: len(batch)]
                self.server.taken += [job["id"] for job in batch]
            if batch:
                return self._json(batch[0] if path.startswith("/job-take/") else batch)
        self.send_response(204)
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        path = urlparse(self.path).path
        if path.startswith("/job-done/"):
            with self.server.lock:
                self.server.done[path.rsplit("/", 1)[1]] = json.loads(body)
        self._json({})

    def _json(self, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_jobs_in_flight_finish_on_sigterm_and_the_worker_exits_0(hub_cache):
    texts = [f"sentence {i} " * 20 for i in range(64)]
    jobs = [{"id": f"job-{i}", "input": {"model": EMBEDDER_ID, "input": texts}} for i in range(6)]
    api = FakeJobApi(jobs)
    env = {
        **os.environ,
        "MODEL_NAMES": EMBEDDER_ID,
        "RUNPOD_WEBHOOK_GET_JOB": f"{api.base}/job-take/$ID?gpu=test",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{api.base}/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
        "RUNPOD_WEBHOOK_PING": f"{api.base}/ping/$RUNPOD_POD_ID",
        "RUNPOD_POD_ID": "test-worker",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
    }
    log = tempfile.TemporaryFile(mode="w+")  # not a pipe: one nobody reads fills up and blocks the worker
    worker = subprocess.Popen([sys.executable, "src/handler.py"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        deadline = time.time() + 120
        while len(api.taken) < len(jobs) and time.time() < deadline and worker.poll() is None:
            time.sleep(0.05)
        assert len(api.taken) == len(jobs), (log.seek(0), log.read())[1][-2000:] if worker.poll() is not None else api.taken
        assert len(api.done) < len(jobs), "send SIGTERM while jobs are in flight"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        api.shutdown()
    assert sorted(api.done) == sorted(job["id"] for job in jobs)
    for result in api.done.values():
        assert "error" not in result, result
        assert len(result["output"]["data"]) == 64
