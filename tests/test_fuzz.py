"""Fuzzing: thousands of generated job inputs through the real handler.

Each result is a valid response or `{"error": str}`; no exception escapes; the worker
answers a valid request afterwards.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CLASSIFIER_NAME, EMBEDDER_ID, RERANKER_ID

KEYS = ["model", "input", "query", "docs", "documents", "return_docs", "return_documents", "top_n",
        "raw_scores", "encoding_format", "dimensions", "user", "openai_route", "openai_input"]
NAMES = [EMBEDDER_ID, RERANKER_ID, CLASSIFIER_NAME, "/v1/embeddings", "/v1/rerank", "/v1/classify",
         "/v1/models", "base64", "float"]
UNICODE = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Z", "Cc", "Cf", "Co", "Cs")), max_size=40)
LEAVES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
          | UNICODE | st.text(string.printable, max_size=10))
JSON = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
DEEP = st.integers(1, 200).map(lambda depth: eval("[" * depth + "]" * depth))  # nested lists
HUGE = st.sampled_from(["x" * 200_001, ["a"] * 3000, [["a"] * 10] * 10, list(range(5000))])
VALUES = (st.sampled_from(NAMES) | JSON | DEEP | HUGE | st.lists(UNICODE, max_size=6)
          | st.lists(st.sampled_from(["Paris", "é", "\x00", "\u202e", "🚀"]), min_size=1, max_size=4))
REQUESTS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=7)
JOB_INPUTS = (JSON | REQUESTS | st.builds(lambda route, body: {"openai_route": route, "openai_input": body},
                                           st.sampled_from(NAMES[3:7]) | VALUES, REQUESTS | VALUES))


def check(output) -> None:
    if isinstance(output, dict) and "error" in output:
        assert isinstance(output["error"], str) and output["error"]
        assert "\n" not in output["error"] and "Traceback" not in output["error"]
        assert set(output) <= {"error", "refresh_worker"}
        return
    body = output[0] if isinstance(output, list) else output
    if isinstance(output, list):
        assert len(output) == 1
    assert body["object"] in {"list", "rerank", "classify"}, body


@settings(max_examples=5000, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(job_input=JOB_INPUTS)
def test_any_job_input_gets_a_response_or_a_one_line_error(worker, job_input):
    check(worker.run(job_input, timeout=60))


def test_the_worker_still_serves_after_the_fuzzing(worker):
    assert len(worker.run({"model": EMBEDDER_ID, "input": ["still", "here"]})["data"]) == 2
    assert worker.registry.healthy
