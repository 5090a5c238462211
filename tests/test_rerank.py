"""Rerank scores and order equal sentence-transformers' CrossEncoder on the same model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import EMBEDDER_ID, RERANKER_ID

QUERY = "Where is Paris?"
DOCS = [
    "Paris is the capital of France.",
    "Rome is in Italy.",
    "The Eiffel tower stands in Paris, France.",
    "Bananas are yellow.",
    "Paris",
]


def expected_ranking(cross_encoder, query, docs):
    scores = cross_encoder.predict([(query, doc) for doc in docs])  # sigmoid, as served
    order = sorted(range(len(docs)), key=lambda i: scores[i], reverse=True)
    return scores, order


@pytest.mark.parametrize("return_docs", [False, True])
def test_rerank_matches_cross_encoder(worker, cross_encoder, return_docs):
    body = worker.run(
        {"model": RERANKER_ID, "query": QUERY, "docs": DOCS, "return_docs": return_docs}
    )
    scores, order = expected_ranking(cross_encoder, QUERY, DOCS)

    assert body["object"] == "rerank"
    assert body["model"] == RERANKER_ID
    results = body["results"]
    assert [r["index"] for r in results] == order
    for result in results:
        assert type(result["relevance_score"]) is float
        assert result["relevance_score"] == pytest.approx(float(scores[result["index"]]), abs=1e-5)
        if return_docs:
            assert result["document"] == DOCS[result["index"]]
        else:
            assert "document" not in result
    assert [r["relevance_score"] for r in results] == sorted(
        (r["relevance_score"] for r in results), reverse=True
    )
    assert body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]


def test_rerank_of_one_document(worker, cross_encoder):
    body = worker.run({"model": RERANKER_ID, "query": QUERY, "docs": ["Paris is in France"]})
    scores, _ = expected_ranking(cross_encoder, QUERY, ["Paris is in France"])
    assert body["results"] == [{"index": 0, "relevance_score": pytest.approx(float(scores[0]), abs=1e-5)}]


def test_both_models_of_a_two_model_deployment_answer_by_name(worker):
    embedded = worker.run({"model": EMBEDDER_ID, "input": "a"})
    reranked = worker.run({"model": RERANKER_ID, "query": "a", "docs": ["b", "c"]})
    assert embedded["model"] == EMBEDDER_ID and len(embedded["data"][0]["embedding"]) == 384
    assert reranked["model"] == RERANKER_ID and len(reranked["results"]) == 2
    assert np.isfinite([r["relevance_score"] for r in reranked["results"]]).all()
