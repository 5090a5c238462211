"""How the local endpoint defends itself against careless and hostile clients.

- `RequestGuard` (ASGI middleware): a request reaches the API only if
  - its `Host` is a loopback name, an IP address or a configured name (421 otherwise), so
    a web page cannot reach the endpoint through DNS rebinding;
  - its `Origin`, when a browser sends one, is a loopback name or address or a configured
    name (403 otherwise): a page served from any other address, a bare IP included, cannot
    run or purge jobs from a visitor's browser;
  - a POST with a body says `Content-Type: application/json` (415), so a cross-site
    "simple" request (`text/plain`, forms) cannot run jobs; a bodiless POST with no
    content type (`/cancel`, `/purge-queue` from curl) passes;
  - its body is at most `max_body_bytes` (413) and arrives within `body_timeout` (408).
  Each refusal is a one-line JSON error, in OpenAI's error shape under `/openai/` (Cohere's
  `{"message"}` on Cohere's routes).
  A CORS preflight (`OPTIONS`) from an allowed origin gets 204 and what a page may send;
  one from any other origin is refused like any request from it (403).
- `serve`: uvicorn with the h11 parser, whose header size is bounded, plus a timeout for a
  connection that does not complete its request headers, keep-alive and connection caps;
  on SIGTERM it drains and exits 0.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson

from embedding_worker.api.routes import error_shape

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
MAX_HEADER_BYTES = 64 * 1024


class BodyRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _host_name(host: str) -> str:
    """The name or address of a `Host` header or an origin's netloc, without its port."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8000
        return name[1:name.find("]")] if "]" in name else name
    return name.split(":", 1)[0] if name.count(":") == 1 else name


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def host_allowed(host: str, allowed_names: frozenset[str]) -> bool:
    """A loopback name, a configured name or any IP literal (DNS rebinding needs a name)."""
    name = _host_name(host)
    return name in LOOPBACK_NAMES or name in allowed_names or _ip(name) is not None


def origin_allowed(origin: str, allowed_names: frozenset[str]) -> bool:
    """A page's origin: a loopback name or address, or a configured name."""
    try:
        name = _host_name(urlsplit(origin).netloc)
    except ValueError:  # not a URL at all
        return False
    address = _ip(name)
    return name in LOOPBACK_NAMES or name in allowed_names or (address is not None and address.is_loopback)


class RequestGuard:
    """`allowed_hosts` None: any host and origin (a server behind RunPod's load balancer, which
    reaches it under the endpoint's own name); `openai_paths`: which paths are answered in
    OpenAI's error shape (`looks_like_openai`); `limits`: how the refusals name the body limits."""

    def __init__(self, app, *, allowed_hosts: Iterable[str] | None, max_body_bytes: int, body_timeout: float,
                 openai_paths: Callable[[str], bool] | None = None,
                 limits: tuple[str, str] = ("LOCAL_MAX_BODY_BYTES", "LOCAL_BODY_TIMEOUT")) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else frozenset(
            h.strip().lower() for h in allowed_hosts if h.strip())
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.openai_paths = openai_paths or looks_like_openai
        self.body_limit, self.time_limit = limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope["method"], headers)
        openai = self.openai_paths(scope["path"])
        cohere = error_shape(scope["path"]) == "cohere"  # Cohere's routes: Cohere's {"message"}
        if refusal is not None:
            return await _error(send, *refusal, openai=openai, cohere=cohere)
        if scope["method"] == "OPTIONS":  # a preflight from an allowed origin (others got 403 above)
            return await _preflight(send, headers)
        state = {"started": False}

        async def sending(message: dict[str, Any]) -> None:
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, self._bounded(receive), sending)
        except BodyRefused as refused:
            if not state["started"]:
                await _error(send, refused.status, str(refused), openai=openai, cohere=cohere)

    def _refusal(self, method: str, headers: dict[str, str]) -> tuple[int, str] | None:
        host, origin = headers.get("host", ""), headers.get("origin")
        if self.allowed is not None:
            if not host_allowed(host, self.allowed):
                return 421, (f"host {host!r} is not served here; use 127.0.0.1 or localhost, or add it to "
                             "LOCAL_ALLOWED_HOSTS")
            if origin and origin != "null" and not origin_allowed(origin, self.allowed):
                return 403, f"cross-origin requests from {origin!r} are refused"
            if origin == "null":
                return 403, "cross-origin requests from an opaque origin are refused"
        bodiless = headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers
        if method == "POST":
            content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type != "application/json" and not (bodiless and not content_type):
                return 415, f"the body must be JSON with Content-Type: application/json, got {content_type or 'none'!r}"
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_body_bytes:
                return 413, f"the body has {int(length)} bytes; the limit is {self.max_body_bytes} ({self.body_limit})"
        return None

    def _bounded(self, receive):
        deadline = time.monotonic() + self.body_timeout
        state = {"received": 0, "complete": False}

        async def bounded_receive() -> dict[str, Any]:
            if state["complete"]:  # after the body: only a disconnect, whenever it comes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyRefused(408, f"the body did not arrive within {self.body_timeout:g} s "
                                       f"({self.time_limit})") from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body_bytes:
                    raise BodyRefused(413, f"the body has more than {self.max_body_bytes} bytes; "
                                           f"the limit is {self.body_limit}")
                state["complete"] = not message.get("more_body", False)
            return message

        return bounded_receive


