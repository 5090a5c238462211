"""Pydantic models for every request the worker accepts and every body it returns.

Requests ignore unknown fields (clients add their own) and validate the ones they know
with one-line messages that name the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _non_empty_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {json_type(value)}")
    if not value:
        raise ValueError("must not be empty")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, value: Any) -> str:
        return _non_empty_string(value)


class ModelsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EmbeddingRequest(_Request):
    """OpenAI `/v1/embeddings` body; also the standard `{"model", "input"}` job."""

    input: list[str] = Field(description="a string, or a non-empty list of strings")

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            return [_non_empty_string(value)]
        if not isinstance(value, list):
            raise ValueError(f"must be a string or a list of strings, got {json_type(value)}")
        if not value:
            raise ValueError("must not be an empty list")
        for position, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"item {position} must be a string, got {json_type(item)}")
            if not item:
                raise ValueError(f"item {position} must not be an empty string")
        return value


class RerankRequest(_Request):
    """Standard rerank job: `{"model", "query", "docs", "return_docs"}`."""

    query: str
    docs: list[str]
    return_docs: bool = False

    @field_validator("query", mode="before")
    @classmethod
    def _query(cls, value: Any) -> str:
        return _non_empty_string(value)

    @field_validator("docs", mode="before")
    @classmethod
    def _documents(cls, value: Any) -> list[str]:
        # A plain string must not reach the engine: Infinity would rank its characters.
        if not isinstance(value, list) or not value:
            raise ValueError(f"must be a non-empty list of strings, got {_describe_value(value)}")
        for position, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"item {position} must be a string, got {json_type(item)}")
        return value


def _describe_value(value: Any) -> str:
    return "an empty list" if value == [] else json_type(value)


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, tokens: int) -> Usage:
        return cls(prompt_tokens=tokens, total_tokens=tokens)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float]
    index: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class RerankResult(BaseModel):
    index: int  # position of the document in the request's `docs`
    relevance_score: float
    document: str | None = None  # only with `return_docs`; omitted otherwise


class RerankResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    model: str
    results: list[RerankResult]  # highest relevance first
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "infinity"
    created: int  # Unix time the engine was loaded
    stats: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
