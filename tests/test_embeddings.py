"""Embeddings equal sentence-transformers' own, in both job flavours, with token usage."""

from __future__ import annotations

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


def standard(texts):
    return {"model": EMBEDDER_ID, "input": texts}


def openai(texts):
    return {"openai_route": "/v1/embeddings", "openai_input": {"model": EMBEDDER_ID, "input": texts}}


def body_of(output, flavour):
    if flavour is openai:
        assert isinstance(output, list) and len(output) == 1, output
        return output[0]
    assert isinstance(output, dict), output
    return output


@pytest.mark.parametrize("flavour", [standard, openai], ids=["standard", "openai"])
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


def test_long_input_is_truncated_to_the_model_maximum(worker, sentence_transformer):
    text = "word " * 2000
    body = worker.run(standard(text))
    expected = sentence_transformer.encode([text], normalize_embeddings=True)[0]
    assert np.abs(np.array(body["data"][0]["embedding"]) - expected).max() <= 1e-5
    assert body["usage"]["prompt_tokens"] == sentence_transformer.tokenizer.model_max_length


def test_many_concurrent_requests_each_get_their_own_vectors(worker, sentence_transformer):
    import asyncio

    texts = [f"sentence number {i} about topic {i % 7}" for i in range(40)]

    async def all_at_once():
        jobs = [worker.handler({"id": str(i), "input": standard(t)}) for i, t in enumerate(texts)]
        return await asyncio.gather(*jobs)

    outputs = asyncio.run_coroutine_threadsafe(all_at_once(), worker.loop).result(120)
    expected = sentence_transformer.encode(texts, normalize_embeddings=True)
    got = np.array([out["data"][0]["embedding"] for out in outputs])
    assert np.abs(got - expected).max() <= 1e-5
