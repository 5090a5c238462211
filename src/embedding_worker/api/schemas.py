"""Pydantic models for every request the worker accepts and every body it returns.

Requests ignore unknown fields (clients add their own) and validate the ones they know
with one-line messages that name the field. Size limits come in through the validation
context (`{"limits": RequestLimits}`), so the same schemas serve any configuration.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)


class RequestLimits(BaseModel):
    """Per-request bounds (environment variables named in each message)."""

    max_embed_inputs: int = 2048  # MAX_EMBED_INPUTS: texts per embeddings/classify request
    max_rerank_docs: int = 1000  # MAX_RERANK_DOCS: documents per rerank request
    max_input_chars: int = 100_000  # MAX_INPUT_CHARS: characters per text, query or document
    max_media: int = 64  # MAX_MEDIA_PER_REQUEST: images and audio clips per embeddings request


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


def _limits(info: ValidationInfo) -> RequestLimits:
    return (info.context or {}).get("limits") or RequestLimits()


def _bounded_text(value: str, limits: RequestLimits, what: str = "") -> str:
    if len(value) > limits.max_input_chars:
        raise ValueError(
            f"{what}has {len(value)} characters; the limit is {limits.max_input_chars} (MAX_INPUT_CHARS)"
        )
    return value


def _non_empty_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {json_type(value)}")
    if not value:
        raise ValueError("must not be empty")
    return value


def _is_token_ids(value: list) -> bool:
    def ints(items: Any) -> bool:
        return isinstance(items, list) and bool(items) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in items
        )

    return ints(value) or all(ints(item) for item in value)


def _texts(value: Any, limits: RequestLimits) -> list[str]:
    """`input`: a non-empty string, or a non-empty list of non-empty strings, within limits."""
    if isinstance(value, str):
        return [_bounded_text(_non_empty_string(value), limits)]
    if not isinstance(value, list):
        raise ValueError(f"must be a string or a list of strings, got {json_type(value)}")
    if not value:
        raise ValueError("must not be an empty list")
    if _is_token_ids(value):
        raise ValueError("token ids are not supported; send text (a string or a list of strings)")
    if len(value) > limits.max_embed_inputs:
        raise ValueError(
            f"has {len(value)} items; the limit is {limits.max_embed_inputs} (MAX_EMBED_INPUTS)"
        )
    for position, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"item {position} must be a string, got {json_type(item)}")
        if not item:
            raise ValueError(f"item {position} must not be an empty string")
        _bounded_text(item, limits, f"item {position} ")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(description="name of a deployed model")

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, value: Any) -> str:
        return _non_empty_string(value)


class _TextsRequest(_Request):
    input: list[str] = Field(description="a string, or a non-empty list of strings")

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any, info: ValidationInfo) -> list[str]:
        return _texts(value, _limits(info))


class ModelsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ImageInput(BaseModel):
    """An image to embed: an http(s) URL, a `data:image/...;base64,...` URI, or bare base64."""

    model_config = ConfigDict(frozen=True)

    image: str


class AudioInput(BaseModel):
    """An audio clip to embed: an http(s) URL, a `data:audio/...;base64,...` URI, or bare base64."""

    model_config = ConfigDict(frozen=True)

    audio: str


class PdfInput(BaseModel):
    """A PDF whose pages to embed (a page-reading model's): an http(s) URL, a
    `data:application/pdf;base64,...` URI, or bare base64; `pages`: which (0-based, in the
    order given), every page where absent."""

    model_config = ConfigDict(frozen=True)

    pdf: str
    pages: list[int] | None = None


MEDIA = {"image": ImageInput, "audio": AudioInput, "pdf": PdfInput}
MAX_PAGES_LISTED = 10_000  # numbers one `pages` may hold (MAX_PDF_PAGES bounds what is rendered)


def _pdf_item(item: dict, position: int) -> PdfInput:
    """`{"pdf": ..., "pages": [...]}`: the reference, and the pages as non-negative integers."""
    pages = item.get("pages")
    if pages is not None:
        if not isinstance(pages, list) or not pages:
            raise ValueError(f"item {position}: pages must be a non-empty list of page numbers (from 0), "
                             f"got {json_type(pages)}")
        if len(pages) > MAX_PAGES_LISTED:
            raise ValueError(f"item {position}: pages lists {len(pages):,} numbers; at most {MAX_PAGES_LISTED:,}")
        for page in pages:
            if not isinstance(page, int) or isinstance(page, bool) or page < 0:
                shown = page if isinstance(page, int) and not isinstance(page, bool) else json_type(page)
                raise ValueError(f"item {position}: pages must hold page numbers from 0, got {shown}")
    return PdfInput.model_construct(pdf=item["pdf"], pages=pages)


def _embedding_items(value: Any, limits: RequestLimits, modality: str) -> list[str | ImageInput | AudioInput | PdfInput]:
    """`input` of an embeddings request: texts, `{"text"}`, `{"image"}`, `{"audio"}` and
    `{"pdf"[, "pages"]}` objects, mixed; with `modality: "image"`, `"audio"` or `"pdf"`,
    plain strings are references of that kind."""
    if modality == "text" and not isinstance(value, dict) and not (
            isinstance(value, list) and any(isinstance(item, dict) for item in value)):
        return _texts(value, limits)  # text only: the common case
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"must be a string, an object or a list of them, got {json_type(value)}")
    if not value:
        raise ValueError("must not be an empty list")
    if len(value) > limits.max_embed_inputs:
        raise ValueError(f"has {len(value)} items; the limit is {limits.max_embed_inputs} (MAX_EMBED_INPUTS)")
    items: list[str | ImageInput | AudioInput | PdfInput] = []
    for position, item in enumerate(value):
        if isinstance(item, dict) and set(item) in ({"text"}, {"image"}, {"audio"}, {"pdf"}, {"pdf", "pages"}):
            kind, content = ("pdf", item["pdf"]) if "pdf" in item else next(iter(item.items()))
        elif isinstance(item, str):
            kind, content = modality, item
        else:
            raise ValueError(f'item {position} must be a string, {{"text": ...}}, {{"image": ...}}, '
                             f'{{"audio": ...}} or {{"pdf": ...}}, got {json_type(item)}')
        if not isinstance(content, str) or not content:
            raise ValueError(f"item {position}: {kind} must be a non-empty string")
        if kind == "pdf":
            items.append(_pdf_item(item if isinstance(item, dict) else {"pdf": content}, position))
        else:
            items.append(MEDIA[kind](**{kind: content}) if kind in MEDIA
                         else _bounded_text(content, limits, f"item {position} "))
    media = [type(item) for item in items if not isinstance(item, str)]
    if len(media) > limits.max_media:
        noun = " and ".join(name for name, kind in (("images", ImageInput), ("audio clips", AudioInput),
                                                    ("PDFs", PdfInput)) if kind in media)
        raise ValueError(f"has {len(media)} {noun}; the limit is {limits.max_media} (MAX_MEDIA_PER_REQUEST)")
    return items


# base64_float16: token vectors only, one matrix of little-endian float16 (half base64's bytes)
EncodingFormat = Literal["float", "base64", "int8", "uint8", "binary", "ubinary", "base64_float16"]
EmbeddingType = Literal["dense", "sparse", "multi_vector"]
InputType = Literal["query", "document", "search_query", "search_document", "passage"]
PROMPT_FIELDS = ("input_type", "prompt_name", "prompt")


class EmbeddingRequest(_Request):
    """OpenAI `/v1/embeddings` body; also the standard `{"model", "input"}` job."""

    # "image", "audio", "pdf": plain strings in `input` are those
    modality: Literal["text", "image", "audio", "pdf"] = "text"
    input: list[str | ImageInput | AudioInput | PdfInput] = Field(
        description="texts, images, audio and PDFs: strings, {text}, {image}, {audio}, {pdf[, pages]}")
    encoding_format: EncodingFormat = "float"
    dimensions: StrictInt | None = Field(default=None, ge=1)  # keep the first N, then renormalise
    input_type: InputType | None = None  # picks the model's query or document prompt
    prompt_name: str | None = None  # one of the model's prompts, by name
    prompt: str | None = None  # a raw prefix
    truncate: StrictBool = True  # false: fail instead of cutting inputs past max_input_tokens
    # true: a text past max_input_tokens is embedded whole, in windows (None: LONG_INPUTS_CHUNKED)
    chunked: StrictBool | None = None
    user: str | None = None  # accepted and ignored, as OpenAI clients send it
    # which outputs, keyed in `data[i].embeddings`; none: the model's own in `data[i].embedding`
    embedding_types: list[EmbeddingType] | None = None
    max_active_dims: StrictInt | None = Field(default=None, ge=1)  # sparse: keep the k largest weights
    # multi-vector documents: merge each one's token vectors into about tokens / pool_factor
    pool_factor: StrictInt | None = Field(default=None, ge=2, le=1024)

    @field_validator("embedding_types", mode="before")
    @classmethod
    def _embedding_types(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            if not value:
                raise ValueError("must name at least one of dense, sparse, multi_vector")
            for item in value:
                if item not in ("dense", "sparse", "multi_vector"):
                    shown = repr(item) if isinstance(item, str) else json_type(item)
                    raise ValueError(f"{shown} is not an embedding type; the types: dense, sparse, multi_vector")
            return list(dict.fromkeys(value))
        if value is not None:
            raise ValueError(f"must be a string or a list of strings, got {json_type(value)}")
        return value

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any, info: ValidationInfo) -> list[str | ImageInput | AudioInput | PdfInput]:
        return _embedding_items(value, _limits(info), info.data.get("modality", "text"))

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _bounded_text(value, _limits(info))

    @property
    def has_media(self) -> bool:
        """Whether `input` holds images or audio (anything not text)."""
        return any(not isinstance(item, str) for item in self.input)

    @model_validator(mode="before")
    @classmethod
    def _one_prompt(cls, body: Any) -> Any:
        if isinstance(body, dict):
            given = [name for name in PROMPT_FIELDS if body.get(name) is not None]
            if len(given) > 1:
                raise ValueError(f"{given[0]}: give at most one of input_type, prompt_name and prompt; "
                                 f"got {' and '.join(given)}")
        return body


CohereEmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
CohereInputType = Literal["search_document", "search_query", "classification", "clustering", "image"]


class CohereImageUrl(BaseModel):
    url: str


class CohereContent(BaseModel):
    """One part of a Cohere `inputs` item: a text or an image."""

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: CohereImageUrl | None = None


class CohereInput(BaseModel):
    content: list[CohereContent]


class CohereEmbedRequest(_Request):
    """Cohere's `POST /v2/embed` body: `texts`, `images` (URLs or data URIs) or `inputs` (one
    text or image part each: parts are not fused into one vector here), `input_type` mapped to
    the model's prompts, one vector per item in each of `embedding_types`."""

    texts: list[str] | None = None
    images: list[str] | None = None
    inputs: list[CohereInput] | None = None
    input_type: CohereInputType | None = None
    embedding_types: list[CohereEmbeddingType] = Field(default_factory=lambda: ["float"], min_length=1)
    output_dimension: StrictInt | None = Field(default=None, ge=1)
    truncate: Literal["NONE", "START", "END"] = "END"

    @model_validator(mode="after")
    def _one_kind_of_input(self, info: ValidationInfo) -> CohereEmbedRequest:
        given = [name for name in ("texts", "images", "inputs") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of texts, images and inputs; got {' and '.join(given) or 'none'}")
        limits = _limits(info)
        items = getattr(self, given[0])
        if not items:
            raise ValueError(f"{given[0]}: must not be an empty list")
        if len(items) > limits.max_embed_inputs:
            raise ValueError(f"{given[0]}: has {len(items)} items; the limit is {limits.max_embed_inputs} "
                             "(MAX_EMBED_INPUTS)")
        if self.truncate == "START":
            raise ValueError("truncate: START is not served (texts are cut at the end); send END or NONE")
        for position, item in enumerate(self.items):
            if isinstance(item, str):
                _bounded_text(_non_empty_string(item), limits, f"{given[0]}: item {position} ")
        media = sum(not isinstance(item, str) for item in self.items)
        if media > limits.max_media:
            raise ValueError(f"{given[0]}: has {media} images; the limit is {limits.max_media} (MAX_MEDIA_PER_REQUEST)")
        return self

    @property
    def items(self) -> list[str | ImageInput]:
        if self.texts is not None:
            return list(self.texts)
        if self.images is not None:
            return [ImageInput(image=image) for image in self.images]
        items: list[str | ImageInput] = []
        for position, entry in enumerate(self.inputs or []):
            if len(entry.content) != 1:
                raise ValueError(f"inputs: item {position} has {len(entry.content)} parts; one text or one image "
                                 "each is served (parts are not fused into one vector)")
            part = entry.content[0]
            if part.type == "text" and part.text:
                items.append(part.text)
            elif part.type == "image_url" and part.image_url is not None:
                items.append(ImageInput(image=part.image_url.url))
            else:
                raise ValueError(f"inputs: item {position}: a {part.type} part without its {part.type}")
        return items


class CohereBilledUnits(BaseModel):
    input_tokens: int


class CohereMeta(BaseModel):
    api_version: dict[str, str] = Field(default_factory=lambda: {"version": "2"})
    billed_units: CohereBilledUnits


class CohereEmbedResponse(BaseModel):
    """Cohere's embed answer: vectors keyed by type, in input order."""

    id: str
    embeddings: dict[str, list]
    texts: list[str] | None = None
    meta: CohereMeta
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"


class TokenizeRequest(_TextsRequest):
    """`/v1/tokenize` body; also the standard job `{"task": "tokenize", "model", "input"}`."""


class ClassifyRequest(_TextsRequest):
    """`{"model", "input"}` sent to a classifier; also `openai_route: "/v1/classify"`."""


def _document_text(value: Any, position: int, limits: RequestLimits) -> str | ImageInput:
    if isinstance(value, dict) and "text" in value:  # Cohere/Jina document objects
        value = value["text"]
    elif isinstance(value, dict) and set(value) == {"image"}:  # a page's picture
        if not isinstance(value["image"], str) or not value["image"]:
            raise ValueError(f"item {position}: image must be a non-empty string")
        return ImageInput.model_construct(image=value["image"])
    if not isinstance(value, str):
        raise ValueError(f"item {position} must be a string, got {json_type(value)}")
    return _bounded_text(value, limits, f"item {position} ")


class RerankRequest(_Request):
    """Standard rerank job (`docs`, `return_docs`) or Cohere/Jina body (`documents`, ...)."""

    query: str
    # texts; `{"image"}` pictures of pages for a page-reading model
    docs: list[str | ImageInput] = Field(validation_alias=AliasChoices("docs", "documents"))
    top_n: StrictInt | None = Field(default=None, ge=1)  # only the best N results
    return_docs: StrictBool = Field(
        default=False, validation_alias=AliasChoices("return_docs", "return_documents")
    )
    raw_scores: StrictBool = False  # logits instead of sigmoid scores
    # LLM rerankers: the task the pair is judged for (default: the deployment's "instruction"
    # prompt, else the model family's own); other rerankers take none
    instruction: str | None = Field(default=None, min_length=1, max_length=2000)

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, body: Any) -> Any:
        if isinstance(body, dict):
            for pair in (("docs", "documents"), ("return_docs", "return_documents")):
                if all(name in body for name in pair):
                    raise ValueError(f"{pair[0]}: give either {pair[0]} or {pair[1]}, not both")
        return body

    @field_validator("query", mode="before")
    @classmethod
    def _query(cls, value: Any, info: ValidationInfo) -> str:
        return _bounded_text(_non_empty_string(value), _limits(info))

    @field_validator("docs", mode="before")
    @classmethod
    def _documents(cls, value: Any, info: ValidationInfo) -> list[str | ImageInput]:
        # A plain string must not reach the engine: Infinity would rank its characters.
        if not isinstance(value, list) or not value:
            got = "an empty list" if value == [] else json_type(value)
            raise ValueError(f"must be a non-empty list of strings, got {got}")
        limits = _limits(info)
        if len(value) > limits.max_rerank_docs:
            raise ValueError(
                f"has {len(value)} documents; the limit is {limits.max_rerank_docs} (MAX_RERANK_DOCS)"
            )
        return [_document_text(item, i, limits) for i, item in enumerate(value)]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, tokens: int) -> Usage:
        return cls.model_construct(prompt_tokens=tokens, total_tokens=tokens)  # the worker's own count


