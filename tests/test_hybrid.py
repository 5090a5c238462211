"""Sparse and multi-vector embeddings: SPLADE, BGE-M3's three outputs and PyLate ColBERT
through the embeddings API, equal to their own libraries' outputs, and ColBERT's rerank by
MaxSim equal to PyLate's `rank.rerank`.

The models are tiny random ones saved by those libraries, and the references their outputs,
made by tests/data/hybrid/make_references.py in an environment of their own (the libraries
pin versions the worker does not share)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import EMBEDDER_ID, start_worker
from embedding_worker.engine.kinds.hybrid import detect
from embedding_worker.errors import ModelLoadError

DATA = Path(__file__).parent / "data" / "hybrid"
REFERENCES = json.loads((DATA / "references.json").read_text())
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def served(hub_cache):
    names = ["splade-max", "splade-sum", "bge-m3", "colbert"]
    running = start_worker(MODEL_NAMES=";".join([*(str(DATA / n) for n in names), EMBEDDER_ID]),
                           SERVED_MODEL_NAMES=";".join([*names, "minilm"]), DTYPES="float32")
    yield running
    running.close()


def embed(served, flavour: str = "standard", **body):
    job = body if flavour == "standard" else {"openai_route": "/v1/embeddings", "openai_input": body}
    output = served.run(job)
    body = output[0] if isinstance(output, list) else output
    assert "data" in body, body
    return body


def error(served, **body) -> str:
    output = served.run(body)
    assert set(output) == {"error"}, output
    assert "\n" not in output["error"]
    return output["error"]


def assert_sparse_equal(got: list[dict], expected: list[dict]) -> None:
    for mine, theirs in zip(got, expected, strict=True):
        assert mine["indices"] == theirs["indices"]
        assert np.abs(np.array(mine["values"]) - np.array(theirs["values"])).max() <= TOLERANCE


def assert_multi_vectors_equal(got: list, expected: list) -> None:
    for mine, theirs in zip(got, expected, strict=True):
        mine, theirs = np.array(mine), np.array(theirs)
        assert mine.shape == theirs.shape
        assert np.abs(mine - theirs).max() <= TOLERANCE


@pytest.mark.parametrize("name", ["splade-max", "splade-sum"])
@pytest.mark.parametrize("flavour", ["standard", "openai"])
def test_splade_equals_sparse_encoder(served, name, flavour):
    reference = REFERENCES[name]
    body = embed(served, flavour, model=name, input=reference["texts"])
    assert_sparse_equal([item["embedding"] for item in body["data"]], reference["sparse"])
    assert all(item["embedding"]["values"] and min(item["embedding"]["values"]) > 0 for item in body["data"])
    assert body["usage"]["prompt_tokens"] > len(reference["texts"])
    keyed = embed(served, flavour, model=name, input=reference["texts"], embedding_types="sparse")
    assert [item["embeddings"]["sparse"] for item in keyed["data"]] == [item["embedding"] for item in body["data"]]
    assert all("embedding" not in item for item in keyed["data"])


def test_max_active_dims_keeps_the_largest_weights(served):
    reference = REFERENCES["splade-max"]
    body = embed(served, model="splade-max", input=reference["texts"], max_active_dims=5)
    assert [item["embedding"]["indices"] for item in body["data"]] == reference["top5_indices"]


def test_sparse_options_at_and_past_their_bounds(served):
    texts = REFERENCES["splade-max"]["texts"][:2]
    one = embed(served, model="splade-max", input=texts, max_active_dims=1)
    assert [len(item["embedding"]["indices"]) for item in one["data"]] == [1, 1]
    everything = embed(served, model="splade-max", input=texts, max_active_dims=10**9)
    assert [item["embedding"] for item in everything["data"]] == [
        item["embedding"] for item in embed(served, model="splade-max", input=texts)["data"]]
    twice = embed(served, model="bge-m3", input=texts, embedding_types=["sparse", "sparse", "dense"])
    assert list(twice["data"][0]["embeddings"]) == ["sparse", "dense"]
    for body, field in (({"max_active_dims": "5"}, "max_active_dims"), ({"max_active_dims": -1}, "max_active_dims"),
                        ({"max_active_dims": 2.5}, "max_active_dims"), ({"embedding_types": ["sparse", 7]}, "number"),
                        ({"embedding_types": {"sparse": True}}, "object")):
        assert field in error(served, model="splade-max", input=texts, **body)


def test_bge_m3_gives_flag_embeddings_three_outputs_from_one_call(served):
    reference = REFERENCES["bge-m3"]
    natural = embed(served, model="bge-m3", input=reference["texts"])
    assert np.abs(np.array([i["embedding"] for i in natural["data"]]) - np.array(reference["dense"])).max() <= TOLERANCE
    body = embed(served, "openai", model="bge-m3", input=reference["texts"],
                 embedding_types=["dense", "sparse", "multi_vector"])
    embeddings = [item["embeddings"] for item in body["data"]]
    assert all(list(e) == ["dense", "sparse", "multi_vector"] for e in embeddings)
    assert np.abs(np.array([e["dense"] for e in embeddings]) - np.array(reference["dense"])).max() <= TOLERANCE
    assert_sparse_equal([e["sparse"] for e in embeddings], reference["sparse"])
    assert_multi_vectors_equal([e["multi_vector"] for e in embeddings], reference["multi_vector"])
    assert body["usage"] == natural["usage"]


def test_colbert_equals_pylate_for_documents_and_queries(served):
    reference = REFERENCES["colbert"]
    documents = embed(served, model="colbert", input=reference["documents"])
    assert_multi_vectors_equal([item["embedding"] for item in documents["data"]], reference["document_vectors"])
    queries = embed(served, "openai", model="colbert", input=reference["queries"], input_type="query")
    assert_multi_vectors_equal([item["embedding"] for item in queries["data"]], reference["query_vectors"])
    assert {len(item["embedding"]) for item in queries["data"]} == {16}  # expanded to query_length


@pytest.mark.parametrize("flavour", ["standard", "openai"])
def test_colbert_reranks_by_maxsim_as_pylate(served, flavour):
    reference = REFERENCES["colbert"]
    body = {"model": "colbert", "query": reference["rerank_query"], "docs": reference["documents"]}
    job = body if flavour == "standard" else {"openai_route": "/v1/rerank", "openai_input": body}
    output = served.run(job)
    output = output[0] if isinstance(output, list) else output
    assert [r["index"] for r in output["results"]] == [r["index"] for r in reference["rerank"]]
    scores = np.array([r["relevance_score"] for r in output["results"]])
    assert np.abs(scores - np.array([r["score"] for r in reference["rerank"]])).max() <= TOLERANCE
    assert output["usage"]["total_tokens"] > 0


def test_compact_formats_apply_to_dense_and_multi_vector_not_sparse(served):
    texts = REFERENCES["bge-m3"]["texts"][:2]
    body = embed(served, model="bge-m3", input=texts, embedding_types=["dense", "sparse", "multi_vector"],
                 encoding_format="int8")
    first = body["data"][0]["embeddings"]
    assert all(isinstance(v, int) for v in first["dense"])
    assert all(isinstance(v, int) for row in first["multi_vector"] for v in row)
    assert all(isinstance(v, float) for v in first["sparse"]["values"])
    shortened = embed(served, model="bge-m3", input=texts, embedding_types=["dense", "multi_vector"], dimensions=8)
    assert len(shortened["data"][0]["embeddings"]["dense"]) == 8
    assert len(shortened["data"][0]["embeddings"]["multi_vector"][0]) == 32


def test_a_dense_model_answers_embedding_types_dense(served):
    plain = embed(served, model="minilm", input=["a cat"])
    keyed = embed(served, model="minilm", input=["a cat"], embedding_types=["dense"])
    assert keyed["data"][0]["embeddings"]["dense"] == plain["data"][0]["embedding"]


@pytest.mark.parametrize("body, names", [
    ({"model": "colbert", "embedding_types": "sparse"}, ["embedding_types", "colbert", "multi_vector"]),
    ({"model": "minilm", "embedding_types": ["multi_vector"]}, ["embedding_types", "minilm", "dense"]),
    ({"model": "bge-m3", "embedding_types": "lexical"}, ["embedding_types", "'lexical'", "multi_vector"]),
    ({"model": "bge-m3", "embedding_types": []}, ["embedding_types"]),
    ({"model": "bge-m3", "embedding_types": 3}, ["embedding_types", "number"]),
    ({"model": "splade-max", "encoding_format": "int8"}, ["encoding_format", "sparse"]),
    ({"model": "splade-max", "dimensions": 8}, ["dimensions", "dense"]),
    ({"model": "bge-m3", "embedding_types": "multi_vector", "dimensions": 8}, ["dimensions", "dense"]),
    ({"model": "bge-m3", "max_active_dims": 4}, ["max_active_dims", "sparse"]),
    ({"model": "splade-max", "max_active_dims": 0}, ["max_active_dims"]),
    ({"model": "bge-m3", "input": [{"image": "data:image/png;base64,AAAA"}]}, ["image", "bge-m3"]),
])
def test_what_does_not_fit_fails_in_one_line_and_the_worker_serves_on(served, body, names):
    message = error(served, **{"input": ["a cat"], **body})
    for name in names:
        assert name in message, message
    assert embed(served, model="splade-max", input=["a cat"])["data"]


def test_models_route_lists_embedding_types(served):
    output = served.run({"openai_route": "/v1/models"})
    cards = {card["id"]: card for card in (output[0] if isinstance(output, list) else output)["data"]}
    assert cards["splade-max"]["stats"]["embedding_types"] == ["sparse"]
    assert cards["bge-m3"]["stats"]["embedding_types"] == ["dense", "sparse", "multi_vector"]
    assert cards["colbert"]["stats"]["embedding_types"] == ["multi_vector"]
    assert cards["colbert"]["stats"]["embedding_dimension"] == 16
    assert "rerank" in cards["colbert"]["stats"]["capabilities"]
    assert cards["minilm"]["stats"]["embedding_types"] == ["dense"]


def test_readme_example(served):
    from test_readme_examples import EXAMPLES, assert_same_shape

    job = json.loads(EXAMPLES["sparse embeddings request"])["input"]
    documented = json.loads(EXAMPLES["sparse embeddings response"])
    documented["model"] = "bge-m3"
    assert_same_shape(served.run({**job, "model": "bge-m3"}), documented)


def test_layouts_are_told_apart(tmp_path):
    assert type(detect(DATA / "splade-max")).__name__ == "SparseLayout"
    assert type(detect(DATA / "bge-m3")).__name__ == "M3Layout"
    assert type(detect(DATA / "colbert")).__name__ == "ColbertLayout"
    router = tmp_path / "router"
    router.mkdir()
    (router / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Router"},
        {"idx": 1, "name": "1", "path": "1", "type": "sentence_transformers.sparse_encoder.models.SpladePooling"}]))
    with pytest.raises(ModelLoadError, match="Router -> SpladePooling is not served"):
        detect(router)
