"""The API's routes, declared once: every HTTP layout and the job normaliser read this table.

A route is named as RunPod's OpenAI gateway names it in `openai_route` (`/v1/embeddings`);
the same paths are served under the local endpoint's `/v2/<id>/openai` and at the root of a
load-balancing endpoint. Each says which request it takes (`Route`), its method, and whether
rerank documents come back as Cohere's `{"text"}` objects or as Infinity's strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Route(str, Enum):
    models = "/v1/models"
    embeddings = "/v1/embeddings"
    rerank = "/v1/rerank"
    classify = "/v1/classify"
    tokenize = "/v1/tokenize"
    cohere_embed = "/v2/embed"
    texts = "standard input"  # embed or classify, by what the named model does


@dataclass(frozen=True)
class ApiRoute:
    path: str
    route: Route
    method: str = "POST"
    document_objects: bool = True  # rerank documents as {"text"}; Infinity's own routes: strings
    errors: str = "openai"  # the error body's shape over HTTP: OpenAI's, or Cohere's {"message"}


API_ROUTES = (
    ApiRoute("/v1/models", Route.models, "GET"),
    ApiRoute("/v1/embeddings", Route.embeddings),
    ApiRoute("/v1/rerank", Route.rerank),
    ApiRoute("/v1/classify", Route.classify),
    ApiRoute("/v1/tokenize", Route.tokenize),
    ApiRoute("/v2/rerank", Route.rerank, errors="cohere"),  # Cohere's v2 rerank (its newer SDKs, LiteLLM's cohere/)
    ApiRoute("/v2/embed", Route.cohere_embed, errors="cohere"),  # Cohere's embed (ClientV2.embed, LiteLLM's cohere/)
    # Infinity's own server's un-versioned routes (LiteLLM's infinity/ provider)
    ApiRoute("/rerank", Route.rerank, document_objects=False),
    ApiRoute("/embeddings", Route.embeddings),
)
BY_PATH = {api.path: api for api in API_ROUTES}


def error_shape(path: str) -> str:
    """The error shape of an HTTP path that ends in a route of the table (`/v2/local/openai/v2/embed`:
    Cohere's); OpenAI's for any other."""
    for api in sorted(API_ROUTES, key=lambda api: -len(api.path)):  # /v2/rerank before /rerank
        if path.rstrip("/").endswith(api.path):
            return api.errors
    return "openai"
