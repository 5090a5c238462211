"""Embeddings equal sentence-transformers' own, in both job flavours, with token usage."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from conftest import EMBEDDER_ID

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Infinity serves embeddings on RunPod.",
    "ünïcödé, emoji 🚀 and 中文 text",
]


def token_count(sentence_transformer, texts: list[str]) -> int:
    tokenizer = sentence_transformer.tokenizer
    return sum(
        len(tokenizer(text, add_special_tokens=False, truncation=True)["input_ids"]) for text in texts
    )


def standard_job(texts):
    return {"model": EMBEDDER_ID, "input": texts}


def openai_job(texts):
    return {"openai_route": "/v1/embeddings", "openai_input": {"model": EMBEDDER_ID, "input": texts}}


def body_of(output, flavour):
    if flavour is openai_job:
        assert isinstance(output, list) and len(output) == 1, output
        return output[0]
    assert isinstance(output, dict), output
    return output


@pytest.mark.parametrize("flavour", [standard_job, openai_job], ids=["standard", "openai"])
@pytest.mark.parametrize("texts", [TEXTS[0], TEXTS], ids=["string", "list"])
def test_embeddings_match_sentence_transformers(worker, sentence_transformer, flavour, texts):
    body = body_of(worker.run(flavour(texts)), flavour)

    as_list = [texts] if isinstance(texts, str) else texts
    expected = sentence_transformer.encode(as_list, normalize_embeddings=True)
    assert body["object"] == "list"
    assert body["model"] == EMBEDDER_ID
    assert [item["index"] for item in body["data"]] == list(range(len(as_list)))
    assert all(item["object"] == "embedding" for item in body["data"])
    got = np.array([item["embedding"] for item in body["data"]])
    assert got.shape == (len(as_list), 384)
    assert np.abs(got - expected).max() <= 1e-5
    assert all(isinstance(v, float) for v in body["data"][0]["embedding"])
    tokens = token_count(sentence_transformer, as_list)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_texts_tokenized_once_on_arrival_are_read_as_the_model_reads_them(worker, sentence_transformer):
    """A text is tokenized once, as it arrives, the way the model's own tokenize does it:
    stripped, cut to its length; in a batch beside texts of other lengths (padded again)."""
    texts = ["  Surrounded by spaces\n", "UPPER and lower", "word " * 600, "é à ü 漢字 🙂", "x"]
    body = worker.run(standard_job(texts))
    expected = sentence_transformer.encode(texts, normalize_embeddings=True)
    assert np.abs(np.array([item["embedding"] for item in body["data"]]) - expected).max() <= 1e-5
    assert body["usage"]["prompt_tokens"] == sum(min(len(sentence_transformer.tokenizer(t.strip())["input_ids"]), 256) - 2
                                                 for t in texts)


def test_long_input_is_truncated_to_the_model_maximum(worker, sentence_transformer):
    text = "word " * 2000
    body = worker.run(standard_job(text))
    expected = sentence_transformer.encode([text], normalize_embeddings=True)[0]
    assert np.abs(np.array(body["data"][0]["embedding"]) - expected).max() <= 1e-5
    # the text tokens the model read, as for a short text: its limit less [CLS] and [SEP]
    assert body["usage"]["prompt_tokens"] == sentence_transformer.max_seq_length - 2 == 254
    assert worker.run(standard_job("Hello, world!"))["usage"]["prompt_tokens"] == 4


def test_many_concurrent_requests_each_get_their_own_vectors(worker, sentence_transformer):
    import asyncio

    texts = [f"sentence number {i} about topic {i % 7}" for i in range(40)]

    async def all_at_once():
        jobs = [worker.handler({"id": str(i), "input": standard_job(t)}) for i, t in enumerate(texts)]
        return await asyncio.gather(*jobs)

    outputs = asyncio.run_coroutine_threadsafe(all_at_once(), worker.loop).result(120)
    expected = sentence_transformer.encode(texts, normalize_embeddings=True)
    got = np.array([out["data"][0]["embedding"] for out in outputs])
    assert np.abs(got - expected).max() <= 1e-5


def test_responses_validate_against_the_openai_sdk_types(worker):
    import openai.types

    for encoding_format in ("float", "base64"):
        job = {"openai_route": "/v1/embeddings",
               "openai_input": {"model": EMBEDDER_ID, "input": TEXTS[:2], "encoding_format": encoding_format}}
        body = worker.run(job)[0]
        if encoding_format == "base64":  # decoded by the SDK before it builds its type
            for item in body["data"]:
                item["embedding"] = np.frombuffer(base64.b64decode(item["embedding"]), "float32").tolist()
        parsed = openai.types.CreateEmbeddingResponse.model_validate(body)
        assert len(parsed.data) == 2 and len(parsed.data[0].embedding) == 384
        assert parsed.usage.total_tokens == body["usage"]["total_tokens"]


@pytest.mark.parametrize("flavour", [standard_job, openai_job], ids=["standard", "openai"])
def test_base64_decodes_to_exactly_the_float_response(worker, flavour):
    def request(encoding_format):
        job = flavour(TEXTS)
        body = job["openai_input"] if flavour is openai_job else job
        body["encoding_format"] = encoding_format
        return body_of(worker.run(job), flavour)

    as_float, as_base64 = request("float"), request("base64")
    for f, b in zip(as_float["data"], as_base64["data"]):
        assert isinstance(b["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert decoded.tolist() == np.asarray(f["embedding"], dtype=np.float32).tolist()
    assert as_base64["usage"] == as_float["usage"]
    # float32 bytes in base64 against JSON decimals: about 3-4x smaller
    assert len(json.dumps(as_base64)) * 3 < len(json.dumps(as_float))


@pytest.mark.parametrize("dimensions", [1, 64, 383, 384])
def test_dimensions_is_the_renormalised_prefix(worker, sentence_transformer, dimensions):
    body = worker.run({"model": EMBEDDER_ID, "input": TEXTS, "dimensions": dimensions})
    full = sentence_transformer.encode(TEXTS, normalize_embeddings=True)
    prefix = full[:, :dimensions] / np.linalg.norm(full[:, :dimensions], axis=1, keepdims=True)
    got = np.array([item["embedding"] for item in body["data"]])
    assert got.shape == (len(TEXTS), dimensions)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert np.abs(got - prefix).max() <= 1e-5


def test_dimensions_with_base64_through_the_openai_route(worker):
    job = {"openai_route": "/v1/embeddings", "openai_input": {
        "model": EMBEDDER_ID, "input": "x", "dimensions": 8, "encoding_format": "base64"}}
    body = worker.run(job)[0]
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (8,) and abs(np.linalg.norm(vector) - 1) < 1e-5


def test_user_and_unknown_fields_are_ignored(worker):
    plain = worker.run(standard_job("x"))
    extra = worker.run(standard_job("x") | {"user": "user-1234", "client_trace": {"a": [1]}})
    assert extra == plain


def test_outputs_print_as_one_short_line_but_serialise_whole(worker):
    """runpod formats every output into debug strings; a large one must not cost milliseconds."""
    output = worker.run(standard_job(["x"] * 256))
    assert len(repr(output)) < 100 and len(f"{output}") < 100
    assert "list of 256" in repr(output)
    assert json.loads(json.dumps(output)) == json.loads(json.dumps(dict(output)))
    assert len(json.loads(json.dumps(output))["data"]) == 256


def test_a_non_finite_vector_fails_its_request_in_one_line_and_never_reaches_json(hub_cache, monkeypatch):
    from conftest import start_worker

    running = start_worker(MODEL_NAMES=EMBEDDER_ID, DTYPES="bfloat16")
    try:
        module = running.registry.resolve(EMBEDDER_ID).engine._model_replicas[0][0].auto_model
        original = module.forward

        def overflowing(*args, **kwargs):
            hidden, *rest = original(*args, **kwargs)  # sentence-transformers asks for a tuple
            return (hidden * float("inf"), *rest)

        monkeypatch.setattr(module, "forward", overflowing)
        output = running.run({"model": EMBEDDER_ID, "input": ["overflows"]})
        assert output == {"error": f"model '{EMBEDDER_ID}' computed NaN or infinity for this input at bfloat16; "
                                   "its precision is too narrow for it: deploy it with DTYPES=float32"}
        monkeypatch.setattr(module, "forward", original)
        assert "data" in running.run({"model": EMBEDDER_ID, "input": ["fine again"]})
    finally:
        running.close()