class SparseEmbedding(BaseModel):
    """Non-zero weights only, by token id (ascending): what vector databases store as sparse."""

    indices: list[int]
    values: list[float]


class Base64Matrix(BaseModel):
    """A text's token vectors with `encoding_format: base64`: one matrix, row-major
    little-endian float32, with its shape (rows are tokens)."""

    shape: list[int]
    base64: str
    dtype: Literal["float16"] | None = None  # encoding_format base64_float16; float32 where absent


# floats; integers for int8, uint8, binary and ubinary; base64 of little-endian float32
DenseVector = list[int] | list[float] | str
# sparse: an object; multi-vector: one dense vector per token, or one base64 matrix
AnyEmbedding = DenseVector | SparseEmbedding | Base64Matrix | list[DenseVector]


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: AnyEmbedding | None = None  # the model's own output type
    embeddings: dict[str, AnyEmbedding] | None = None  # keyed by the request's embedding_types
    index: int
    page: int | None = None  # a PDF's page (0-based); its item's `index`


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class DocumentText(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int  # position of the document in the request's `docs`
    relevance_score: float
    # only with `return_docs`: the text (standard jobs), or {"text"} (the /v1/rerank route,
    # as Cohere, Jina and vLLM answer); a page's picture as it was sent, {"image"}
    document: DocumentText | ImageInput | str | None = None


class RerankResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    model: str
    results: list[RerankResult]  # highest relevance first
    usage: Usage


class LabelScore(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    object: Literal["classification"] = "classification"
    index: int  # position of the text in the request's `input`
    labels: list[LabelScore]  # every label, highest score first


class ClassifyResponse(BaseModel):
    object: Literal["classify"] = "classify"
    model: str
    data: list[Classification]
    usage: Usage


class TokenizedText(BaseModel):
    object: Literal["tokens"] = "tokens"
    index: int  # position of the text in the request's `input`
    tokens: list[int]  # token ids, special tokens included, as the model would see them untruncated
    count: int


class TokenizeResponse(BaseModel):
    object: Literal["tokenize"] = "tokenize"
    model: str
    data: list[TokenizedText]
    max_input_tokens: int | None  # longer inputs are truncated (or refused with truncate: false)


class ModelStats(BaseModel):
    capabilities: list[str]  # of "embed", "rerank", "classify"
    backend: str
    device: str  # cuda or cpu
    dtype: str  # the precision it runs at (DTYPES=auto resolved for this hardware)
    batch_size: int
    embedding_dimension: int | None = None  # embedders only
    max_input_tokens: int | None = None  # longer inputs are truncated to this
    prompts: list[str] | None = None  # embedders: the prompt names `prompt_name` takes
    modalities: list[str]  # what `input` may hold: ["text"], or ["text", "image"] (CLIP-style)
    embedding_types: list[str] | None = None  # embedders: what `embedding_types` may ask, the default first


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "infinity"
    created: int  # Unix time the engine was loaded
    stats: ModelStats


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
