"""A local stand-in for `https://api.runpod.ai/v2/<ENDPOINT_ID>`, serving this worker.

Same URL layout and bodies as the deployed endpoint, so client code runs unchanged:
- RunPod API: `POST /v2/{id}/runsync`, `POST /v2/{id}/run`, `GET /v2/{id}/status/{job}`,
  `GET /v2/{id}/stream/{job}`, `POST /v2/{id}/cancel/{job}`, `POST /v2/{id}/purge-queue`,
  `GET /v2/{id}/health`; jobs run through runpod's own `run_job` with the worker's handler.
- OpenAI gateway: every route of `api/routes.py` under `/v2/{id}/openai` (`/v1/models`,
  `/v1/embeddings`, `/v1/rerank`, Cohere's `/v2/rerank`, `/v1/classify`, `/v1/tokenize`,
  Infinity's un-versioned `/rerank` and `/embeddings`), served by `http_api.py` as the
  load-balancing endpoint serves them at its root.
- RunPod's Batch API: `/v2/{id}/batch...` (`batch_api.py`), its requests run as `/run` jobs.
- `GET /metrics`: Prometheus' text format (`metrics.py`).
Requests pass `http_defences.RequestGuard` first (host, origin, JSON, body size and time).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from embedding_worker.api.routes import error_shape
from embedding_worker.serving.batch_api import batch_router
from embedding_worker.serving.http_api import FastJSON, Refusal, api_router, json_body
from embedding_worker.serving.http_defences import RequestGuard, error_body, looks_like_openai
from embedding_worker.serving.job_handler import Answer, JobHandler
from embedding_worker.serving.job_store import JobStore
from embedding_worker.serving.metrics import metrics_response
from embedding_worker.serving.worker import Worker, exit_while_loading

log = logging.getLogger(__name__)


class LocalEndpointConfig(BaseSettings):
    """The local endpoint's settings: flags of `src/local_endpoint.py`, or LOCAL_* variables."""

    model_config = SettingsConfigDict(env_prefix="LOCAL_", case_sensitive=False, extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str = ""  # when set, every route but health and docs needs it
    allowed_hosts: str = ""  # `,`-separated names served besides loopback names and IP addresses
    max_body_bytes: int = 20 * 2**20  # RunPod's own cap for /runsync bodies
    body_timeout: float = 30.0  # seconds a request body may take to arrive
    header_timeout: float = 10.0  # seconds a connection may take to send its request headers
    keep_alive_timeout: float = 5.0  # seconds an idle keep-alive connection stays open
    max_connections: int = 1000  # connections and requests at once; more get 503
    runsync_wait: float = 90.0  # seconds /runsync waits before answering IN_PROGRESS
    result_ttl: float = 1800.0  # seconds a /run result stays readable from /status
    runsync_ttl: float = 60.0  # seconds a /runsync result stays readable from /status
    max_result_bytes: int = 128 * 2**20  # kept results, as JSON; the oldest go first past it
    max_jobs: int = 10_000  # jobs kept at most


def create_app(worker: Worker | Callable[[], Worker | None], config: LocalEndpointConfig) -> FastAPI:
    """The app over a loaded `worker`, or over one that a loader makes while the app already
    answers: jobs then wait IN_QUEUE for the models (their `delayTime` counts it), `/health`
    answers 503 until they are loaded, and a loader that fails (None) ends the server with
    `app.state.exit_code` 1."""
    from runpod.serverless.modules.rp_job import run_job

    ready = asyncio.Event()
    state: dict[str, Any] = {} if callable(worker) else {"worker": worker}

    def handler() -> JobHandler:
        return state["worker"].handler

    async def load(app: FastAPI) -> None:
        if "worker" not in state:
            loaded = await asyncio.to_thread(worker)
            if loaded is None:
                app.state.exit_code = 1
                app.state.server.should_exit = True
                return
            state["worker"] = loaded
        await state["worker"].registry.start()
        ready.set()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.exit_code = 0
        state["jobs"] = JobStore(
            lambda job: run_job(handler(), job),
            capacity=lambda running: handler().concurrency_modifier(running) if "worker" in state else 1,
            ttl=config.result_ttl,
            runsync_ttl=config.runsync_ttl,
            max_bytes=config.max_result_bytes,
            max_jobs=config.max_jobs,
            ready=ready,
        )
        loading = asyncio.create_task(load(app))
        if "worker" in state:
            await loading  # loaded already: its engines start before the first request
        yield
        if not loading.done():
            exit_while_loading()
        if "worker" not in state:  # it never loaded: its one line has been said
            return
        await state["jobs"].drain()  # jobs in flight finish before the engines stop
        ended = state["jobs"].finished
        log.info("stopping: %d jobs completed, %d failed, %d cancelled", ended["COMPLETED"], ended["FAILED"],
                 ended["CANCELLED"])
        await state["worker"].registry.stop()

    def jobs() -> JobStore:
        return state["jobs"]

    async def authorized(request: Request) -> None:  # async: no thread-pool hop per request
        if not config.api_key:
            return
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        valid = secrets.compare_digest(given.strip().encode(), config.api_key.encode())
        if scheme.lower() != "bearer" or not valid:  # the scheme as HTTP has it: any case, never left out
            raise HTTPException(401, "Unauthorized: a valid API key is required, as Authorization: Bearer <key>")

    app = FastAPI(
        title="Infinity Embedding Worker (local endpoint)",
        lifespan=lifespan,
        default_response_class=FastJSON,
        exception_handlers={StarletteHTTPException: _http_error, ClientDisconnect: _client_gone},
    )
    app.add_middleware(
        RequestGuard,
        allowed_hosts=[config.host, *config.allowed_hosts.split(",")],
        max_body_bytes=config.max_body_bytes,
        body_timeout=config.body_timeout,
    )
    runpod_api = APIRouter(prefix="/v2/{endpoint_id}", dependencies=[Depends(authorized)])

    @app.get("/v2/{endpoint_id}/health")
    async def health(endpoint_id: str) -> Response:
        """RunPod's health body, plus each model's state; 503 once an engine has failed."""
        counts = jobs().counts()
        if not ready.is_set():
            return FastJSON({"jobs": counts, "workers": {"initializing": 1}, "models": "loading"}, status_code=503)
        busy = counts["inProgress"]
        registry = state["worker"].registry
        healthy = registry.healthy
        body = {
            "jobs": counts,
            "workers": {"idle": int(busy == 0 and healthy), "running": int(busy > 0 and healthy),
                        "unhealthy": int(not healthy)},
            "models": registry.health(),
        }
        return FastJSON(body, status_code=200 if healthy else 503)

    @runpod_api.post("/run")
    async def run(endpoint_id: str, request: Request) -> Response:
        job = jobs().submit(await _job_input(request))
        return FastJSON({"id": job.id, "status": job.status})

    @runpod_api.post("/runsync")
    async def runsync(endpoint_id: str, request: Request) -> Response:
        job = jobs().submit(await _job_input(request), sync=True)
        try:
            await asyncio.wait_for(asyncio.shield(job.done.wait()), config.runsync_wait)
        except TimeoutError:
            pass  # like RunPod: answer with the status; the client polls /status
        return Response(job.to_api_json(), media_type="application/json")

    @runpod_api.get("/status/{job_id}")
    async def status(endpoint_id: str, job_id: str) -> Response:
        job = jobs().get(job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id!r} does not exist or has expired")
        return Response(job.to_api_json(), media_type="application/json")

    @runpod_api.get("/stream/{job_id}")
    async def stream(endpoint_id: str, job_id: str) -> Response:
        body = jobs().stream(job_id)
        if body is None:
            raise HTTPException(404, f"job {job_id!r} does not exist or has expired")
        return FastJSON(body)

    @runpod_api.post("/cancel/{job_id}")
    async def cancel(endpoint_id: str, job_id: str) -> Response:
        job = jobs().cancel(job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id!r} does not exist or has expired")
        return FastJSON({"id": job.id, "status": job.status})

    @runpod_api.post("/purge-queue")
    async def purge_queue(endpoint_id: str) -> Response:
        return FastJSON({"removed": jobs().purge_queue(), "status": "completed"})

    async def openai_job(route: str, body: Any, request_id: str) -> Answer:
        job_input: dict[str, Any] = {"openai_route": route}
        if body is not None:
            job_input["openai_input"] = body
        return await jobs().run_exclusive(handler().answer(job_input, request_id))

    class WhenLoaded:
        """The API routes wait for the models as /runsync does (LOCAL_RUNSYNC_WAIT), then
        answer 503 with Retry-After in the route's error shape, before reading the body."""

        async def enter(self) -> Refusal | None:
            try:
                await asyncio.wait_for(asyncio.shield(ready.wait()), config.runsync_wait)
            except TimeoutError:
                return Refusal(503, "the worker is still loading its models; retry shortly", retry_after=5)
            return None if "worker" in state else Refusal(503, "the worker could not load its models")

        def leave(self) -> None:
            pass

    app.include_router(runpod_api)
    app.include_router(batch_router(jobs, [Depends(authorized)]))
    app.include_router(api_router("/v2/{endpoint_id}/openai", openai_job, [Depends(authorized)], WhenLoaded()))
    app.add_api_route("/metrics", metrics_response, methods=["GET"], include_in_schema=False)
    app.add_api_route("/v2/{endpoint_id}/metrics", metrics_response, methods=["GET"], include_in_schema=False)
    return app


async def _job_input(request: Request) -> Any:
    body = await json_body(request)
    unwrapped = isinstance(body, dict) and "model" in body  # the request itself, sent as the job
    if not isinstance(body, dict) or "input" not in body or unwrapped:
        hint = "; this one looks like the request itself: send it as the job's input" if unwrapped else ""
        raise HTTPException(400, 'the request body must be a JSON object with an "input" field, '
                                 f'{{"input": {{"model": ..., ...}}}}{hint}')
    return body["input"]


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    return Response(status_code=499)  # nobody is listening: no body, no log


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Every HTTP error, routing's 404 and 405 included, in its API family's one shape: OpenAI's
    on any path an OpenAI-style client would call, so its SDK shows the message."""
    message, path = exc.detail, request.url.path
    openai = looks_like_openai(path)
    if exc.status_code == 405 and message == "Method Not Allowed":  # routing's own: say what to use
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {path}; use {allowed or 'another method'}"
    elif exc.status_code == 404 and message == "Not Found":
        message = (f"{path} is not served here; the OpenAI API is under /v2/<endpoint id>/openai/v1/ (base_url "
                   f"\"{request.base_url}v2/local/openai/v1\")" if openai else
                   f"{path} is not served here; the API is under /v2/<endpoint id>/ "
                   "(runsync, run, status, stream, cancel, purge-queue, health, batch, openai/v1/...)")
    if error_shape(path) == "cohere":  # Cohere's routes answer {"message"}, whatever went wrong
        return FastJSON({"message": message}, status_code=exc.status_code, headers=exc.headers)
    return FastJSON(error_body(exc.status_code, message, openai), status_code=exc.status_code, headers=exc.headers)
