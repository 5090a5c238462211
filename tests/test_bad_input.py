"""Bad input fails the job with a one-line message naming the field; the worker keeps serving."""

from __future__ import annotations

import pytest

from conftest import CLASSIFIER_NAME, EMBEDDER_ID, RERANKER_ID

M, R, C = EMBEDDER_ID, RERANKER_ID, CLASSIFIER_NAME

CASES = {
    "input is a string": ("hello", "input: must be a JSON object, got string"),
    "input is a list": ([1, 2], "input: must be a JSON object, got array"),
    "input is null": (None, "input: must be a JSON object, got null"),
    "no recognised fields": ({"model": M}, "input: expected `model` with `input`"),
    "missing model": ({"input": "x"}, "model: required"),
    "model not a string": ({"model": 7, "input": "x"}, "model: must be a string, got number"),
    "unknown model": ({"model": "nope/none", "input": "x"}, f"model: 'nope/none' is not deployed; deployed: {M}, {R}, {C}"),
    "empty list": ({"model": M, "input": []}, "input: must not be an empty list"),
    "empty string": ({"model": M, "input": ""}, "input: must not be empty"),
    "non-string item": ({"model": M, "input": ["a", 3]}, "input: item 1 must be a string, got number"),
    "null item": ({"model": M, "input": [None]}, "input: item 0 must be a string, got null"),
    "empty item": ({"model": M, "input": ["a", ""]}, "input: item 1 must not be an empty string"),
    "input is an object": ({"model": M, "input": {"a": 1}}, 'input: item 0 must be a string, {"text": ...}, {"image": ...}, {"audio": ...} or {"pdf": ...}, got object'),
    "docs is a string": ({"model": R, "query": "q", "docs": "abc"}, "docs: must be a non-empty list of strings, got string"),
    "docs is empty": ({"model": R, "query": "q", "docs": []}, "docs: must be a non-empty list of strings, got an empty list"),
    "docs item not a string": ({"model": R, "query": "q", "docs": ["a", {}]}, "docs: item 1 must be a string, got object"),
    "docs missing": ({"model": R, "query": "q"}, "docs: required"),
    "query missing": ({"model": R, "docs": ["a"]}, "query: required"),
    "query empty": ({"model": R, "query": "", "docs": ["a"]}, "query: must not be empty"),
    "embed with a reranker": ({"model": R, "input": "x"}, f"model: '{R}' cannot embed; it supports: rerank"),
    "rerank with an embedder": ({"model": M, "query": "q", "docs": ["a"]}, f"model: '{M}' cannot rerank; it supports: embed"),
    "rerank with a classifier": ({"model": C, "query": "q", "docs": ["a"]}, f"model: '{C}' cannot rerank; it supports: classify"),
    "openai embeddings with a classifier": ({"openai_route": "/v1/embeddings", "openai_input": {"model": C, "input": "x"}}, f"model: '{C}' cannot embed; it supports: classify"),
    "classify with an embedder": ({"openai_route": "/v1/classify", "openai_input": {"model": M, "input": "x"}}, f"model: '{M}' cannot classify; it supports: embed"),
    "token ids": ({"model": M, "input": [101, 7592, 102]}, "input: token ids are not supported; send text"),
    "batched token ids": ({"model": M, "input": [[101, 7592], [102]]}, "input: token ids are not supported; send text"),
    "unknown encoding_format": ({"model": M, "input": "x", "encoding_format": "int4"}, "encoding_format: Input should be 'float', 'base64', 'int8', 'uint8', 'binary', 'ubinary' or 'base64_float16'"),
    "dimensions zero": ({"model": M, "input": "x", "dimensions": 0}, "dimensions: Input should be greater than or equal to 1"),
    "dimensions past the model": ({"model": M, "input": "x", "dimensions": 385}, f"dimensions: must be between 1 and 384 for model '{M}', got 385"),
    "dimensions not a number": ({"model": M, "input": "x", "dimensions": "all"}, "dimensions: Input should be a valid integer"),
    "dimensions a boolean": ({"model": M, "input": "x", "dimensions": True}, "dimensions: Input should be a valid integer"),
    "dimensions a numeric string": ({"model": M, "input": "x", "dimensions": "64"}, "dimensions: Input should be a valid integer"),
    "dimensions a float": ({"model": M, "input": "x", "dimensions": 64.0}, "dimensions: Input should be a valid integer"),
    "top_n a string": ({"model": R, "query": "q", "docs": ["a"], "top_n": "1"}, "top_n: Input should be a valid integer"),
    "return_docs a string": ({"model": R, "query": "q", "docs": ["a"], "return_docs": "yes"}, "return_docs: Input should be a valid boolean"),
    "top_n zero": ({"model": R, "query": "q", "docs": ["a"], "top_n": 0}, "top_n: Input should be greater than or equal to 1"),
    "instruction empty": ({"model": R, "query": "q", "docs": ["a"], "instruction": ""}, "instruction: String should have at least 1 character"),
    "instruction one past 2000": ({"model": R, "query": "q", "docs": ["a"], "instruction": "x" * 2001}, "instruction: String should have at most 2000 characters"),
    "instruction to a cross-encoder": ({"model": R, "query": "q", "docs": ["a"], "instruction": "x" * 2000}, f"instruction: model '{R}' is a cross-encoder and takes no instruction"),
    "instruction not a string": ({"model": R, "query": "q", "docs": ["a"], "instruction": 5}, "instruction: Input should be a valid string"),
    "chunked a string": ({"model": M, "input": "x", "chunked": "yes"}, "chunked: Input should be a valid boolean"),
    "chunked a number": ({"model": M, "input": "x", "chunked": 1}, "chunked: Input should be a valid boolean"),
    "docs and documents": ({"model": R, "query": "q", "docs": ["a"], "documents": ["b"]}, "docs: give either docs or documents, not both"),
    "return_docs and return_documents": ({"model": R, "query": "q", "docs": ["a"], "return_docs": True, "return_documents": True}, "return_docs: give either return_docs or return_documents, not both"),
    "documents item without text": ({"model": R, "query": "q", "documents": [{"title": "a"}]}, "documents: item 0 must be a string, got object"),
    "unknown openai_route": ({"openai_route": "/v1/chat/completions"}, "openai_route: '/v1/chat/completions' is not supported; supported: /v1/models, /v1/embeddings, /v1/rerank, /v1/classify, /v1/tokenize, /v2/rerank, /v2/embed, /rerank, /embeddings"),
    "openai_route not a string": ({"openai_route": 5}, "openai_route: 5 is not supported"),
    "missing openai_input": ({"openai_route": "/v1/embeddings"}, "openai_input: must be a JSON object for /v1/embeddings, got null"),
    "openai_input not an object": ({"openai_route": "/v1/embeddings", "openai_input": "x"}, "openai_input: must be a JSON object for /v1/embeddings, got string"),
    "openai_input without input": ({"openai_route": "/v1/embeddings", "openai_input": {"model": M}}, "input: required"),
}


@pytest.mark.parametrize("job_input, message", CASES.values(), ids=CASES.keys())
def test_bad_input_fails_with_one_line_then_the_worker_still_serves(worker, job_input, message):
    output = worker.run(job_input)
    assert set(output) == {"error"}, output
    error = output["error"]
    assert isinstance(error, str) and "\n" not in error and "Traceback" not in error
    assert error.startswith(message), error

    assert worker.run({"model": M, "input": "still serving"})["data"][0]["index"] == 0


def test_a_job_without_input_key(worker):
    import asyncio

    output = asyncio.run_coroutine_threadsafe(worker.handler({"id": "x"}), worker.loop).result(30)
    assert output == {"error": "input: must be a JSON object, got null"}


def test_unknown_fields_are_ignored(worker):
    output = worker.run({"model": M, "input": "x", "user": "me", "something_else": [1]})
    assert len(output["data"]) == 1
