"""`/v1/models` describes the deployment; OpenAI-route jobs answer with a one-element list."""

from __future__ import annotations

import time

import openai.types

from conftest import CLASSIFIER_NAME, EMBEDDER_ID, RERANKER_ID


def test_models_lists_every_deployed_model_with_what_it_can_do(worker):
    output = worker.run({"openai_route": "/v1/models"})
    assert isinstance(output, list) and len(output) == 1
    body = output[0]
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    assert list(cards) == [EMBEDDER_ID, RERANKER_ID, CLASSIFIER_NAME]
    for card in body["data"]:
        openai.types.Model.model_validate(card)
        assert card["object"] == "model" and card["owned_by"] == "infinity"
        assert 0 < card["created"] <= time.time()
        assert card["stats"]["backend"] == "torch"
        assert card["stats"]["dtype"] == "float32"  # what the model runs at (DTYPES=float32 here)
        assert card["stats"]["device"] == "cpu"
        assert card["stats"]["batch_size"] == 32
    assert cards[EMBEDDER_ID]["stats"]["capabilities"] == ["embed"]
    assert cards[EMBEDDER_ID]["stats"]["embedding_dimension"] == 384
    assert cards[EMBEDDER_ID]["stats"]["max_input_tokens"] == 256
    assert cards[RERANKER_ID]["stats"]["capabilities"] == ["rerank"]
    assert cards[CLASSIFIER_NAME]["stats"]["capabilities"] == ["classify"]
    assert "embedding_dimension" not in cards[RERANKER_ID]["stats"]
    assert cards[RERANKER_ID]["stats"]["max_input_tokens"] == 512


def test_standard_jobs_return_the_body_itself(worker):
    output = worker.run({"model": EMBEDDER_ID, "input": "x"})
    assert isinstance(output, dict) and output["object"] == "list"


def test_openai_route_with_trailing_slash(worker):
    output = worker.run(
        {"openai_route": "/v1/embeddings/", "openai_input": {"model": EMBEDDER_ID, "input": "x"}}
    )
    assert output[0]["data"][0]["index"] == 0
