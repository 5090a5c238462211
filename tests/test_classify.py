"""A sequence classifier with two or more labels classifies, like the transformers pipeline."""

from __future__ import annotations

import pytest

from conftest import CLASSIFIER_LABELS, CLASSIFIER_NAME

TEXTS = ["I love this product.", "This is terrible.", "It arrived on a Tuesday."]


@pytest.fixture(scope="module")
def pipeline_predictions(classifier_path):
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(classifier_path), top_k=None, device="cpu")
    return classify(TEXTS)


@pytest.mark.parametrize(
    "job_input, openai",
    [
        ({"model": CLASSIFIER_NAME, "input": TEXTS}, False),
        ({"openai_route": "/v1/classify", "openai_input": {"model": CLASSIFIER_NAME, "input": TEXTS}}, True),
    ],
    ids=["standard", "openai"],
)
def test_classification_matches_the_transformers_pipeline(worker, pipeline_predictions, job_input, openai):
    output = worker.run(job_input)
    body = output[0] if openai else output
    assert body["object"] == "classify"
    assert body["model"] == CLASSIFIER_NAME
    assert [item["index"] for item in body["data"]] == list(range(len(TEXTS)))
    for item, expected in zip(body["data"], pipeline_predictions):
        assert item["object"] == "classification"
        labels = item["labels"]
        assert sorted(label["label"] for label in labels) == sorted(CLASSIFIER_LABELS)
        assert [label["score"] for label in labels] == sorted((l["score"] for l in labels), reverse=True)
        expected_scores = {e["label"]: e["score"] for e in expected}
        for label in labels:
            assert label["score"] == pytest.approx(expected_scores[label["label"]], abs=1e-5)
        assert sum(label["score"] for label in labels) == pytest.approx(1, abs=1e-5)
    assert body["usage"]["prompt_tokens"] > 0


def test_a_single_string_is_classified_too(worker, pipeline_predictions):
    body = worker.run({"model": CLASSIFIER_NAME, "input": TEXTS[0]})
    assert len(body["data"]) == 1
    top = max(pipeline_predictions[0], key=lambda e: e["score"])
    assert body["data"][0]["labels"][0]["label"] == top["label"]
