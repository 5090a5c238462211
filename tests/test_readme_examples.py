"""The README's request examples run, and the responses have the documented shape."""

from __future__ import annotations

import json
import re

import pytest

from conftest import CLASSIFIER_NAME, EMBEDDER_ID, RERANKER_ID, ROOT

README = (ROOT / "README.md").read_text()
EXAMPLES = dict(re.findall(r"<!-- example: (.+?) -->\s*```json\n(.*?)```", README, re.S))
# The README names real hub models; the tests serve the bundled embedder and a tiny reranker.
SERVED_AS = {
    "sentence-transformers/all-MiniLM-L6-v2": EMBEDDER_ID,
    "BAAI/bge-reranker-base": RERANKER_ID,
    "SamLowe/roberta-base-go_emotions": CLASSIFIER_NAME,
}
NAMES = [name.removesuffix(" request") for name in EXAMPLES if name.endswith(" request")]
# image embeddings: its URL is not reachable here (test_image_embeddings); sparse embeddings:
# BGE-M3 (test_hybrid runs it against a tiny one); pdf embeddings: a ColQwen2 (test_visual_documents)
RUN = [name for name in NAMES if name not in ("image embeddings", "sparse embeddings", "pdf embeddings")]


def served(value):
    if isinstance(value, dict):
        return {k: served(v) for k, v in value.items()}
    if isinstance(value, list):
        return [served(v) for v in value]
    return SERVED_AS.get(value, value) if isinstance(value, str) else value


def assert_same_shape(got, documented, path="output"):
    """Same keys and types everywhere; same literal values for names and `object` tags."""
    if isinstance(documented, dict):
        assert isinstance(got, dict) and set(got) == set(documented), (path, got)
        for key in documented:
            assert_same_shape(got[key], documented[key], f"{path}.{key}")
    elif isinstance(documented, list):
        assert isinstance(got, list), (path, got)
        if documented and all(isinstance(v, int) and not isinstance(v, bool) for v in documented):
            assert got and all(isinstance(v, int) for v in got), path  # compact vectors, token ids
        elif documented and all(isinstance(v, (int, float)) for v in documented):
            assert got and all(isinstance(v, float) for v in got), path
        elif path.endswith(".labels"):  # the tiny test classifier has other labels
            for item in got:
                assert_same_shape(item, documented[0], f"{path}[]")
        else:
            assert len(got) == len(documented), (path, len(got))
            for i, (g, d) in enumerate(zip(got, documented)):
                assert_same_shape(g, d, f"{path}[{i}]")
    elif path.endswith((".object", ".model", ".id", ".backend")):  # device, dtype: by hardware
        assert got == documented, (path, got)
    else:
        assert type(got) is type(documented), (path, got, documented)


def test_every_example_has_a_request_and_a_response():
    assert len(NAMES) == 13
    for name in NAMES:
        assert f"{name} response" in EXAMPLES


def assert_same_values(got, documented, path="output") -> None:
    """The bundled model's numbers as the README shows them: usage and token ids exactly,
    integer vectors exactly, float vectors to the 4 decimals shown (the README shows each
    vector's first components; the tests run at float32)."""
    if isinstance(documented, dict):
        for key in documented:
            if key not in ("created", "id"):
                assert_same_values(got[key], documented[key], f"{path}.{key}")
    elif isinstance(documented, list):
        numbers = documented and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in documented)
        if numbers and all(isinstance(v, int) for v in documented) and not path.endswith(".tokens"):
            assert got[:len(documented)] == documented, (path, got[:len(documented)])
        elif numbers and path.endswith(".tokens"):
            assert got == documented, (path, got)
        elif numbers:
            assert [round(v, 4) for v in got[:len(documented)]] == documented, (path, got[:len(documented)])
        else:
            for i, (g, d) in enumerate(zip(got, documented)):
                assert_same_values(g, d, f"{path}[{i}]")
    elif isinstance(documented, (int, str)) and not isinstance(documented, bool):
        assert got == documented, (path, got, documented)


# The bundled embedder's examples: their numbers are the worker's own; the reranker's and the
# classifier's come from real models the tests cannot load, so only their shapes are checked.
BUNDLED = [name for name in RUN if "all-MiniLM-L6-v2" in EXAMPLES[f"{name} request"] and name != "models"]


@pytest.mark.parametrize("name", RUN)
def test_readme_example(worker, name):
    job = served(json.loads(EXAMPLES[f"{name} request"]))
    documented = served(json.loads(EXAMPLES[f"{name} response"]))
    got = worker.run(job["input"])
    assert_same_shape(got, documented)
    if name in BUNDLED:
        assert_same_values(got, documented)


def test_readme_error_example_is_what_the_worker_says(worker):
    documented = json.loads(re.search(r'```json\n(\{"error".*?)\n```', README, re.S).group(1))
    got = worker.run({"model": "BAAI/bge-large-en", "input": "x"})
    # The deployed list differs (the tests serve other models); the rest is word for word.
    reason, _ = documented["error"].split(" deployed: ")
    assert got["error"].startswith(reason + " deployed: ")
