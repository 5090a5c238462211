"""The API's routes (`api/routes.py`) served over HTTP under any prefix: the local endpoint's
`/v2/<id>/openai`, a load-balancing endpoint's root. Each request becomes an `openai_route`
job, as RunPod's gateway makes it, answered by the worker's handler through `call`; a failed
one is answered with its route's error body (OpenAI's, or Cohere's) and a 4xx/5xx status, and
so is any other path under `/v1`.

A server's `Admission` decides from the request line and headers alone whether a request is
taken (the worker still loading, stopping, or at its limit of requests in progress): a
refusal is answered before a byte of the body is read, so a large body costs nothing then."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from embedding_worker.api.routes import API_ROUTES, ApiRoute
from embedding_worker.errors import WorkerError
from embedding_worker.serving import json_io
from embedding_worker.serving.http_defences import error_body
from embedding_worker.serving.job_handler import Answer

# (route path as in `openai_route`, JSON body or None, request id) -> the handler's answer
CallRoute = Callable[[str, Any, str], Awaitable[Answer | Response]]
VERSIONED = {api.path: api.method for api in API_ROUTES if api.path.startswith("/v1/")}


@dataclass(frozen=True)
class Refusal:
    """A request not taken: its status, one line, and when to retry (seconds)."""

    status: int
    message: str
    retry_after: int | None = None


class Admission(Protocol):
    """Whether a request is taken, from its headers alone; every taken request leaves."""

    async def enter(self) -> Refusal | None: ...

    def leave(self) -> None: ...


class FastJSON(JSONResponse):
    """JSON by orjson: about 20x faster than the standard encoder on float vectors."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def api_router(prefix: str, call: CallRoute, dependencies: Sequence[Any] = (),
               admission: Admission | None = None) -> APIRouter:
    """Every route of the table under `prefix`, each taken through `admission` and answered
    through `call`."""
    router = APIRouter(prefix=prefix, dependencies=list(dependencies))
    for api in API_ROUTES:
        router.add_api_route(api.path, _endpoint(call, api, admission), methods=[api.method])
    router.add_api_route("/v1/{path:path}", _unknown_path, methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
                         include_in_schema=False)
    return router


def _endpoint(call: CallRoute, api: ApiRoute, admission: Admission | None):
    async def endpoint(request: Request) -> Response:
        # the id the job's log line carries, the client's own where it sent one
        request_id = request.headers.get("x-request-id", "")[:64] or f"req-{uuid.uuid4().hex[:12]}"
        refusal = await admission.enter() if admission is not None else None
        if refusal is not None:
            response = refused(refusal, api.errors)
        else:
            try:
                answer = await call(api.path, await json_body(request) if api.method == "POST" else None, request_id)
            finally:
                if admission is not None:
                    admission.leave()
            response = answer if isinstance(answer, Response) else await json_io.off_loop_if(
                json_io.is_large(answer.body), lambda: to_response(answer, api.errors))
        response.headers["X-Request-Id"] = request_id
        return response

    endpoint.__name__ = "api" + api.path.replace("/", "_")
    return endpoint


def to_response(answer: Answer, errors: str = "openai") -> Response:
    if answer.error is not None:
        if errors == "cohere":  # Cohere's SDKs read {"message"}
            return FastJSON({"message": answer.error.message}, status_code=answer.error.status_code)
        return openai_error(answer.error)
    return FastJSON(answer.body)


def refused(refusal: Refusal, errors: str = "openai") -> Response:
    """A refusal in the route's error shape, with `Retry-After` where it says when."""
    headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
    body = {"message": refusal.message} if errors == "cohere" else error_body(refusal.status, refusal.message, True)
    return FastJSON(body, status_code=refusal.status, headers=headers)


async def _unknown_path(path: str, request: Request) -> Response:
    route = "/v1/" + path.strip("/")
    if route in VERSIONED:  # the route exists: the method does not
        raise HTTPException(405, f"{request.method} is not allowed on {route}; use {VERSIONED[route]}",
                            headers={"Allow": VERSIONED[route]})
    raise HTTPException(404, f"/v1/{path} is not served here; served: {', '.join(VERSIONED)}")


async def json_body(request: Request, max_bytes: int | None = None) -> Any:
    """The body as JSON; past `max_bytes` (a route's own cap, below the server's), 413, from
    its Content-Length before it is read where the client declares one."""
    declared = request.headers.get("content-length", "")
    if max_bytes is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"the request body has {int(declared):,} bytes; this route takes at most {max_bytes:,}")
    raw = await request.body()
    if max_bytes is not None and len(raw) > max_bytes:
        raise HTTPException(413, f"the request body has {len(raw):,} bytes; this route takes at most {max_bytes:,}")
    try:
        return await json_io.loads(raw)
    except orjson.JSONDecodeError:
        raise HTTPException(400, "the request body is not valid JSON") from None


def openai_error(error: WorkerError) -> Response:
    field, _, _ = error.message.partition(":")  # a request error starts with the field at fault
    return FastJSON(error_body(error.status_code, error.message, True, field if field.isidentifier() else None),
                    status_code=error.status_code)
