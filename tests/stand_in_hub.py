"""A stand-in Hugging Face hub on loopback, speaking what `huggingface_hub` and the worker use,
with faults on demand.

- `GET /api/models/{repo}/revision/{rev}[?blobs=true]`: the commit and its files (sizes, git
  blob ids, LFS sha256 for weights), as the hub's model info;
- `HEAD` and `GET /{repo}/resolve/{rev}/{file}`, with `Range`, `X-Repo-Commit`, `ETag`,
  `X-Linked-Etag` and `X-Linked-Size` as the hub sends them;
- gated repositories (a bearer token opens them), unknown repositories and revisions, with
  the hub's `X-Error-Code`;
- faults, each for the next `times` requests whose path contains `path`: an HTTP status
  (with `Retry-After`), a connection cut after some bytes, a stall, a slow transfer, or a
  file listed larger than it is.

    with StandInHub({"org/model": folder}) as hub:
        hub.add_fault(Fault("model.safetensors", cut_after=1000))
        ... HF_ENDPOINT=hub.url ...
        hub.requests  # (method, path, Range header, time) of every request served
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt")


@dataclass
class Fault:
    path: str  # applies to requests whose path contains this ("/api/" for the file list)
    times: int = 1
    status: int | None = None  # answer this status instead
    retry_after: str | None = None
    error_code: str | None = None  # X-Error-Code with the status
    cut_after: int | None = None  # send this many bytes of the body, then drop the connection
    stall: float | None = None  # send half the body, then wait this long before the rest
    release: threading.Event | None = None  # with stall: the rest goes when this is set (stall: at most)
    rate: float | None = None  # bytes per second for the body
    listed_size: int | None = None  # the file list says the file is this large


@dataclass
class Served:
    method: str
    path: str
    range: str | None
    at: float
    authorization: str | None


class StandInHub:
    def __init__(self, repos: dict[str, Path], commit: str = "c0ffee" * 6 + "c0ff",
                 gated: dict[str, str] | None = None) -> None:
        self.repos = repos
        self.commit = commit
        self.gated = gated or {}  # repo id -> the token that opens it
        self.faults: list[Fault] = []
        self.extra_siblings: list[dict] = []  # listed as they are, after the repository's files
        self.requests: list[Served] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandInHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def take_fault(self, path: str, kinds: tuple[str, ...]) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.path in path and any(getattr(fault, k) is not None for k in kinds):
                    fault.times -= 1
                    return fault
        return None

    def served(self, path_part: str, method: str = "GET") -> list[Served]:
        return [r for r in self.requests if path_part in r.path and r.method == method]

    def files(self, repo_id: str) -> list[dict]:
        folder = self.repos[repo_id]
        listed = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            data = path.read_bytes()
            size = len(data)
            if fault := self.take_fault(name, ("listed_size",)):
                size = fault.listed_size
            entry = {"rfilename": name, "size": size,
                     "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            if name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": size, "pointerSize": 130}
            listed.append(entry)
        return listed + self.extra_siblings


def _handler(hub: StandInHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            with hub._lock:
                hub.requests.append(Served(self.command, path, self.headers.get("Range"), time.monotonic(),
                                           self.headers.get("Authorization")))
            if fault := hub.take_fault(path, ("status",)):
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                if fault.error_code:
                    headers["X-Error-Code"] = fault.error_code
                return self._reply(fault.status, b'{"error": "stand-in fault"}', headers, body)
            if path.startswith("/api/models/"):
                return self._model_info(path.removeprefix("/api/models/"), body)
            return self._file(path.lstrip("/"), body)

        def _repo(self, repo_id: str, revision: str, body: bool) -> bool:
            if repo_id not in hub.repos:
                self._reply(401, b'{"error": "Repository Not Found"}', {"X-Error-Code": "RepoNotFound"}, body)
                return False
            token = hub.gated.get(repo_id)
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                self._reply(401 if self.headers.get("Authorization") is None else 403,
                            b'{"error": "Access to this model is restricted."}', {"X-Error-Code": "GatedRepo"}, body)
                return False
            if revision not in ("main", hub.commit):
                self._reply(404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"}, body)
                return False
            return True

        def _model_info(self, rest: str, body: bool) -> None:
            repo_id, _, revision = rest.partition("/revision/")
            if not self._repo(repo_id, revision or "main", body):
                return
            info = {"id": repo_id, "modelId": repo_id, "sha": hub.commit, "private": False,
                    "siblings": hub.files(repo_id)}
            self._reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)

        def _file(self, path: str, body: bool) -> None:
            parts = path.split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._reply(404, b'{"error": "not found"}', {}, body)
            repo_id, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if not self._repo(repo_id, revision, body):
                return
            file = hub.repos[repo_id] / name
            if not file.is_file():
                return self._reply(404, b'{"error": "Entry not found"}', {"X-Error-Code": "EntryNotFound"}, body)
            data = file.read_bytes()
            headers = {"X-Repo-Commit": hub.commit, "Accept-Ranges": "bytes",
                       "ETag": '"' + hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() + '"'}
            if name.endswith(LFS_SUFFIXES):
                headers["X-Linked-Etag"] = '"' + hashlib.sha256(data).hexdigest() + '"'
                headers["X-Linked-Size"] = str(len(data))
            start, status = 0, 200
            if (wanted := self.headers.get("Range", "")).startswith("bytes="):
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    return self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"}, body)
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._reply(status, data[start:], headers, body, path=name)

        def _reply(self, status: int, data: bytes, headers: dict, body: bool, path: str | None = None) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not body:
                return
            fault = hub.take_fault(path, ("cut_after", "stall", "rate")) if path else None
            try:
                if fault is None:
                    self.wfile.write(data)
                elif fault.cut_after is not None:
                    self.wfile.write(data[:fault.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                elif fault.stall is not None:
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    if fault.release is not None:
                        fault.release.wait(fault.stall)
                    else:
                        time.sleep(fault.stall)
                    self.wfile.write(data[len(data) // 2:])
                else:
                    step = max(1, int(fault.rate / 20))
                    for offset in range(0, len(data), step):
                        self.wfile.write(data[offset:offset + step])
                        self.wfile.flush()
                        time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True

    return Handler
