"""The HTTP-free core: embed, rerank, classify and list models against the engine registry.

The RunPod handler and any local server call these methods; they take and return the
pydantic schemas and raise `WorkerError`s.
"""

from __future__ import annotations

import base64

import numpy as np

from embedding_worker.engine.registry import DeployedModel, EngineRegistry
from embedding_worker.errors import InvalidRequest, NonFiniteOutput
from embedding_worker.api.schemas import (
    Classification,
    ClassifyRequest,
    ClassifyResponse,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    LabelScore,
    ModelCard,
    ModelList,
    ModelStats,
    RerankRequest,
    RerankResponse,
    RerankResult,
    Usage,
)


class EmbeddingService:
    def __init__(self, registry: EngineRegistry) -> None:
        self.registry = registry

    def is_classifier(self, model_name: str) -> bool:
        """Whether a standard `{"model", "input"}` job to this model means classification."""
        capabilities = self.registry.resolve(model_name).capabilities
        return "classify" in capabilities and "embed" not in capabilities

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        model = self.registry.resolve(request.model)
        model.require("embed")
        if request.dimensions is not None and model.embedding_dimension is not None:
            _check_dimensions(request.dimensions, model.embedding_dimension, model.name)
        await self.registry.start()
        vectors, tokens = await self.registry.call(
            model, lambda: model.engine.embed(request.input), len(request.input)
        )
        matrix = np.asarray(vectors, dtype=np.float32)
        _require_finite(matrix, model)
        model.embedding_dimension = matrix.shape[1]
        if request.dimensions is not None:
            _check_dimensions(request.dimensions, matrix.shape[1], model.name)
            matrix = shorten(matrix, request.dimensions)
        encode = to_base64 if request.encoding_format == "base64" else np.ndarray.tolist
        return EmbeddingResponse(
            model=model.name,
            data=[Embedding(embedding=encode(vector), index=i) for i, vector in enumerate(matrix)],
            usage=Usage.of(tokens),
        )

    async def rerank(self, request: RerankRequest) -> RerankResponse:
        model = self.registry.resolve(request.model)
        model.require("rerank")
        await self.registry.start()
        ranked, tokens = await self.registry.call(
            model,
            lambda: model.engine.rerank(
                query=request.query, docs=request.docs, raw_scores=request.raw_scores
            ),
            len(request.docs),
        )
        _require_finite(np.fromiter((item.relevance_score for item in ranked), np.float32), model)
        # Infinity sorts by score and keeps each document's own position in `index`.
        results = [
            RerankResult(
                index=item.index,
                relevance_score=float(item.relevance_score),
                document=request.docs[item.index] if request.return_docs else None,
            )
            for item in ranked[: request.top_n]
        ]
        return RerankResponse(model=model.name, results=results, usage=Usage.of(tokens))

    async def classify(self, request: ClassifyRequest) -> ClassifyResponse:
        model = self.registry.resolve(request.model)
        model.require("classify")
        await self.registry.start()
        predictions, tokens = await self.registry.call(
            model, lambda: model.engine.classify(sentences=request.input), len(request.input)
        )
        _require_finite(np.array([p["score"] for labels in predictions for p in labels], np.float32), model)
        return ClassifyResponse(
            model=model.name,
            data=[
                Classification(
                    index=i,
                    labels=sorted(
                        (LabelScore(label=p["label"], score=float(p["score"])) for p in labels),
                        key=lambda label: label.score,
                        reverse=True,
                    ),
                )
                for i, labels in enumerate(predictions)
            ],
            usage=Usage.of(tokens),
        )

    def list_models(self) -> ModelList:
        return ModelList(data=[_card(model) for model in self.registry.models])


def _card(model: DeployedModel) -> ModelCard:
    return ModelCard(
        id=model.name,
        created=model.created,
        stats=ModelStats(
            capabilities=sorted(model.capabilities),
            backend=model.spec.backend.value,
            device=model.device,
            dtype=model.dtype,
            batch_size=model.spec.batch_size,
            embedding_dimension=model.embedding_dimension,
            max_input_tokens=model.max_input_tokens,
        ),
    )


def _require_finite(values: np.ndarray, model: DeployedModel) -> None:
    """Never NaN in JSON: a non-finite output fails its request, naming the likely cause."""
    if not np.isfinite(values).all():
        advice = "; its precision is too narrow for it: deploy it with DTYPES=float32" if model.dtype != "float32" else ""
        raise NonFiniteOutput(f"model {model.name!r} computed NaN or infinity for this input at {model.dtype}{advice}")


def _check_dimensions(dimensions: int, model_dimension: int, model_name: str) -> None:
    if dimensions > model_dimension:
        raise InvalidRequest(
            f"dimensions: must be between 1 and {model_dimension} for model {model_name!r}, "
            f"got {dimensions}"
        )


def shorten(matrix: np.ndarray, dimensions: int) -> np.ndarray:
    """Keep the first `dimensions` of each vector and scale it back to unit length."""
    prefix = matrix[:, :dimensions]
    norms = np.linalg.norm(prefix, axis=1, keepdims=True)
    return prefix / np.where(norms == 0, 1, norms)


def to_base64(vector: np.ndarray) -> str:
    """OpenAI's `encoding_format="base64"`: the little-endian float32 bytes."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
