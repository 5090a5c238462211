"""A stand-in for RunPod's load balancer on loopback, as its documentation describes it: it
polls a worker's health route (`/ping` on `PORT_HEALTH`) and routes requests to the worker
only while that answers 200; otherwise it answers 503 itself, as RunPod does when no worker
is ready. Every health answer is recorded with its time.

    with StandInLoadBalancer(api_port, health_port) as lb:
        lb.wait_ready(60)
        openai.OpenAI(base_url=f"{lb.url}/v1", ...)
        lb.health  # [(seconds since start, status), ...]
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

POLL_EVERY = 0.05  # seconds


class StandInLoadBalancer:
    def __init__(self, api_port: int, health_port: int | None = None, path: str = "/ping") -> None:
        self.api = f"http://127.0.0.1:{api_port}"
        self.health_url = f"http://127.0.0.1:{health_port or api_port}{path}"
        self.health: list[tuple[float, int | None]] = []  # None: no answer (refused, reset)
        self.started = time.monotonic()
        self._running = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _forwarder(self))
        self._server.daemon_threads = True
        self._poller = threading.Thread(target=self._poll, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def routable(self) -> bool:
        return bool(self.health) and self.health[-1][1] == 200

    def __enter__(self) -> StandInLoadBalancer:
        self._poller.start()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._running = False
        self._poller.join(5)
        self._server.shutdown()
        self._server.server_close()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.routable:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker's health never answered 200: {self.statuses()}")
            time.sleep(POLL_EVERY)

    def statuses(self) -> list[int | None]:
        """The distinct health answers, in the order they came."""
        seen: list[int | None] = []
        for _, status in self.health:
            if not seen or seen[-1] != status:
                seen.append(status)
        return seen

    def _poll(self) -> None:
        with httpx.Client(timeout=2) as client:
            while self._running:
                try:
                    status: int | None = client.get(self.health_url).status_code
                except httpx.TransportError:
                    status = None
                self.health.append((time.monotonic() - self.started, status))
                time.sleep(POLL_EVERY)


def _forwarder(balancer: StandInLoadBalancer) -> type[BaseHTTPRequestHandler]:
    hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            self._forward()

        def do_POST(self) -> None:
            self._forward()

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not balancer.routable:
                return self._reply(503, b'{"error": "no workers available"}', {"Content-Type": "application/json"})
            headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
            try:
                answer = httpx.request(self.command, balancer.api + self.path, content=body, headers=headers,
                                       timeout=330)
            except httpx.TransportError:
                return self._reply(502, b'{"error": "the worker did not answer"}', {"Content-Type": "application/json"})
            self._reply(answer.status_code, answer.content,
                        {k: v for k, v in answer.headers.items() if k.lower() not in hop_by_hop})

        def _reply(self, status: int, data: bytes, headers: dict) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
