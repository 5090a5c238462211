"""What a request will cost, worked out once before any work: the tokens its texts are read as.

Every route's request is priced by `reading` (one entry per schema in `READINGS`, so a new
request type without a price fails its first test), and `RequestPricer.charge` holds it to
MAX_REQUEST_TOKENS before the service computes anything. A request is read as:
- each text with its prompt (embeddings, Cohere's embed, classify, tokenize): the prompt counts
  once per input it is put before, so no field multiplies the cost unpriced;
- each rerank pair: a cross-encoder reads the query again with every document; an LLM
  reranker tokenizes the query and instruction once, then lays every pair out with its
  template, whose tokens count per pair; a late-interaction model reads the query once;
- a chunked text: every window, each with the prompt and the model's special tokens again;
- a page-reading model's picture (an image, a PDF's listed page, or one page of a PDF that
  lists none: its renderer holds the rest to MAX_PDF_PAGES before rendering) as the most
  tokens a page gives.

The price is an upper bound that costs nothing to work out: no tokenizer makes more tokens of
a text than its UTF-8 bytes plus one (a byte-level BPE makes at most one a byte; WordPiece and
SentencePiece fewer; one more for a leading word marker), plus the model's special tokens.
Where that bound is past the budget but the text is small enough to read
(`EXACT_FACTOR` times the budget in bytes), the texts are tokenized once, in slices, off the
event loop, and the exact count decides; past that, the bound alone refuses, in one line,
without reading a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from embedding_worker.api.schemas import (
    ClassifyRequest,
    CohereEmbedRequest,
    EmbeddingRequest,
    PdfInput,
    RerankRequest,
    TokenizeRequest,
)
from embedding_worker.errors import InvalidRequest

if TYPE_CHECKING:
    from embedding_worker.engine.deployed import DeployedModel

EXACT_FACTOR = 4  # texts up to this many bytes per budgeted token are counted exactly
SLICE_CHARACTERS = 2**18  # characters tokenized at once (bounded memory), one text at least


def token_bound(text: str) -> int:
    """At most this many tokens of `text` for any tokenizer, special tokens aside."""
    return (len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))) + 1


@dataclass
class Reading:
    """How a request's texts are read: each text `times` times, plus `fixed` tokens (special
    tokens, templates) that need no counting."""

    texts: list[tuple[str, int]] = field(default_factory=list)
    fixed: int = 0

    def add(self, text: str, times: int = 1) -> None:
        if text and times:
            self.texts.append((text, times))

    @property
    def bound(self) -> int:
        return self.fixed + sum(times * token_bound(text) for text, times in self.texts)

    @property
    def size(self) -> int:
        """Characters to read for an exact count (each text once)."""
        return sum(len(text) for text, _ in self.texts)


def reading(request: object, model: DeployedModel, prefix: str = "", chunked: bool = False) -> Reading:
    """How `request` to `model` will be read (`prefix`: the prompt its texts get)."""
    for schema, read in READINGS.items():
        if isinstance(request, schema):
            return read(request, model, prefix, chunked)
    raise TypeError(f"no price for {type(request).__name__}: add it to pricing.READINGS")


def _special_tokens(model: DeployedModel) -> tuple[int, int]:
    """The model's special tokens before and after a text; two and two where it has no
    tokenizer to tell (its texts are priced, not counted)."""
    return model.special_tokens if model.tokenizer is not None else (2, 2)


def _texts(items: list, model: DeployedModel, prefix: str, chunked: bool) -> Reading:
    before, after = _special_tokens(model)
    read = Reading()
    texts = [item for item in items if isinstance(item, str)]
    if chunked and model.max_input_tokens:
        room = max(1, model.max_input_tokens - before - after - token_bound(prefix))
        windows = sum(-(-token_bound(text) // room) for text in texts)
    else:
        windows = len(texts)
    read.add(prefix, windows)
    for text in texts:
        read.add(text)
    read.fixed = windows * (before + after)
    return read


def _embeddings(request: EmbeddingRequest, model: DeployedModel, prefix: str, chunked: bool) -> Reading:
    read = _texts(request.input, model, prefix, chunked)
    read.fixed += _pictures(request.input, model)
    return read


def _pictures(items: list, model: DeployedModel) -> int:
    """The tokens a page-reading model reads of the pictures and PDF pages in `items`."""
    if not model.page_tokens:
        return 0
    pages = sum(len(item.pages or [0]) if isinstance(item, PdfInput) else 1 for item in items if not isinstance(item, str))
    return pages * model.page_tokens


def _cohere(request: CohereEmbedRequest, model: DeployedModel, prefix: str, chunked: bool) -> Reading:
    return _texts(request.items, model, prefix, False)


def _plain(request: ClassifyRequest | TokenizeRequest, model: DeployedModel, prefix: str, chunked: bool) -> Reading:
    return _texts(request.input, model, "", False)


def _rerank(request: RerankRequest, model: DeployedModel, prefix: str, chunked: bool) -> Reading:
    """Cross-encoders read the query with every document; an LLM reranker reads it (and the
    instruction) once and lays out every pair with its template, the query's share of the
    pair in each; a late-interaction model embeds the query once."""
    before, after = _special_tokens(model)
    read = Reading()
    documents = len(request.docs)
    if model.pair_template is not None:  # an LLM reranker
        read.add(request.query)
        read.add(request.instruction or "")
        template, share = model.pair_template
        read.fixed = documents * (template + min(token_bound(request.query), share))
    elif model.traits.scores_token_vectors is not None:
        read.add(request.query)
        read.fixed = (documents + 1) * (before + after + 1)
    else:
        read.add(request.query, documents)
        read.fixed = documents * (before + after + 1)
    for document in request.docs:
        if isinstance(document, str):
            read.add(document)
    read.fixed += _pictures(request.docs, model)
    return read


READINGS = {
    EmbeddingRequest: _embeddings,
    CohereEmbedRequest: _cohere,
    ClassifyRequest: _plain,
    TokenizeRequest: _plain,
    RerankRequest: _rerank,
}


class RequestPricer:
    """Holds every request to MAX_REQUEST_TOKENS before it runs."""

    def __init__(self, max_request_tokens: int) -> None:
        self.max_request_tokens = max_request_tokens

    async def charge(self, read: Reading, model: DeployedModel) -> int:
        """The request's tokens (the bound, or the exact count where the bound is past the
        budget); raise `InvalidRequest` past MAX_REQUEST_TOKENS."""
        bound = read.bound
        if bound <= self.max_request_tokens:
            return bound
        if model.tokenizer is None or read.size > EXACT_FACTOR * self.max_request_tokens:
            raise InvalidRequest(
                f"input: this request would be read as up to {bound:,} tokens (every text with its prompt, every "
                f"rerank pair with its query); the limit is {self.max_request_tokens:,} tokens (MAX_REQUEST_TOKENS); "
                "send fewer or shorter texts, or a shorter prompt or query")
        tokens = await asyncio.to_thread(_count, read, model)
        if tokens > self.max_request_tokens:
            raise InvalidRequest(
                f"input: this request is read as {tokens:,} tokens (every text with its prompt, every rerank pair "
                f"with its query); the limit is {self.max_request_tokens:,} tokens (MAX_REQUEST_TOKENS); send fewer "
                "or shorter texts, or a shorter prompt or query")
        return tokens


def slices(texts: list[str]) -> Iterator[tuple[int, list[str]]]:
    """`texts` in consecutive slices of about SLICE_CHARACTERS, each with its first index: what
    is tokenized at once, so that the token lists alive at a time stay bounded."""
    start, size = 0, 0
    for end, text in enumerate(texts):
        if size and size + len(text) > SLICE_CHARACTERS:
            yield start, texts[start:end]
            start, size = end, 0
        size += len(text)
    if start < len(texts):
        yield start, texts[start:]


def _count(read: Reading, model: DeployedModel) -> int:
    """The exact tokens of `read` (blocking: in a thread), a slice of texts at a time."""
    before, after = model.special_tokens
    tokens = read.fixed
    for start, part in slices([text for text, _ in read.texts]):
        counts = model.token_counts(part)
        tokens += sum(times * (count - before - after)
                      for (_, times), count in zip(read.texts[start:start + len(part)], counts))
    return tokens
