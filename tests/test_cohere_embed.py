"""Cohere's embed API (`/v2/embed`) as an `openai_route` job, as RunPod's gateway forwards it:
answers keyed by type, `input_type` mapped to the model's prompts, every bad body one line."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import EMBEDDER_ID


def cohere(worker, body: dict):
    output = worker.run({"openai_route": "/v2/embed", "openai_input": {"model": EMBEDDER_ID, **body}})
    return output[0] if isinstance(output, list) else output


def test_texts_and_every_embedding_type_from_one_pass(worker, sentence_transformer):
    texts = ["Hello, world!", "A second text."]
    body = cohere(worker, {"texts": texts, "input_type": "search_document",
                           "embedding_types": ["float", "int8", "uint8", "binary", "ubinary", "base64"]})
    assert set(body) == {"id", "embeddings", "texts", "meta", "response_type"}
    assert body["response_type"] == "embeddings_by_type" and body["meta"]["api_version"] == {"version": "2"}
    floats = np.array(body["embeddings"]["float"])
    assert np.abs(floats - sentence_transformer.encode(texts, normalize_embeddings=True)).max() <= 1e-5
    assert len(body["embeddings"]["binary"][0]) == 384 // 8 and len(body["embeddings"]["base64"]) == 2
    standard = worker.run({"model": EMBEDDER_ID, "input": texts, "encoding_format": "int8"})
    assert body["embeddings"]["int8"] == [item["embedding"] for item in standard["data"]]  # the same scale


@pytest.mark.parametrize("body, message", [
    ({"texts": ["a"], "images": ["x"]}, "give exactly one of texts, images and inputs; got texts and images"),
    ({}, "give exactly one of texts, images and inputs; got none"),
    ({"texts": []}, "texts: must not be an empty list"),
    ({"texts": ["a"], "truncate": "START"}, "truncate: START is not served"),
    ({"inputs": [{"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
     "inputs: item 0 has 2 parts"),
    ({"texts": ["a"], "embedding_types": ["float16"]}, "embedding_types.0: Input should be"),
    ({"texts": ["a"], "embedding_types": []}, "embedding_types: List should have at least 1 item"),
    ({"texts": ["a"], "output_dimension": 0}, "output_dimension: Input should be greater than or equal to 1"),
    ({"texts": ["a"], "output_dimension": 385}, "output_dimension: must be between 1 and 384"),
    ({"images": ["data:image/png;base64,AAAA"]}, "input: item 0 is an image; model"),
])
def test_bad_bodies_fail_in_one_line(worker, body, message):
    output = cohere(worker, body)
    assert list(output) == ["error"] and message in output["error"] and "\n" not in output["error"], output


def test_input_type_picks_the_models_prompts(worker):
    """all-MiniLM-L6-v2 has no prompts: search_query and search_document give the same vector,
    and an input type the model has no prompt for is no error."""
    vectors = {kind: cohere(worker, {"texts": ["same"], "input_type": kind})["embeddings"]["float"][0]
               for kind in ("search_query", "search_document", "classification", "clustering")}
    assert len({tuple(v) for v in vectors.values()}) == 1


def test_the_jobs_log_line_counts_cohere_texts(worker, caplog):
    with caplog.at_level("INFO", logger="embedding_worker"):
        cohere(worker, {"texts": ["one text"]})
    assert "/v2/embed, model sentence-transformers/all-MiniLM-L6-v2, 1 items" in caplog.text
