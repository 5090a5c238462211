"""Long documents in bounded memory: a tiny embedder of BGE-M3's shape (XLM-R, 8,194
positions) embeds 32 documents of up to 8,192 tokens, of mixed lengths (so a padded batch
would need a mask), with short texts beside them, in one request: equal to
sentence-transformers within 1e-4, and the worker's memory grows by far less than one
tokens x tokens matrix per document would take (3.3 GiB for 4 such documents before)."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

import tiny_families
from conftest import start_worker, tiny_sentence_transformer

WORDS = "the cat sat on the mat and the dog ran in the garden while".split()
BOUND_MIB = 1536


@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
    tokenizer, ids = tiny_families.xlm_roberta_tokenizer()
    tokenizer.model_max_length = 8192
    config = tiny_families.xlm_roberta_config(tokenizer, ids)
    config.max_position_embeddings = 8196
    config.hidden_size, config.num_attention_heads, config.intermediate_size = 64, 2, 128
    return tiny_sentence_transformer(tmp_path_factory.mktemp("long") / "m3-shaped", config, tokenizer,
                                     pooling="cls", max_seq_length=8192)


def document(words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(words))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_32_long_documents_of_mixed_lengths_in_bounded_memory_equal_to_sentence_transformers(long_model, dtype):
    from sentence_transformers import SentenceTransformer

    texts = [document(6000 - 500 * (i % 8)) for i in range(32)] + ["a short query", "another"]
    running = start_worker(MODEL_NAMES=str(long_model), SERVED_MODEL_NAMES="long", DTYPES=dtype, BATCH_SIZES="32")
    process, peak, sampling = psutil.Process(), [0], [True]

    def sample() -> None:
        while sampling[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    try:
        running.run({"model": "long", "input": "warm"})
        idle = process.memory_info().rss
        sampler = threading.Thread(target=sample)
        sampler.start()
        output = running.run({"model": "long", "input": texts}, timeout=600)
        sampling[0] = False
        sampler.join()
    finally:
        running.close()
    grown = (peak[0] - idle) / 2**20
    print(f"{dtype}: {grown:.0f} MiB over idle, {output['usage']['prompt_tokens']} tokens")
    assert grown < BOUND_MIB, f"{grown:.0f} MiB"
    got = np.array([item["embedding"] for item in output["data"]])
    reference = SentenceTransformer(str(long_model), device="cpu")
    picked = [0, 3, 7, 32, 33]  # the longest, two shorter ones, the short texts
    expected = np.stack([reference.encode([texts[i]], normalize_embeddings=True)[0] for i in picked])
    tolerance = 1e-4 if dtype == "float32" else 2e-2
    assert np.abs(got[picked] - expected).max() <= tolerance
