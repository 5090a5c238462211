"""RunPod's load-balancing endpoint type: HTTP from RunPod's load balancer straight to this
worker's server, no job queue (`ENDPOINT_TYPE=load_balancer`).

RunPod's contract, as its documentation states it, and how it is kept here:
- the server listens on `PORT` (80); RunPod polls `HEALTH_CHECK_PATH` (`/ping`) on
  `PORT_HEALTH` (`PORT` unless set): the port(s) are bound before anything else happens,
  then the health route answers **204** while the models load (the server answers from its
  first second), **200** once every model has loaded and passed its self-test, and **503**
  with a one-line reason when an engine has failed (liveness by progress, `engine/health.py`)
  or the worker is stopping, so RunPod takes it out of the routing pool. A model that cannot
  be loaded ends the process with status 1 and its one line, as in queue mode.
- the API is at the root: every route of `api/routes.py` (`/v1/embeddings`, `/v1/models`,
  `/v1/rerank`, `/v2/rerank`, `/v1/classify`, `/v1/tokenize`, `/embeddings`, `/rerank`), with
  the bodies, answers, OpenAI error shapes and limits of the local endpoint's `/openai`
  routes; `GET /metrics` (Prometheus). On the health port, when it is another, only health.
- no queue and no retry: a request past `RUNPOD_MAX_CONCURRENCY` in progress is answered
  **429** with `Retry-After` at once, never held; bodies up to 30 MB (RunPod's payload cap);
  no request runs past RunPod's cut at 5.5 minutes (`DEADLINE`: 504 before it, in one line);
  `REQUEST_TIMEOUT` holds for each engine call as in queue mode.
- SIGTERM: health answers 503 at once, requests already accepted finish (each has its whole
  deadline), new ones get 503, the engines stop, exit 0. SIGTERM while the models load ends
  the load and the process at once (exit 0).
- 429 and 503 are answered from the request's headers, before its body is read.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from embedding_worker.api.routes import error_shape
from embedding_worker.serving.http_api import FastJSON, Refusal, api_router
from embedding_worker.serving.http_defences import RequestGuard, bind, error_body, serve
from embedding_worker.serving.logs import print_error
from embedding_worker.serving.job_handler import Answer
from embedding_worker.serving.metrics import metrics, metrics_response
from embedding_worker.errors import DeadlinePassed
from embedding_worker.serving.worker import Worker, exit_while_loading, start_worker
from embedding_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 30 * 10**6  # RunPod's load balancer's payload cap
DEADLINE = 320.0  # seconds: RunPod cuts a request at 330 (524); answer before it
STOP_GRACE = DEADLINE + 5.0  # seconds accepted requests have to finish after SIGTERM: their whole deadline


@dataclass
class LoadBalancerState:
    settings: WorkerSettings
    worker: Worker | None = None
    stopping: bool = False
    exit_code: int = 0
    in_progress: int = 0
    loading: asyncio.Task | None = field(default=None, repr=False)

    async def enter(self) -> Refusal | None:
        """Taken, or refused from the headers alone (`http_api.Admission`): stopping, loading,
        or RUNPOD_MAX_CONCURRENCY requests in progress."""
        if self.stopping:
            return Refusal(503, "the worker is stopping; retry on another worker", retry_after=1)
        if self.worker is None:
            return Refusal(503, "the worker is still loading its models; retry shortly", retry_after=5)
        if self.in_progress >= self.settings.runpod_max_concurrency:
            return Refusal(429, f"the worker has {self.in_progress} requests in progress, its limit "
                                "(RUNPOD_MAX_CONCURRENCY); retry shortly", retry_after=1)
        self.in_progress += 1
        metrics().in_progress.inc()
        return None

    def leave(self) -> None:
        self.in_progress -= 1
        metrics().in_progress.dec()

    def health(self) -> tuple[int, str | None]:
        """RunPod's reading: 204 loading, 200 ready, 503 (with why) unhealthy or stopping."""
        if self.stopping:
            return 503, "the worker is stopping"
        if self.worker is None:
            return 204, None
        failed = {name: state for name, state in self.worker.registry.health().items() if state != "ok"}
        if failed:
            return 503, "; ".join(f"model {name!r} {state}" for name, state in failed.items())
        return 200, None


