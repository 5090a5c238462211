"""The HTTP-free core: embed, rerank, classify and list models against the engine registry.

The RunPod handler and any local server call these methods; they take and return the
pydantic schemas and raise `WorkerError`s.
"""

from __future__ import annotations

import asyncio
import uuid
from functools import partial

import numpy as np

from pydantic import BaseModel

from embedding_worker import compact, outputs, pricing
from embedding_worker.media import pdf
from embedding_worker.media.audio import Audio
from embedding_worker.media.fetch import MediaError, MediaLimits, RequestBytes, fetch_all, prepare_media
from embedding_worker.media.images import Images
from embedding_worker.api.schemas import (
    AudioInput,
    Classification,
    ClassifyRequest,
    CohereBilledUnits,
    CohereEmbedRequest,
    CohereEmbedResponse,
    CohereMeta,
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
    PdfInput,
    RerankRequest,
    RerankResponse,
    RerankResult,
    TokenizedText,
    TokenizeRequest,
    TokenizeResponse,
    Usage,
)
from embedding_worker.engine.deployed import DeployedModel
from embedding_worker.engine.kinds.hybrid.vectors import HybridText, HybridVectors
from embedding_worker.engine.model_kind import DENSE, MULTI_VECTOR, SPARSE, RerankQuery
from embedding_worker.engine.registry import EngineRegistry
from embedding_worker.engine.token_inputs import TokenIds
from embedding_worker.errors import InvalidRequest, NonFiniteOutput


