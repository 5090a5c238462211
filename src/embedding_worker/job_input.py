"""Turn whatever job input arrives into one typed request, before anything else happens.

Two flavours reach the handler:
- OpenAI: `{"openai_route": "/v1/embeddings", "openai_input": {...}}`, as RunPod's
  `/openai/v1/*` gateway sends it;
- standard: `{"model", "input"}` for embeddings, `{"model", "query", "docs"}` for rerank.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from embedding_worker.errors import InvalidRequest
from embedding_worker.schemas import (
    EmbeddingRequest,
    ModelsRequest,
    RerankRequest,
    json_type,
)


RequestT = TypeVar("RequestT", bound=BaseModel)


class Route(str, Enum):
    models = "/v1/models"
    embeddings = "/v1/embeddings"
    rerank = "/v1/rerank"


OPENAI_ROUTES = {Route.models.value: Route.models, Route.embeddings.value: Route.embeddings}


@dataclass(frozen=True)
class Job:
    route: Route
    request: BaseModel
    openai: bool  # OpenAI-route jobs answer with a one-element list holding the body


def normalize_job_input(job_input: Any) -> Job:
    """Classify and validate a job's `input`; raise `InvalidRequest` naming the field."""
    if not isinstance(job_input, dict):
        raise InvalidRequest(f"input: must be a JSON object, got {json_type(job_input)}")
    if "openai_route" in job_input:
        return _openai_job(job_input)
    if "query" in job_input or "docs" in job_input:
        return Job(Route.rerank, parse_request(RerankRequest, job_input), openai=False)
    if "input" in job_input:
        return Job(Route.embeddings, parse_request(EmbeddingRequest, job_input), openai=False)
    raise InvalidRequest(
        "input: expected `model` with `input` (embeddings) or with `query` and `docs` (rerank)"
    )


def _openai_job(job_input: dict) -> Job:
    raw_route = job_input["openai_route"]
    route = OPENAI_ROUTES.get(raw_route.rstrip("/")) if isinstance(raw_route, str) else None
    if route is None:
        raise InvalidRequest(
            f"openai_route: {raw_route!r} is not supported; supported: {', '.join(OPENAI_ROUTES)}"
        )
    if route is Route.models:
        return Job(route, ModelsRequest(), openai=True)
    body = job_input.get("openai_input")
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"openai_input: must be a JSON object for {route.value}, got {json_type(body)}"
        )
    return Job(route, parse_request(EmbeddingRequest, body), openai=True)


def parse_request(schema: type[RequestT], body: dict) -> RequestT:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem as `field: what is wrong`."""
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"]) or "input"
    if error["type"] == "missing":
        return f"{field}: required"
    return f"{field}: {error['msg'].removeprefix('Value error, ')}"
