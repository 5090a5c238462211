"""`/v1/models` lists the deployment; OpenAI-route jobs answer with a one-element list."""

from __future__ import annotations

import time

from conftest import EMBEDDER_ID, RERANKER_ID


def test_models_lists_every_deployed_model(worker):
    output = worker.run({"openai_route": "/v1/models"})
    assert isinstance(output, list) and len(output) == 1
    body = output[0]
    assert body["object"] == "list"
    assert [card["id"] for card in body["data"]] == [EMBEDDER_ID, RERANKER_ID]
    for card in body["data"]:
        assert card["object"] == "model"
        assert card["owned_by"] == "infinity"
        assert 0 < card["created"] <= time.time()
        assert card["stats"]["backend"] == "torch"
        assert card["stats"]["batch_size"] == 32
    capabilities = {card["id"]: card["stats"]["capabilities"] for card in body["data"]}
    assert capabilities == {EMBEDDER_ID: ["embed"], RERANKER_ID: ["rerank"]}


def test_standard_jobs_return_the_body_itself(worker):
    output = worker.run({"model": EMBEDDER_ID, "input": "x"})
    assert isinstance(output, dict) and output["object"] == "list"


def test_openai_route_with_trailing_slash(worker):
    output = worker.run(
        {"openai_route": "/v1/embeddings/", "openai_input": {"model": EMBEDDER_ID, "input": "x"}}
    )
    assert output[0]["data"][0]["index"] == 0
