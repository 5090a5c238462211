"""The HTTP-free core: embed, rerank and list models against the engine registry.

The RunPod handler and any local server call these methods; they take and return the
pydantic schemas and raise `WorkerError`s.
"""

from __future__ import annotations

from embedding_worker.engines import EngineRegistry
from embedding_worker.schemas import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
    RerankRequest,
    RerankResponse,
    RerankResult,
    Usage,
)


class EmbeddingService:
    def __init__(self, registry: EngineRegistry) -> None:
        self.registry = registry

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        model = self.registry.resolve(request.model)
        model.require("embed")
        await self.registry.start()
        vectors, tokens = await self.registry.call(model, model.engine.embed(request.input))
        return EmbeddingResponse(
            model=model.name,
            data=[Embedding(embedding=vector.tolist(), index=i) for i, vector in enumerate(vectors)],
            usage=Usage.of(tokens),
        )

    async def rerank(self, request: RerankRequest) -> RerankResponse:
        model = self.registry.resolve(request.model)
        model.require("rerank")
        await self.registry.start()
        ranked, tokens = await self.registry.call(
            model, model.engine.rerank(query=request.query, docs=request.docs)
        )
        # Infinity sorts by score and keeps each document's own position in `index`.
        results = [
            RerankResult(
                index=item.index,
                relevance_score=float(item.relevance_score),
                document=request.docs[item.index] if request.return_docs else None,
            )
            for item in ranked
        ]
        return RerankResponse(model=model.name, results=results, usage=Usage.of(tokens))

    def list_models(self) -> ModelList:
        return ModelList(
            data=[
                ModelCard(
                    id=model.name,
                    created=model.created,
                    stats={
                        "capabilities": sorted(model.capabilities),
                        "backend": model.spec.backend.value,
                        "dtype": model.spec.dtype,
                        "batch_size": model.spec.batch_size,
                    },
                )
                for model in self.registry.models
            ]
        )