async def _preflight(send, headers: dict[str, str]) -> None:
    """CORS preflight: 204, allowing what a same-site page may send (JSON with a key)."""
    answer = [(b"allow", b"GET, POST, OPTIONS"), (b"content-length", b"0")]
    if "origin" in headers:
        answer += [(b"access-control-allow-origin", headers["origin"].encode("latin-1")),
                   (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                   (b"access-control-allow-headers", b"authorization, content-type"),
                   (b"access-control-max-age", b"600"), (b"vary", b"Origin")]
    await send({"type": "http.response.start", "status": 204, "headers": answer})
    await send({"type": "http.response.body", "body": b""})


OPENAI_NAMES = frozenset({"embeddings", "models", "rerank", "classify", "tokenize", "completions", "responses"})


def looks_like_openai(path: str) -> bool:
    """A path an OpenAI-style client would call: under `/openai/`, any `/v1/`, or ending in one
    of the API's names (an SDK with a wrong `base_url` still reads its error then)."""
    return "/openai/" in path or "/v1/" in path or path.rstrip("/").rsplit("/", 1)[-1] in OPENAI_NAMES


def error_body(status: int, message: str, openai: bool, param: str | None = None) -> dict[str, Any]:
    """One error shape per API family: OpenAI's object under `/openai/` (`param`: the request
    field at fault, where known), RunPod's elsewhere."""
    if not openai:
        return {"error": message}
    kind = "rate_limit_error" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param,
                      "code": "model_not_found" if status == 404 and message.startswith("model") else None}}


async def _error(send, status: int, message: str, openai: bool = False, cohere: bool = False) -> None:
    body = orjson.dumps({"message": message} if cohere else error_body(status, message, openai))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def bind(host: str, port: int, setting: str = "--port (or LOCAL_PORT)",
         host_setting: str = "--host (or LOCAL_HOST)") -> socket.socket:
    """The listening socket, bound now; an address in use, or one that cannot be listened on,
    is one line naming the settings that choose it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(f"port {port} on {host} is in use; choose another with {setting}") from None
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; set {host_setting} and "
                      f"{setting}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app, sock: socket.socket | list[socket.socket], *, header_timeout: float, keep_alive_timeout: float,
          max_connections: int, on_stop: Callable[[], None] | None = None,
          graceful_timeout: float | None = None) -> None:
    """Run uvicorn on the bound socket(s) with the connection-level defences; return after a
    graceful stop. `on_stop` runs when SIGTERM or SIGINT arrives; the server is
    `app.state.server`, so the app can end it (`should_exit`)."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        """Closes a connection whose request headers are not complete `header_timeout`
        seconds after it opened or its last response ended (slow-trickling clients)."""

        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _too_slow(self) -> None:
            self._timer = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

    class Server(uvicorn.Server):
        """On SIGTERM or SIGINT: stop accepting, finish what is in flight, stop the engines,
        exit 0 (as a RunPod worker does), instead of re-raising the signal afterwards."""

        def handle_exit(self, sig, frame) -> None:
            self.force_exit = self.should_exit  # a second signal: stop waiting
            self.should_exit = True
            if on_stop is not None:
                on_stop()

    config = uvicorn.Config(
        app, log_level="warning", http=HeaderTimeoutProtocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_keep_alive=keep_alive_timeout,
        limit_concurrency=max_connections, timeout_graceful_shutdown=graceful_timeout,
    )
    server = Server(config)
    app.state.server = server
    server.run(sockets=sock if isinstance(sock, list) else [sock])
