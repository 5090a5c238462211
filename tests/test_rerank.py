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


def cohere_body(**fields):
    return {"model": RERANKER_ID, "query": QUERY, "documents": DOCS, **fields}


@pytest.mark.parametrize(
    "job_input, flavour",
    [
        ({"model": RERANKER_ID, "query": QUERY, "docs": DOCS, "return_docs": True}, "standard, docs"),
        ({"model": RERANKER_ID, "query": QUERY, "documents": DOCS, "return_documents": True}, "standard, documents"),
        ({"openai_route": "/v1/rerank", "openai_input": cohere_body(return_documents=True)}, "openai, documents"),
        ({"openai_route": "/v1/rerank", "openai_input": {"model": RERANKER_ID, "query": QUERY, "docs": DOCS, "return_docs": True}}, "openai, docs"),
        ({"openai_route": "/v1/rerank", "openai_input": cohere_body(documents=[{"text": d} for d in DOCS], return_documents=True)}, "openai, document objects"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_every_route_and_spelling_gives_the_same_ranking(worker, cross_encoder, job_input, flavour):
    output = worker.run(job_input)
    body = output[0] if flavour.startswith("openai") else output
    scores, order = expected_ranking(cross_encoder, QUERY, DOCS)
    assert [r["index"] for r in body["results"]] == order
    # standard jobs answer the text; the /v1/rerank route Cohere's, Jina's and vLLM's {"text"}
    documents = [{"text": DOCS[i]} for i in order] if flavour.startswith("openai") else [DOCS[i] for i in order]
    assert [r["document"] for r in body["results"]] == documents
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx(
        [float(scores[i]) for i in order], abs=1e-5
    )


@pytest.mark.parametrize("top_n", [1, 3, len(DOCS), len(DOCS) + 10])
def test_top_n_keeps_only_the_best(worker, cross_encoder, top_n):
    body = worker.run({"openai_route": "/v1/rerank", "openai_input": cohere_body(top_n=top_n)})[0]
    _, order = expected_ranking(cross_encoder, QUERY, DOCS)
    assert [r["index"] for r in body["results"]] == order[:top_n]


def test_raw_scores_are_the_cross_encoder_logits(worker, cross_encoder):
    import torch

    body = worker.run({"model": RERANKER_ID, "query": QUERY, "docs": DOCS, "raw_scores": True})
    logits = cross_encoder.predict([(QUERY, d) for d in DOCS], activation_fct=torch.nn.Identity())
    by_index = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert [by_index[i] for i in range(len(DOCS))] == pytest.approx(logits.tolist(), abs=1e-5)
    assert [r["index"] for r in body["results"]] == sorted(range(len(DOCS)), key=lambda i: -logits[i])