class EmbeddingService:
    def __init__(self, registry: EngineRegistry, media_limits: MediaLimits | None = None,
                 max_output_values: int = 2**23, chunked_by_default: bool = False,
                 max_request_tokens: int = 2**23) -> None:
        self.registry = registry
        self.media_limits = media_limits or MediaLimits()
        self.max_output_values = max_output_values
        self.chunked_by_default = chunked_by_default  # LONG_INPUTS_CHUNKED
        self.pricer = pricing.RequestPricer(max_request_tokens)

    async def price(self, request: BaseModel) -> int:
        """The tokens `request` will be read as, before any work; past MAX_REQUEST_TOKENS it
        is refused in one line (`pricing.py`)."""
        model = self.registry.resolve(request.model)
        prefix, chunked = "", False
        if isinstance(request, EmbeddingRequest):
            prefix = model.prompts.prefix(model.name, request.input_type, request.prompt_name, request.prompt)
            chunked = self._chunked(request, model)
        elif isinstance(request, CohereEmbedRequest):
            prefix = _cohere_prefix(model, request)
        return await self.pricer.charge(pricing.reading(request, model, prefix, chunked), model)

    def _chunked(self, request: EmbeddingRequest, model: DeployedModel) -> bool:
        """Whether the request's long texts are embedded whole, in windows."""
        chunked = self.chunked_by_default if request.chunked is None else request.chunked
        return chunked and not request.has_media and model.max_input_tokens is not None

    def is_classifier(self, model_name: str) -> bool:
        """Whether a standard `{"model", "input"}` job to this model means classification."""
        capabilities = self.registry.resolve(model_name).capabilities
        return "classify" in capabilities and "embed" not in capabilities

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        model = self.registry.resolve(request.model)
        model.require("embed")
        types = request.embedding_types or [model.embedding_types[0]]
        _check_embedding_types(model, request, types)
        if model.traits.reads_pages:
            data, tokens = await self._pages(model, request, types)
            return EmbeddingResponse.model_construct(model=model.name, data=data, usage=Usage.of(tokens))
        if (first := next((i for i, item in enumerate(request.input) if isinstance(item, PdfInput)), None)) is not None:
            raise InvalidRequest(f"input: item {first} is a PDF; model {model.name!r} reads no pages: PDFs are embedded "
                                 "by page-reading models (ColPali, ColQwen2)")
        if request.dimensions is not None and model.embedding_dimension is not None:
            _check_dimensions(request.dimensions, model.embedding_dimension, model.name)
        if DENSE in types and model.embedding_dimension is not None:
            dimension = request.dimensions or model.embedding_dimension
            outputs.require_output_budget(len(request.input) * dimension, self.max_output_values, "vectors")
        prefix = model.prompts.prefix(model.name, request.input_type, request.prompt_name, request.prompt)
        if model.embedding_types != (DENSE,) and not request.has_media:
            found, tokens = await self._hybrid_outputs(model, request, prefix, types)
        else:
            if self._chunked(request, model):
                matrix, tokens = await self._whole_documents(model, request.input, prefix)
            else:
                matrix, tokens = await self._dense_matrix(model, request.input, prefix, request.truncate)
            found = {DENSE: await self._dense_output(model, matrix, request)}
        if request.embedding_types is None:
            data = [Embedding.model_construct(embedding=vector, index=i) for i, vector in enumerate(found[types[0]])]
        else:
            data = [Embedding.model_construct(embeddings={t: found[t][i] for t in types}, index=i)
                    for i in range(len(request.input))]
        return EmbeddingResponse.model_construct(model=model.name, data=data, usage=Usage.of(tokens))

    async def _dense_matrix(self, model: DeployedModel, items: list, prefix: str,
                            truncate: bool) -> tuple[np.ndarray, int]:
        """One dense vector a row for texts, images and audio alike, and the text tokens."""
        if any(not isinstance(item, str) for item in items):
            return await self._mixed_vectors(model, items, prefix, truncate)
        texts = [prefix + text for text in items] if prefix else items
        if not truncate:
            await self._refuse_long_inputs(model, texts)
        await self.registry.start()
        if model.embedding_types != (DENSE,):  # a hybrid model: its dense output alone
            found, tokens = await self._hybrid_vectors(model, [HybridText(t, types=frozenset({DENSE})) for t in texts])
            return np.stack([v.dense for v in found]), tokens
        return await self._vectors(model, texts)

    async def _whole_documents(self, model: DeployedModel, texts: list[str], prefix: str) -> tuple[np.ndarray, int]:
        """Texts past the model's limit embedded whole: each tokenized once and cut from its ids
        into windows of as many tokens as the model takes besides the prompt and its special
        tokens (no overlap: each token counts once); each window gets the prompt's ids and the
        special tokens and is embedded from its ids, never decoded (`engine/token_inputs.py`);
        the windows' vectors are averaged by each window's own text tokens, then normalised
        where the model normalises (as vLLM's chunked processing combines them); usage counts
        every window's tokens. A text that fits is embedded as it is."""
        if not model.takes_token_ids:
            raise InvalidRequest(f"chunked: model {model.name!r} cannot embed a text in windows of its token ids; "
                                 "send chunked: false")
        windows, owners, weights = await asyncio.to_thread(_windows, model, texts, prefix)
        await self.registry.start()
        vectors, tokens = await self._vectors(model, windows)
        combined = np.zeros((len(texts), vectors.shape[1]), dtype=np.float64)
        totals = np.zeros(len(texts))
        for owner, weight, vector in zip(owners, weights, vectors):
            combined[owner] += max(weight, 1) * vector
            totals[owner] += max(weight, 1)
        combined /= totals[:, None]
        if np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3):  # a normalising model
            combined /= np.linalg.norm(combined, axis=1, keepdims=True)
        return combined.astype(np.float32), tokens

    async def cohere_embed(self, request: CohereEmbedRequest) -> CohereEmbedResponse:
        """Cohere's embed: one forward pass, then each asked type from the same vectors."""
        model = self.registry.resolve(request.model)
        model.require("embed")
        if DENSE not in model.embedding_types:
            raise InvalidRequest(f"model: {model.name!r} gives {', '.join(model.embedding_types)} embeddings; "
                                 "Cohere's embed returns dense vectors")
        items = request.items
        if request.output_dimension is not None and model.embedding_dimension is not None:
            _check_dimensions(request.output_dimension, model.embedding_dimension, model.name, "output_dimension")
        prefix = _cohere_prefix(model, request)
        dimension = request.output_dimension or model.embedding_dimension
        if dimension is not None:
            outputs.require_output_budget(len(items) * dimension * len(request.embedding_types),
                                          self.max_output_values, "vectors")
        matrix, tokens = await self._dense_matrix(model, items, prefix, request.truncate != "NONE")
        if request.output_dimension is not None:
            _check_dimensions(request.output_dimension, matrix.shape[1], model.name, "output_dimension")
            matrix = outputs.shorten(matrix, request.output_dimension)
        embeddings = {}
        for kind in request.embedding_types:
            scale = await self._int8_scale(model, DENSE, request.output_dimension) if "int8" in kind else None
            embeddings[kind] = outputs.dense(matrix, kind, scale)
        return CohereEmbedResponse(id=str(uuid.uuid4()), embeddings=embeddings,
                                   texts=request.texts, meta=CohereMeta(billed_units=CohereBilledUnits(input_tokens=tokens)))

    async def _dense_output(self, model: DeployedModel, matrix: np.ndarray, request: EmbeddingRequest) -> list:
        """One dense vector per row of `matrix`, cut to `dimensions` and in `encoding_format`."""
        if request.dimensions is not None:
            _check_dimensions(request.dimensions, matrix.shape[1], model.name)
            matrix = outputs.shorten(matrix, request.dimensions)
        outputs.require_output_budget(matrix.size, self.max_output_values, "vectors")
        scale = None
        if "int8" in request.encoding_format:
            scale = await self._int8_scale(model, DENSE, request.dimensions)
        return outputs.dense(matrix, request.encoding_format, scale)

    async def _hybrid_outputs(self, model: DeployedModel, request: EmbeddingRequest, prefix: str,
                              types: list[str]) -> tuple[dict[str, list], int]:
        """Every asked type, and only those, from one pass of a sparse or multi-vector model."""
        texts = [prefix + text for text in request.input] if prefix else list(request.input)
        if not request.truncate or MULTI_VECTOR in types:
            counts = await self._token_counts(model, texts)
            if not request.truncate:
                _refuse_long(model, counts)
            if MULTI_VECTOR in types:
                rows = sum(min(count, model.max_input_tokens or count) for count in counts)
                outputs.require_output_budget(rows * (model.embedding_dimension or 1), self.max_output_values,
                                              "token vectors")
        query = request.input_type in ("query", "search_query")
        asked = frozenset(types)
        await self.registry.start()
        vectors, tokens = await self._hybrid_vectors(model, [HybridText(t, query, asked) for t in texts])
        found: dict[str, list] = {}
        if DENSE in types:
            found[DENSE] = await self._dense_output(model, np.stack([v.dense for v in vectors]), request)
        if SPARSE in types:
            top_k = request.max_active_dims or model.traits.sparse_top_k
            kept = [min(len(v.sparse[1]), top_k or len(v.sparse[1])) for v in vectors]
            outputs.require_output_budget(2 * sum(kept), self.max_output_values, "sparse weights")
            found[SPARSE] = [outputs.sparse(*v.sparse, top_k) for v in vectors]
        if MULTI_VECTOR in types:
            outputs.require_output_budget(sum(v.multi_vector.size for v in vectors), self.max_output_values,
                                          "token vectors")
            scale = await self._int8_scale(model, MULTI_VECTOR, None) if "int8" in request.encoding_format else None
            matrices = [v.multi_vector for v in vectors]
            if request.pool_factor is not None and not query:
                matrices = await asyncio.to_thread(_pooled, matrices, request.pool_factor)
            found[MULTI_VECTOR] = [outputs.multi_vector(m, request.encoding_format, scale) for m in matrices]
        return found, tokens

    async def _pages(self, model: DeployedModel, request: EmbeddingRequest,
                     types: list[str]) -> tuple[list[Embedding], int]:
        """A page-reading model's token vectors: a text is a query, an image a page, a PDF
        one entry a page (with its `page`); `pool_factor` merges the pages' vectors; usage
        counts every token the model read, the pages' included."""
        if request.encoding_format not in PAGE_FORMATS:
            raise InvalidRequest(f"encoding_format: model {model.name!r} gives token vectors as "
                                 f"{', '.join(PAGE_FORMATS)}; got {request.encoding_format}")
        for i, item in enumerate(request.input):
            if not isinstance(item, (str, ImageInput, PdfInput)):
                raise InvalidRequest(f"input: item {i} is audio; model {model.name!r} reads texts, images and PDFs")
        prefix = model.prompts.prefix(model.name, request.input_type, request.prompt_name, request.prompt)
        queries = {i: prefix + item for i, item in enumerate(request.input) if isinstance(item, str)}
        pictures = {i: item.image for i, item in enumerate(request.input) if isinstance(item, ImageInput)}
        pdfs = {i: item for i, item in enumerate(request.input) if isinstance(item, PdfInput)}
        page_values = (model.page_tokens or 1) * (model.embedding_dimension or 1)
        outputs.require_output_budget(len(pictures) * page_values, self.max_output_values, "token vectors")
        tally = RequestBytes(self.media_limits.max_request_bytes)
        prepared = await prepare_media([(Images(model.image_side), pictures)], self.media_limits, tally)
        rendered = await self._rendered_pages(model, pdfs, tally, len(pictures))
        await self.registry.start()
        found: dict[tuple[int, int | None], np.ndarray] = {}
        if queries:
            vectors, _ = await self.registry.call(model, lambda: model.engine.embed(list(queries.values())),
                                                  list(queries.values()))
            found.update(((i, None), v) for i, v in zip(queries, vectors))
        found.update(((i, None), v) for i, v in (await self._decoded_picture_vectors(model, prepared)).items())
        for start in range(0, len(rendered), model.spec.batch_size):
            part = rendered[start:start + model.spec.batch_size]
            found.update(zip((key for key, _ in part), await self._picture_vectors(model, [p for _, p in part])))
        tokens = sum(len(v) for v in found.values())
        for matrix in found.values():
            _require_finite(matrix, model)
        documents = [key for key in found if key[0] not in queries]
        if request.pool_factor is not None and documents:
            pooled = await asyncio.to_thread(_pooled, [found[key] for key in documents], request.pool_factor)
            found.update(zip(documents, pooled))
        outputs.require_output_budget(sum(v.size for v in found.values()), self.max_output_values, "token vectors")
        pages_of: dict[int, list[tuple[int, int]]] = {i: [] for i in pdfs}
        for key, _ in rendered:
            pages_of[key[0]].append(key)
        data = []
        for index, page in (key for i in range(len(request.input)) for key in pages_of.get(i, [(i, None)])):
            vector = outputs.multi_vector(found[(index, page)], request.encoding_format)
            data.append(Embedding.model_construct(index=index, page=page, **(
                {"embedding": vector} if request.embedding_types is None else {"embeddings": {types[0]: vector}})))
        return data, tokens

    async def _rendered_pages(self, model: DeployedModel, pdfs: dict[int, PdfInput], tally: RequestBytes,
                              pictures: int) -> list[tuple[tuple[int, int], object]]:
        """((input index, page), picture) for every asked page of every PDF, in order; each
        PDF's page count, pages and page sizes are checked before it is rendered, against the
        pages the request has left (MAX_PDF_PAGES, and MAX_OUTPUT_VALUES at the model's most
        tokens a page)."""
        if not pdfs:
            return []
        data = await fetch_all({i: item.pdf for i, item in pdfs.items()}, self.media_limits, "pdf", tally)
        page_values = (model.page_tokens or 1) * (model.embedding_dimension or 1)
        left = min(self.media_limits.max_pdf_pages, self.max_output_values // page_values - pictures)
        rendered: list[tuple[tuple[int, int], object]] = []
        for i, item in pdfs.items():
            try:
                pages = await pdf.render(data.pop(i), item.pages, model.page_pixels or 448 * 448, max(left, 0))
            except MediaError as exc:
                raise InvalidRequest(f"input: item {i}: {exc}") from None
            left -= len(pages)
            rendered += [((i, number), picture) for number, picture in pages]
        return rendered

    async def _picture_vectors(self, model: DeployedModel, pictures: list) -> list[np.ndarray]:
        vectors, _ = await self.registry.call(model, partial(model.engine.image_embed, images=pictures), pictures)
        return list(vectors)

    async def _decoded_picture_vectors(self, model: DeployedModel, prepared: list) -> dict[int, np.ndarray]:
        """Each prepared picture's vectors by input index, decoded and embedded a batch at a time."""
        found: dict[int, np.ndarray] = {}
        for batch in prepared:
            async for decoded in batch.batches(model.spec.batch_size):
                found.update(zip(decoded, await self._picture_vectors(model, list(decoded.values()))))
        return found

    async def _hybrid_vectors(self, model: DeployedModel, texts: list[str]) -> tuple[list[HybridVectors], int]:
        found, tokens = await self.registry.call(model, lambda: model.engine.embed(texts), texts)
        for vectors in found:
            for values in (vectors.dense, vectors.multi_vector, None if vectors.sparse is None else vectors.sparse[1]):
                if values is not None:
                    _require_finite(values, model)
        return found, tokens

    async def _mixed_vectors(self, model: DeployedModel, items: list, prefix: str,
                             truncate: bool) -> tuple[np.ndarray, int]:
        """Texts through the model's text tower, images or audio through its other tower (one
        space for CLIP- and CLAP-style models), back in input order; usage counts the text
        tokens. Every picture's and clip's header is read and the request's budgets checked
        before anything is embedded; then they are decoded a batch at a time, as the engine
        takes them."""
        media: dict[str, dict[int, str]] = {"image": {}, "audio": {}}
        for i, item in enumerate(items):
            if isinstance(item, ImageInput):
                media["image"][i] = item.image
            elif isinstance(item, AudioInput):
                media["audio"][i] = item.audio
        for kind, found in media.items():
            if found and f"{kind}_embed" not in model.capabilities:
                can_do = ", ".join(sorted(model.capabilities))
                other = "images" if "image_embed" in model.capabilities else "audio" \
                    if "audio_embed" in model.capabilities else None
                takes = f"text and {other}" if other else "text"
                raise InvalidRequest(f"input: item {next(iter(found))} is {'an image' if kind == 'image' else 'audio'}; "
                                     f"model {model.name!r} takes {takes} only (it supports: {can_do})")
        texts = {i: prefix + item for i, item in enumerate(items) if isinstance(item, str)}
        if texts and not truncate:
            await self._refuse_long_inputs(model, list(texts.values()))
        prepared = await prepare_media([(Images(model.image_side), media["image"]),
                                        (Audio(model.sampling_rate or 48_000), media["audio"])], self.media_limits)
        await self.registry.start()
        rows: dict[int, np.ndarray] = {}
        tokens = 0
        if texts:
            text_vectors, tokens = await self._vectors(model, list(texts.values()))
            rows.update(zip(texts, text_vectors))
        embed = {"image": lambda batch: model.engine.image_embed(images=batch),
                 "audio": lambda batch: model.engine.audio_embed(audios=batch)}
        for pictures_or_clips in prepared:
            async for decoded in pictures_or_clips.batches(model.spec.batch_size):
                batch, kind = list(decoded.values()), pictures_or_clips.kind.name
                vectors, _ = await self.registry.call(model, partial(embed[kind], batch), batch)
                matrix = np.asarray(vectors, dtype=np.float32)
                _require_finite(matrix, model)
                rows.update(zip(decoded, matrix))
        matrix = np.stack([rows[i] for i in range(len(items))])
        model.embedding_dimension = matrix.shape[1]
        return matrix, tokens

    async def _vectors(self, model: DeployedModel, texts: list[str]) -> tuple[np.ndarray, int]:
        vectors, tokens = await self.registry.call(model, lambda: model.engine.embed(texts), texts)
        matrix = np.asarray(vectors, dtype=np.float32)
        _require_finite(matrix, model)
        model.embedding_dimension = matrix.shape[1]
        return matrix, tokens

    async def _token_counts(self, model: DeployedModel, texts: list[str]) -> list[int]:
        return [len(ids) for ids in await asyncio.to_thread(model.token_ids, texts)]

    async def _refuse_long_inputs(self, model: DeployedModel, texts: list[str]) -> None:
        """`truncate: false`: an input past the model's limit fails the request, as OpenAI's does."""
        if model.max_input_tokens is not None:
            _refuse_long(model, await self._token_counts(model, texts))

    async def _int8_scale(self, model: DeployedModel, kind: str, dimensions: int | None) -> float:
        """The model's fixed int8 scale for one embedding type at `dimensions`, measured once
        (see `compact`): on dense vectors, or on the token vectors of multi-vector ones."""
        key = (kind, dimensions or 0)
        if key not in model.int8_scales:
            if model.embedding_types == (DENSE,):
                calibration, _ = await self._vectors(model, compact.CALIBRATION_TEXTS)
            else:
                texts = [HybridText(text, types=frozenset({kind})) for text in compact.CALIBRATION_TEXTS]
                found, _ = await self._hybrid_vectors(model, texts)
                calibration = (np.stack([v.dense for v in found]) if kind == DENSE
                               else np.concatenate([v.multi_vector for v in found]))
            if dimensions is not None:
                calibration = outputs.shorten(calibration, dimensions)
            model.int8_scales[key] = compact.int8_scale(calibration)
        return model.int8_scales[key]

    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        model = self.registry.resolve(request.model)
        ids = await asyncio.to_thread(self._token_ids_within_budget, model, request.input)
        return TokenizeResponse(
            model=model.name,
            data=[TokenizedText(index=i, tokens=tokens, count=len(tokens)) for i, tokens in enumerate(ids)],
            max_input_tokens=model.max_input_tokens,
        )

    def _token_ids_within_budget(self, model: DeployedModel, texts: list[str]) -> list[list[int]]:
        """The texts' ids, a slice at a time, refused once they pass MAX_OUTPUT_VALUES (blocking)."""
        ids: list[list[int]] = []
        count = 0
        for _, part in pricing.slices(texts):
            found = model.token_ids(part)
            count += sum(map(len, found))
            outputs.require_output_budget(count, self.max_output_values, "token ids")
            ids += found
        return ids

    async def rerank(self, request: RerankRequest, document_objects: bool = False) -> RerankResponse:
        """`document_objects`: return documents as `{"text"}` (the /v1/rerank route's shape)."""
        model = self.registry.resolve(request.model)
        model.require("rerank")
        instruction = request.instruction or model.prompts.prompts.get("instruction")
        if instruction is not None and not model.traits.takes_instructions:
            what = "scores by its token vectors" if model.traits.scores_token_vectors is not None else \
                "is a cross-encoder"
            raise InvalidRequest(f"instruction: model {model.name!r} {what} and takes no instruction; "
                                 "LLM rerankers (Qwen3-Reranker, mxbai-rerank-v2) do")
        pictures = [i for i, document in enumerate(request.docs) if isinstance(document, ImageInput)]
        if model.traits.reads_pages and len(pictures) < len(request.docs):
            first = next(i for i, document in enumerate(request.docs) if not isinstance(document, ImageInput))
            raise InvalidRequest(f"documents: item {first} is text; model {model.name!r} scores pictures of pages: "
                                 'send each document as {"image": ...}')
        if pictures and not model.traits.reads_pages:
            raise InvalidRequest(f"documents: item {pictures[0]} is an image; model {model.name!r} scores text "
                                 "documents (page-reading models such as ColPali score images)")
        await self.registry.start()
        if model.traits.reads_pages:
            return await self._rerank_pages(model, request, document_objects)
        if model.traits.scores_token_vectors is not None:
            return await self._rerank_by_token_vectors(model, request, document_objects)
        query = RerankQuery(request.query, instruction)
        ranked, tokens = await self.registry.call(
            model,
            lambda: model.engine.rerank(query=query, docs=request.docs, raw_scores=request.raw_scores),
            [(query, document) for document in request.docs],
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
        return RerankResponse.model_construct(model=model.name, results=results, usage=Usage.of(tokens))

    async def _rerank_by_token_vectors(self, model: DeployedModel, request: RerankRequest,
                                       document_objects: bool) -> RerankResponse:
        """A rerank from the model's own token vectors (a ColBERT's): the query's and the
        documents' from one engine call, scored as the model's kind declares (MaxSim)."""
        query = model.prompts.prefix(model.name, "query", None, None) + request.query
        document_prefix = model.prompts.prefix(model.name, "document", None, None)
        texts = [HybridText(query, query=True), *(document_prefix + doc for doc in request.docs)]
        found, tokens = await self._hybrid_vectors(model, texts)
        scores = model.traits.scores_token_vectors(found[0].multi_vector, [v.multi_vector for v in found[1:]])
        return _ranked(model, request, scores, tokens, document_objects)

    async def _rerank_pages(self, model: DeployedModel, request: RerankRequest,
                            document_objects: bool) -> RerankResponse:
        """A page-reading model's rerank: the query's and each page's token vectors, scored
        by MaxSim (the model processor's `score_retrieval`)."""
        references = {i: document.image for i, document in enumerate(request.docs)}
        prepared = await prepare_media([(Images(model.image_side), references)], self.media_limits)
        query, _ = await self.registry.call(model, lambda: model.engine.embed([request.query]), [request.query])
        pages = await self._decoded_picture_vectors(model, prepared)
        documents = [pages[i] for i in range(len(request.docs))]
        scores = model.traits.scores_token_vectors(query[0], documents)
        _require_finite(scores, model)
        return _ranked(model, request, scores, len(query[0]) + sum(len(d) for d in documents), document_objects)

    async def classify(self, request: ClassifyRequest) -> ClassifyResponse:
        model = self.registry.resolve(request.model)
        model.require("classify")
        await self.registry.start()
        predictions, tokens = await self.registry.call(
            model, lambda: model.engine.classify(sentences=request.input), request.input
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


def _windows(model: DeployedModel, texts: list[str], prefix: str) -> tuple[list[str], list[int], list[int]]:
    """Each text, or its windows of token ids; which text each came from; its own text tokens
    (blocking: tokenizes, a slice of texts at a time)."""
    before, after = model.special_tokens
    marked = model.token_ids([prefix])[0]
    head, prompt, tail = marked[:before], marked[before:len(marked) - after], marked[len(marked) - after:]
    room = model.max_input_tokens - len(marked)
    if room < 1:
        raise InvalidRequest(f"prompt: leaves no room in model {model.name!r}'s {model.max_input_tokens} tokens for the "
                             "text; send a shorter prompt")
    windows: list[str] = []
    owners: list[int] = []
    weights: list[int] = []
    for first, part in pricing.slices(texts):
        for owner, (text, ids) in enumerate(zip(part, model.token_ids(part)), first):
            body = ids[before:len(ids) - after]
            if len(body) <= room:
                windows.append(prefix + text)
                owners.append(owner)
                weights.append(len(body))
                continue
            for start in range(0, len(body), room):
                chunk = body[start:start + room]
                windows.append(TokenIds([*head, *prompt, *chunk, *tail]))
                owners.append(owner)
                weights.append(len(chunk))
    return windows, owners, weights


def _cohere_prefix(model: DeployedModel, request: CohereEmbedRequest) -> str:
    """Cohere's `input_type` as the model's prompt: a query or document type, or a prompt by its name."""
    kind = request.input_type if request.input_type in COHERE_INPUT_TYPES else None
    prompt_name = request.input_type if request.input_type in model.prompts.names else None
    return model.prompts.prefix(model.name, kind, prompt_name if kind is None else None, None)


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
            modalities=["text", *(kind for kind in ("image", "audio") if f"{kind}_embed" in model.capabilities),
                        *(["pdf"] if model.traits.reads_pages else [])],
            embedding_types=list(model.embedding_types) if "embed" in model.capabilities else None,
        ),
    )


def _pooled(matrices: list[np.ndarray], pool_factor: int) -> list[np.ndarray]:
    from embedding_worker.engine.kinds.visual_documents.pooling import pool

    return [pool(matrix, pool_factor) for matrix in matrices]


def _ranked(model: DeployedModel, request: RerankRequest, scores: np.ndarray, tokens: int,
            document_objects: bool) -> RerankResponse:
    """A rerank answer from one score per document, best first (ties in document order)."""
    order = np.argsort(-scores, kind="stable")[: request.top_n]
    results = [RerankResult(index=int(i), relevance_score=float(scores[i]),
                            document=_document(request.docs[i], document_objects) if request.return_docs else None)
               for i in order]
    return RerankResponse.model_construct(model=model.name, results=results, usage=Usage.of(tokens))


def _document(document: str | ImageInput, as_object: bool) -> DocumentText | ImageInput | str:
    """A document as the answer returns it: a text as `{"text"}` or as it is; a picture as sent."""
    if isinstance(document, ImageInput):
        return document
    return DocumentText(text=document) if as_object else document


def _require_finite(values: np.ndarray, model: DeployedModel) -> None:
    """Never NaN in JSON: a non-finite output fails its request, naming the likely cause."""
    if not np.isfinite(values).all():
        advice = "; its precision is too narrow for it: deploy it with DTYPES=float32" if model.dtype != "float32" else ""
        raise NonFiniteOutput(f"model {model.name!r} computed NaN or infinity for this input at {model.dtype}{advice}")


def _check_embedding_types(model: DeployedModel, request: EmbeddingRequest, types: list[str]) -> None:
    """Each asked type, format and option must fit the model and each other: one line if not."""
    gives = ", ".join(model.embedding_types)
    for kind in types:
        if kind not in model.embedding_types:
            raise InvalidRequest(f"embedding_types: model {model.name!r} cannot give {kind} embeddings; "
                                 f"it gives: {gives}")
    if request.encoding_format != "float" and types == [SPARSE]:
        raise InvalidRequest(f"encoding_format: {request.encoding_format} applies to dense and multi_vector "
                             "embeddings; sparse ones come as float weights: send encoding_format float")
    if request.dimensions is not None and DENSE not in types:
        raise InvalidRequest(f"dimensions: applies to dense embeddings only; this request asks for {', '.join(types)} "
                             f"(model {model.name!r} gives: {gives})")
    if request.encoding_format == "base64_float16" and types != [MULTI_VECTOR]:
        raise InvalidRequest(f"encoding_format: base64_float16 applies to multi_vector embeddings only; this request "
                             f"asks for {', '.join(types)}: send base64 (float32)")
    if request.pool_factor is not None and MULTI_VECTOR not in types:
        raise InvalidRequest(f"pool_factor: applies to multi_vector embeddings only; this request asks for "
                             f"{', '.join(types)} (model {model.name!r} gives: {gives})")
    if request.max_active_dims is not None and SPARSE not in types:
        raise InvalidRequest(f"max_active_dims: applies to sparse embeddings only; this request asks for "
                             f"{', '.join(types)} (model {model.name!r} gives: {gives})")


def _refuse_long(model: DeployedModel, counts: list[int]) -> None:
    for position, count in enumerate(counts):
        if model.max_input_tokens is not None and count > model.max_input_tokens:
            raise InvalidRequest(
                f"input: item {position} has {count} tokens; model {model.name!r} takes at most "
                f"{model.max_input_tokens} (max_input_tokens); shorten it, or send truncate: true"
            )


def _check_dimensions(dimensions: int, model_dimension: int, model_name: str, field: str = "dimensions") -> None:
    if dimensions > model_dimension:
        raise InvalidRequest(
            f"{field}: must be between 1 and {model_dimension} for model {model_name!r}, "
            f"got {dimensions}"
        )


PAGE_FORMATS = ("float", "base64", "base64_float16")  # what a page-reading model's vectors come as

# Cohere's input types that the model's prompts know as input types (`prompts.prefix`); the
# others are looked up by their own name among the model's prompts
COHERE_INPUT_TYPES = ("search_query", "search_document")
