"""Every request limit: accepted at the bound, refused one past it with a one-line error."""

from __future__ import annotations

import pytest

from conftest import EMBEDDER_ID, RERANKER_ID
from embedding_worker.errors import InvalidRequest
from embedding_worker.api.job_input import normalize_job_input
from embedding_worker.api.schemas import RequestLimits

LIMITS = RequestLimits(max_embed_inputs=4, max_rerank_docs=3, max_input_chars=10)


def embed(texts):
    return {"model": EMBEDDER_ID, "input": texts}


def rerank(query="q", docs=("a",)):
    return {"model": RERANKER_ID, "query": query, "docs": list(docs)}


CASES = {
    "inputs per request": (embed(["a"] * 4), embed(["a"] * 5),
                           "input: has 5 items; the limit is 4 (MAX_EMBED_INPUTS)"),
    "characters of a string input": (embed("x" * 10), embed("x" * 11),
                                     "input: has 11 characters; the limit is 10 (MAX_INPUT_CHARS)"),
    "characters of a list item": (embed(["a", "x" * 10]), embed(["a", "x" * 11]),
                                  "input: item 1 has 11 characters; the limit is 10 (MAX_INPUT_CHARS)"),
    "documents per rerank": (rerank(docs=["a"] * 3), rerank(docs=["a"] * 4),
                             "docs: has 4 documents; the limit is 3 (MAX_RERANK_DOCS)"),
    "characters of a document": (rerank(docs=["a", "x" * 10]), rerank(docs=["a", "x" * 11]),
                                 "docs: item 1 has 11 characters; the limit is 10 (MAX_INPUT_CHARS)"),
    "characters of the query": (rerank(query="x" * 10), rerank(query="x" * 11),
                                "query: has 11 characters; the limit is 10 (MAX_INPUT_CHARS)"),
}


@pytest.mark.parametrize("at_bound, past_bound, message", CASES.values(), ids=CASES.keys())
def test_limit(at_bound, past_bound, message):
    normalize_job_input(at_bound, LIMITS)
    with pytest.raises(InvalidRequest) as refused:
        normalize_job_input(past_bound, LIMITS)
    assert str(refused.value) == message


def test_openai_route_is_bounded_the_same_way():
    job = {"openai_route": "/v1/embeddings", "openai_input": embed(["a"] * 5)}
    with pytest.raises(InvalidRequest, match=r"^input: has 5 items; the limit is 4"):
        normalize_job_input(job, LIMITS)


def test_the_default_limits_through_the_worker(worker):
    at_bound = worker.run(embed(["a"] * 2048))
    assert len(at_bound["data"]) == 2048
    assert worker.run(embed(["a"] * 2049)) == {
        "error": "input: has 2049 items; the limit is 2048 (MAX_EMBED_INPUTS)"
    }
    assert worker.run(rerank(docs=["a"] * 1001)) == {
        "error": "docs: has 1001 documents; the limit is 1000 (MAX_RERANK_DOCS)"
    }
    assert worker.run(embed("x" * 100_001)) == {
        "error": "input: has 100001 characters; the limit is 100000 (MAX_INPUT_CHARS)"
    }
