"""The HTTP-free core: embed, rerank, classify and list models against the engine registry.

The RunPod handler and any local server call these methods; they take and return the
pydantic schemas and raise `WorkerError`s.
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from embedding_worker import compact
from embedding_worker.images import ImageLimits, load_images
from embedding_worker.api.schemas import (
    Classification,
    ClassifyRequest,
    ClassifyResponse,
    DocumentText,
    Embedding,
    EmbeddingRequest,
    ImageInput,
    EmbeddingResponse,
    LabelScore,
    ModelCard,
    ModelList,
    ModelStats,
    RerankRequest,
    RerankResponse,
    RerankResult,
    TokenizedText,
    TokenizeRequest,
    TokenizeResponse,
    Usage,
)
from embedding_worker.engine.deployed import DeployedModel
from embedding_worker.engine.registry import EngineRegistry
from embedding_worker.errors import InvalidRequest, NonFiniteOutput


class EmbeddingService:
    def __init__(self, registry: EngineRegistry, image_limits: ImageLimits | None = None) -> None:
        self.registry = registry
        self.image_limits = image_limits or ImageLimits()

    def is_classifier(self, model_name: str) -> bool:
        """Whether a standard `{"model", "input"}` job to this model means classification."""
        capabilities = self.registry.resolve(model_name).capabilities
        return "classify" in capabilities and "embed" not in capabilities

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        model = self.registry.resolve(request.model)
        model.require("embed")
        if request.dimensions is not None and model.embedding_dimension is not None:
            _check_dimensions(request.dimensions, model.embedding_dimension, model.name)
        prefix = model.prompts.prefix(model.name, request.input_type, request.prompt_name, request.prompt)
        if request.has_images:
            matrix, tokens = await self._mixed_vectors(model, request.input, prefix, request.truncate)
        else:
            texts = [prefix + text for text in request.input] if prefix else request.input
            if not request.truncate:
                await self._refuse_long_inputs(model, texts)
            await self.registry.start()
            matrix, tokens = await self._vectors(model, texts)
        if request.dimensions is not None:
            _check_dimensions(request.dimensions, matrix.shape[1], model.name)
            matrix = shorten(matrix, request.dimensions)
        if request.encoding_format in compact.INTEGER_FORMATS:
            scale = await self._int8_scale(model, request.dimensions) if "int8" in request.encoding_format else None
            embeddings = compact.quantize(matrix, request.encoding_format, scale).tolist()
        elif request.encoding_format == "base64":
            embeddings = [to_base64(vector) for vector in matrix]
        else:
            embeddings = matrix.tolist()
        return EmbeddingResponse(
            model=model.name,
            data=[Embedding.model_construct(embedding=vector, index=i) for i, vector in enumerate(embeddings)],
            usage=Usage.of(tokens),
        )

    async def _mixed_vectors(self, model: DeployedModel, items: list, prefix: str,
                             truncate: bool) -> tuple[np.ndarray, int]:
        """Texts through the model's text tower, images through its image tower (one space for
        CLIP-style models), back in input order; usage counts the text tokens."""
        images = {i: item.image for i, item in enumerate(items) if isinstance(item, ImageInput)}
        if "image_embed" not in model.capabilities:
            can_do = ", ".join(sorted(model.capabilities))
            raise InvalidRequest(f"input: item {next(iter(images))} is an image; model {model.name!r} takes text "
                                 f"only (it supports: {can_do})")
        texts = {i: prefix + item for i, item in enumerate(items) if not isinstance(item, ImageInput)}
        if texts and not truncate:
            await self._refuse_long_inputs(model, list(texts.values()))
        pictures = await load_images(images, self.image_limits)
        await self.registry.start()
        rows: dict[int, np.ndarray] = {}
        tokens = 0
        if texts:
            text_vectors, tokens = await self._vectors(model, list(texts.values()))
            rows.update(zip(texts, text_vectors))
        picture_list = list(pictures.values())
        vectors, _ = await self.registry.call(model, lambda: model.engine.image_embed(images=picture_list),
                                              len(picture_list))
        image_vectors = np.asarray(vectors, dtype=np.float32)
        _require_finite(image_vectors, model)
        rows.update(zip(pictures, image_vectors))
        matrix = np.stack([rows[i] for i in range(len(items))])
        model.embedding_dimension = matrix.shape[1]
        return matrix, tokens

    async def _vectors(self, model: DeployedModel, texts: list[str]) -> tuple[np.ndarray, int]:
        vectors, tokens = await self.registry.call(model, lambda: model.engine.embed(texts), len(texts))
        matrix = np.asarray(vectors, dtype=np.float32)
        _require_finite(matrix, model)
        model.embedding_dimension = matrix.shape[1]
        return matrix, tokens

    async def _refuse_long_inputs(self, model: DeployedModel, texts: list[str]) -> None:
        """`truncate: false`: an input past the model's limit fails the request, as OpenAI's does."""
        if model.max_input_tokens is None:
            return
        counts = [len(ids) for ids in await asyncio.to_thread(model.token_ids, texts)]
        for position, count in enumerate(counts):
            if count > model.max_input_tokens:
                raise InvalidRequest(
                    f"input: item {position} has {count} tokens; model {model.name!r} takes at most "
                    f"{model.max_input_tokens} (max_input_tokens); shorten it, or send truncate: true"
                )

    async def _int8_scale(self, model: DeployedModel, dimensions: int | None) -> float:
        """The model's fixed int8 scale at `dimensions`, measured once (see `compact`)."""
        key = dimensions or 0
        if key not in model.int8_scales:
            calibration, _ = await self._vectors(model, compact.CALIBRATION_TEXTS)
            if dimensions is not None:
                calibration = shorten(calibration, dimensions)
            model.int8_scales[key] = compact.int8_scale(calibration)
        return model.int8_scales[key]

    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        model = self.registry.resolve(request.model)
        ids = await asyncio.to_thread(model.token_ids, request.input)
        return TokenizeResponse(
            model=model.name,
            data=[TokenizedText(index=i, tokens=tokens, count=len(tokens)) for i, tokens in enumerate(ids)],
            max_input_tokens=model.max_input_tokens,
        )

    async def rerank(self, request: RerankRequest, document_objects: bool = False) -> RerankResponse:
        """`document_objects`: return documents as `{"text"}` (the /v1/rerank route's shape)."""
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
                document=_document(request.docs[item.index], document_objects) if request.return_docs else None,
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
            prompts=model.prompts.names if "embed" in model.capabilities else None,
            modalities=(["text", "image"] if "image_embed" in model.capabilities else ["text"]),
        ),
    )


def _document(text: str, as_object: bool) -> DocumentText | str:
    return DocumentText(text=text) if as_object else text


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
