"""Turn whatever job input arrives into one typed request, before anything else happens.

Two flavours reach the handler:
- OpenAI: `{"openai_route": "/v1/embeddings", "openai_input": {...}}`, as RunPod's
  `/openai/v1/*` gateway sends it (also `/v1/rerank`, `/v1/classify`, `/v1/models`);
- standard: `{"model", "input"}` (embeddings, or classification when the model is a
  classifier), `{"model", "query", "docs"}` for rerank, `{"task": "tokenize", "model",
  "input"}` for token ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from embedding_worker.api.routes import BY_PATH, ApiRoute, Route
from embedding_worker.errors import InvalidRequest
from embedding_worker.api.schemas import (
    ClassifyRequest,
    CohereEmbedRequest,
    EmbeddingRequest,
    ModelsRequest,
    RequestLimits,
    RerankRequest,
    TokenizeRequest,
    json_type,
)

RequestT = TypeVar("RequestT", bound=BaseModel)


TASKS = {"tokenize": Route.tokenize}  # standard jobs that name their task
SCHEMAS: dict[Route, type[BaseModel]] = {
    Route.embeddings: EmbeddingRequest,
    Route.rerank: RerankRequest,
    Route.classify: ClassifyRequest,
    Route.tokenize: TokenizeRequest,
    Route.texts: EmbeddingRequest,
    Route.cohere_embed: CohereEmbedRequest,
}


@dataclass(frozen=True)
class Job:
    route: Route
    request: BaseModel
    openai: bool  # OpenAI-route jobs answer with a one-element list holding the body
    document_objects: bool = False  # rerank documents as Cohere's {"text"} (the /v1, /v2 routes)


def normalize_job_input(job_input: Any, limits: RequestLimits | None = None) -> Job:
    """Classify and validate a job's `input`; raise `InvalidRequest` naming the field."""
    if not isinstance(job_input, dict):
        raise InvalidRequest(f"input: must be a JSON object, got {json_type(job_input)}")
    document_objects = False
    if "openai_route" in job_input:
        api, body = _openai_route(job_input)
        route, openai, document_objects = api.route, True, api.document_objects
    elif "task" in job_input:
        route = TASKS.get(job_input["task"]) if isinstance(job_input["task"], str) else None
        if route is None:
            raise InvalidRequest(f"task: {job_input['task']!r} is not supported; supported: {', '.join(TASKS)}")
        body, openai = job_input, False
    elif "query" in job_input or "docs" in job_input or "documents" in job_input:
        route, body, openai = Route.rerank, job_input, False
    elif "input" in job_input:
        route, body, openai = Route.texts, job_input, False
    else:
        raise InvalidRequest(
            "input: expected `model` with `input` (embeddings) or with `query` and `docs` (rerank)"
        )
    request = ModelsRequest() if route is Route.models else parse_request(SCHEMAS[route], body, limits)
    return Job(route, request, openai, document_objects)


def _openai_route(job_input: dict) -> tuple[ApiRoute, dict]:
    raw_route = job_input["openai_route"]
    api = BY_PATH.get(raw_route.rstrip("/")) if isinstance(raw_route, str) else None
    if api is None:
        raise InvalidRequest(
            f"openai_route: {raw_route!r} is not supported; supported: {', '.join(BY_PATH)}"
        )
    body = job_input.get("openai_input")
    if api.route is not Route.models and not isinstance(body, dict):
        raise InvalidRequest(
            f"openai_input: must be a JSON object for {api.route.value}, got {json_type(body)}"
        )
    return api, body


def parse_request(
    schema: type[RequestT], body: dict, limits: RequestLimits | None = None
) -> RequestT:
    try:
        return schema.model_validate(body, context={"limits": limits or RequestLimits()})
    except ValidationError as exc:
        raise InvalidRequest(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem as `field: what is wrong`."""
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{field}: required"
    return f"{field}: {message}" if field else message