def create_app(state: LoadBalancerState) -> FastAPI:
    settings = state.settings
    health_port = settings.port_health if settings.port_health not in (None, settings.port) else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.loading = asyncio.create_task(_load(app, state))
        yield
        state.stopping = True
        if not state.loading.done():
            exit_while_loading()
        if state.worker is not None:
            await state.worker.registry.stop()
            log.info("stopped: the engines are down")

    app = FastAPI(title="Infinity Embedding Worker (load-balancing endpoint)", lifespan=lifespan,
                  default_response_class=FastJSON, docs_url=None, redoc_url=None, openapi_url=None,
                  exception_handlers={StarletteHTTPException: _http_error, ClientDisconnect: _client_gone})
    app.add_middleware(RequestGuard, allowed_hosts=None, max_body_bytes=MAX_BODY_BYTES, body_timeout=30.0,
                       openai_paths=lambda path: True, limits=("30 MB, RunPod's payload cap", "30 s"))
    if health_port is not None:
        app.add_middleware(HealthPortOnly, port=health_port, path=settings.health_check_path)

    @app.get(settings.health_check_path)
    async def health() -> Response:
        status, reason = state.health()
        if status == 204:
            return Response(status_code=204)
        body = {"status": "ready", "models": state.worker.registry.health()} if status == 200 else {"error": reason}
        return FastJSON(body, status_code=status)

    async def call(path: str, body: Any, request_id: str) -> Answer | Response:
        job_input: dict[str, Any] = {"openai_route": path}
        if body is not None:
            job_input["openai_input"] = body
        try:
            async with asyncio.timeout(DEADLINE):
                return await state.worker.handler.answer(job_input, request_id)
        except TimeoutError:
            return Answer(error=DeadlinePassed(f"the request ran past {DEADLINE:g} s, RunPod's limit for a "
                                               "load-balanced request; send smaller requests"), openai=True)

    app.include_router(api_router("", call, admission=state))
    app.add_api_route("/metrics", metrics_response, methods=["GET"], include_in_schema=False)
    return app


async def _load(app: FastAPI, state: LoadBalancerState) -> None:
    """The models, loaded beside the running server; a failure ends the process with 1."""
    worker = await asyncio.to_thread(start_worker, state.settings)
    if worker is not None:
        try:
            await worker.registry.start()
        except Exception:  # noqa: BLE001 - an engine that cannot start ends the process, in one line
            log.exception("the engines could not start")
            worker = None
    if worker is None:
        state.exit_code = 1
        app.state.server.should_exit = True
        return
    state.worker = worker
    log.info("ready: %d model(s) loaded; %s answers 200", len(worker.registry.models), state.settings.health_check_path)


class HealthPortOnly:
    """On the health port (when it is not the API's), only the health route."""

    def __init__(self, app, *, port: int, path: str) -> None:
        self.app, self.port, self.path = app, port, path

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and (scope.get("server") or (None, None))[1] == self.port \
                and scope["path"] != self.path:
            response = FastJSON({"error": f"port {self.port} serves only {self.path}"}, status_code=404)
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    return Response(status_code=499)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    message = exc.detail
    if exc.status_code == 405 and message == "Method Not Allowed":
        message = f"{request.method} is not allowed on {request.url.path}; use {(exc.headers or {}).get('Allow')}"
    elif exc.status_code == 404 and message == "Not Found":
        message = f"{request.url.path} is not served here; the API is under /v1/ (embeddings, models, rerank, ...)"
    if error_shape(request.url.path) == "cohere":  # Cohere's routes answer {"message"}, whatever went wrong
        return FastJSON({"message": message}, status_code=exc.status_code, headers=exc.headers)
    return FastJSON(error_body(exc.status_code, message, True), status_code=exc.status_code, headers=exc.headers)


def serve_load_balancer(settings: WorkerSettings) -> int:
    """Bind, serve health from the first second while the models load, serve the API once
    they have; return the exit status."""
    ports = [settings.port] + ([settings.port_health] if settings.port_health not in (None, settings.port) else [])
    try:
        sockets = [bind(settings.host, port, "PORT (or PORT_HEALTH)", "HOST") for port in ports]
    except OSError as exc:
        print_error(str(exc))
        return 1
    state = LoadBalancerState(settings)
    log.info("load-balancing endpoint: the API on port %d, health at %s on port %d; loading %d model(s)",
             settings.port, settings.health_check_path, ports[-1], len(settings.models))

    def stopping() -> None:
        if not state.stopping:
            log.info("stopping: health answers 503; %d request(s) in progress finish first (up to %g s)",
                     state.in_progress, STOP_GRACE)
        state.stopping = True

    app = create_app(state)
    serve(app, sockets, header_timeout=10.0, keep_alive_timeout=75.0, max_connections=10_000, on_stop=stopping,
          graceful_timeout=STOP_GRACE)
    return state.exit_code


def main() -> int:
    """`ENDPOINT_TYPE=load_balancer`: settings checked first (one line and status 1 if bad),
    then `serve_load_balancer`."""
    from embedding_worker.errors import SettingsError
    from embedding_worker.serving.logs import configure_logging
    from embedding_worker.settings import load_settings

    configure_logging()
    try:
        settings = load_settings()
    except SettingsError as err:
        print_error(str(err))
        return 1
    settings.export_engine_environment()  # before torch and Infinity are imported
    return serve_load_balancer(settings)
