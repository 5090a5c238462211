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


def embed_measured(running, model: str, texts: list[str]) -> tuple[dict, float]:
    """The worker's answer to one embed job of `texts`, and how far (MiB) this process's
    memory rose over its idle level while it ran (sampled every 5 ms)."""
    process, peak, sampling = psutil.Process(), [0], [True]

    def sample() -> None:
        while sampling[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    running.run({"model": model, "input": "warm"})
    idle = process.memory_info().rss
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        output = running.run({"model": model, "input": texts}, timeout=600)
    finally:
        sampling[0] = False
        sampler.join()
    return output, (peak[0] - idle) / 2**20


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_32_long_documents_of_mixed_lengths_in_bounded_memory_equal_to_sentence_transformers(long_model, dtype):
    from sentence_transformers import SentenceTransformer

    texts = [document(6000 - 500 * (i % 8)) for i in range(32)] + ["a short query", "another"]
    running = start_worker(MODEL_NAMES=str(long_model), SERVED_MODEL_NAMES="long", DTYPES=dtype, BATCH_SIZES="32")
    try:
        output, grown = embed_measured(running, "long", texts)
    finally:
        running.close()
    print(f"{dtype}: {grown:.0f} MiB over idle, {output['usage']['prompt_tokens']} tokens")
    assert grown < BOUND_MIB, f"{grown:.0f} MiB"
    got = np.array([item["embedding"] for item in output["data"]])
    reference = SentenceTransformer(str(long_model), device="cpu")
    picked = [0, 3, 7, 32, 33]  # the longest, two shorter ones, the short texts
    expected = np.stack([reference.encode([texts[i]], normalize_embeddings=True)[0] for i in picked])
    tolerance = 1e-4 if dtype == "float32" else 2e-2
    assert np.abs(got[picked] - expected).max() <= tolerance


def test_a_batch_past_max_batch_tokens_runs_in_halves_with_the_same_vectors(long_model):
    """MAX_BATCH_TOKENS bounds the padded tokens of each forward pass: 8 documents of up to
    8,192 tokens (one batch by BATCH_SIZES) run as passes of at most 16,384 padded tokens."""
    import torch

    texts = [document(6000 - 700 * i) for i in range(8)]
    seen: list[int] = []

    def record(module, inputs):
        if inputs and hasattr(inputs[0], "shape") and inputs[0].dim() == 2:
            seen.append(inputs[0].numel())

    outputs = {}
    for budget in ("16384", "0"):
        running = start_worker(MODEL_NAMES=str(long_model), SERVED_MODEL_NAMES="long", BATCH_SIZES="32",
                               MAX_BATCH_TOKENS=budget)
        try:
            replica = running.registry.resolve("long").engine._model_replicas[0]
            embeddings = next(m for m in replica.modules() if isinstance(m, torch.nn.Embedding))
            handle = embeddings.register_forward_pre_hook(record)
            seen.clear()
            outputs[budget] = running.run({"model": "long", "input": texts}, timeout=600)
            handle.remove()
            if budget != "0":
                assert seen and max(seen) <= 16384, seen
                assert running.registry.healthy and running.registry.resolve("long").health.oom_retries == 0
            else:
                assert max(seen) > 16384  # one pass of the whole batch
        finally:
            running.close()
    bounded = np.array([item["embedding"] for item in outputs["16384"]["data"]])
    whole = np.array([item["embedding"] for item in outputs["0"]["data"]])
    assert np.abs(bounded - whole).max() <= 1e-5


@pytest.mark.parametrize("how", ["request", "setting"])
def test_a_document_past_the_models_limit_embedded_whole_in_windows(tiny_embedder_path, how):
    """`chunked: true` (or LONG_INPUTS_CHUNKED=true): the text tokenized once and cut from its
    ids into windows of the 128 tokens the model takes less [CLS], [SEP] and the prompt's
    tokens, each window with the prompt's ids and the special tokens around it, embedded
    from those ids (the reference: the model's forward pass on them, never a decoded text);
    the vectors averaged by each window's own text tokens and normalised; short texts as they
    are; usage counts every window's tokens."""
    import torch
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(tiny_embedder_path), device="cpu")
    tokenizer = reference.tokenizer
    prompt = "query: "
    # long made-up words: the windows start inside words, where a decoded text would tokenize otherwise
    long_text = " ".join(f"{word}ization{word}ness" for word in document(300).split())
    short = "a short text"
    cls, *prompt_ids, sep = tokenizer(prompt)["input_ids"]
    ids = tokenizer(long_text)["input_ids"][1:-1]
    room = 128 - 2 - len(prompt_ids)
    windows = [ids[i:i + room] for i in range(0, len(ids), room)]
    assert any(tokenizer.convert_ids_to_tokens(w[0]).startswith("##") for w in windows[1:])

    def forward(window: list[int]) -> np.ndarray:
        row = torch.tensor([[cls, *prompt_ids, *window, sep]])
        features = {"input_ids": row, "attention_mask": torch.ones_like(row), "token_type_ids": torch.zeros_like(row)}
        with torch.no_grad():
            return reference(features)["sentence_embedding"][0].numpy()

    expected = np.average([forward(w) for w in windows], axis=0, weights=[len(w) for w in windows])
    expected /= np.linalg.norm(expected)
    variables = {"LONG_INPUTS_CHUNKED": "true"} if how == "setting" else {}
    running = start_worker(MODEL_NAMES=str(tiny_embedder_path), SERVED_MODEL_NAMES="tiny", **variables)
    try:
        body = {"model": "tiny", "input": [long_text, short], "prompt": prompt,
                **({"chunked": True} if how == "request" else {})}
        output = running.run(body)
        cut = running.run({"model": "tiny", "input": [long_text], "chunked": False})
    finally:
        running.close()
    got = np.array([item["embedding"] for item in output["data"]])
    assert len(windows) >= 4 and np.abs(got[0] - expected).max() <= 1e-5
    assert np.abs(got[1] - reference.encode([prompt + short], normalize_embeddings=True)[0]).max() <= 1e-5
    truncated = np.array(cut["data"][0]["embedding"])
    assert np.abs(truncated - reference.encode([long_text], normalize_embeddings=True)[0]).max() <= 1e-5
    # every window's tokens, the prompt's in each, as a text's: special tokens aside
    short_tokens = len(tokenizer(prompt + short)["input_ids"]) - 2
    assert output["usage"]["prompt_tokens"] == len(ids) + len(windows) * len(prompt_ids) + short_tokens


def test_a_token_budget_that_cannot_hold_one_input_of_the_model_refuses_to_start(long_model):
    from embedding_worker.errors import SettingsError
    from embedding_worker.serving.worker import batch_token_budget
    from embedding_worker.settings import WorkerSettings

    explicit = WorkerSettings(model_names=str(long_model), max_batch_tokens=4096)
    with pytest.raises(SettingsError) as refused:
        batch_token_budget(explicit, "long", 8192)
    assert str(refused.value) == ("MAX_BATCH_TOKENS: 4096 cannot hold one input of model 'long', which takes up to "
                                  "8192 tokens; set at least 8192, or 0 for no bound")
    default = WorkerSettings(model_names=str(long_model))
    assert batch_token_budget(default, "huge", 131072) == 131072  # the default rises to the model's input
    assert batch_token_budget(default, "long", 8192) == 32768
    assert batch_token_budget(WorkerSettings(model_names=str(long_model), max_batch_tokens=0), "long", 8192) is None


def test_the_default_token_budget_is_sized_from_the_models_shape_and_the_devices_free_memory(long_model):
    from embedding_worker.engine.loading import activation_bytes_per_token
    from embedding_worker.serving.worker import batch_token_budget
    from embedding_worker.settings import WorkerSettings

    large = {"hidden_size": 1024, "intermediate_size": 4096}  # XLM-R large, BGE-M3
    per_token = activation_bytes_per_token(large, "bfloat16")
    assert per_token == 2 * (6 * 1024 + 2 * 4096)
    assert activation_bytes_per_token({"text_config": large}, "float32") == 2 * per_token
    assert activation_bytes_per_token({"model_type": "unknown"}, "float32") is None
    assert activation_bytes_per_token(large, "bfloat16", 8192) == per_token + 8192  # its row of the mask
    default = WorkerSettings(model_names=str(long_model))
    assert batch_token_budget(default, "m3", 8192, per_token, 80 * 2**30) == 32768  # plenty: the default
    assert batch_token_budget(default, "m3", 8192, per_token, 2 * 2**30) == 18724  # a quarter of 2 GiB
    assert batch_token_budget(default, "m3", 8192, per_token, 2**28) == 8192  # never below one input
    explicit = WorkerSettings(model_names=str(long_model), max_batch_tokens=65536)
    assert batch_token_budget(explicit, "m3", 8192, per_token, 2**28) == 65536  # as set


def test_free_memory_is_the_least_of_the_systems_and_the_containers(tmp_path):
    from embedding_worker.engine.cpu.memory import available_memory

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 25000000 kB\nMemAvailable:   20000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert available_memory(cgroup, meminfo) == 20000000 * 1024
    (cgroup / "memory.max").write_text("8589934592\n")
    (cgroup / "memory.current").write_text("2147483648\n")
    assert available_memory(cgroup, meminfo) == 6 * 2**30
    (cgroup / "memory.max").write_text("max\n")
    assert available_memory(cgroup, meminfo) == 20000000 * 1024


@pytest.fixture(scope="module")
def long_qwen3(tmp_path_factory):
    """A tiny Qwen3 embedder (last-token pooling, left padding) reading 8,192 positions:
    the LLM-based embedders' attention goes through transformers' attention interface."""
    tokenizer, ids = tiny_families.qwen3_tokenizer()
    tokenizer.model_max_length = 8192
    config = tiny_families.qwen3_config(tokenizer, ids)
    config.max_position_embeddings = 8192
    return tiny_sentence_transformer(tmp_path_factory.mktemp("long-qwen3") / "qwen3", config, tokenizer,
                                     pooling="lasttoken", max_seq_length=8192)


def test_llm_embedders_attention_on_mixed_lengths_holds_memory_linear_in_length(long_qwen3):
    """Texts of different lengths need a padding mask, and a masked attention on a CPU is
    torch's plain kernel: the 5 texts of ~6,000 tokens a pass takes (MAX_BATCH_TOKENS) would
    hold 5 x 2 heads x 6,000^2 floats (1.3 GiB) at once, and as much again for the mask made
    additive; in blocks, the worker holds far less, with the same vectors."""
    from sentence_transformers import SentenceTransformer

    texts = [document(4800 - 300 * i) for i in range(8)] + ["a short query"]
    running = start_worker(MODEL_NAMES=str(long_qwen3), SERVED_MODEL_NAMES="qwen3", DTYPES="float32",
                           BATCH_SIZES="16")
    try:
        output, grown = embed_measured(running, "qwen3", texts)
    finally:
        running.close()
    print(f"{grown:.0f} MiB over idle, {output['usage']['prompt_tokens']} tokens")
    assert output["usage"]["prompt_tokens"] > 40000
    assert grown < 700, f"{grown:.0f} MiB"  # 1,036 MiB with the whole masked attention at once
    got = np.array([item["embedding"] for item in output["data"]])
    reference = SentenceTransformer(str(long_qwen3), device="cpu")
    picked = [0, 7, 8]
    expected = np.stack([reference.encode([texts[i]], normalize_embeddings=True)[0] for i in picked])
    assert np.abs(got[picked] - expected).max() <= 1e-4


@pytest.fixture(scope="module")
def long_modernbert(tmp_path_factory):
    """A tiny ModernBERT (global attention every other layer, a sliding window of 16 in the
    others) reading 8,192 positions."""
    tokenizer, ids = tiny_families.modernbert_tokenizer()
    tokenizer.model_max_length = 8192
    config = tiny_families.modernbert_config(tokenizer, ids)
    config.max_position_embeddings, config.num_hidden_layers = 8192, 4
    return tiny_sentence_transformer(tmp_path_factory.mktemp("long-modernbert") / "modernbert", config, tokenizer,
                                     max_seq_length=8192)


def test_modernbert_on_real_tokens_holds_memory_linear_in_length_with_the_same_vectors(long_modernbert):
    """The padded ModernBERT on a CPU holds two tokens x tokens masks per text and a tokens x
    tokens matrix per head: 5 texts of ~6,000 tokens a pass, 2 GiB and more. On real tokens,
    global attention through the flash kernel, the sliding window a block at a time."""
    from sentence_transformers import SentenceTransformer

    texts = [document(4800 - 300 * i) for i in range(8)] + ["a short query", document(300)]
    running = start_worker(MODEL_NAMES=str(long_modernbert), SERVED_MODEL_NAMES="modernbert", DTYPES="float32",
                           BATCH_SIZES="16")
    try:
        output, grown = embed_measured(running, "modernbert", texts)
        short = running.run({"model": "modernbert", "input": ["a short query", document(40), document(90)]})
    finally:
        running.close()
    print(f"{grown:.0f} MiB over idle, {output['usage']['prompt_tokens']} tokens")
    assert output["usage"]["prompt_tokens"] > 40000
    assert grown < 700, f"{grown:.0f} MiB"
    reference = SentenceTransformer(str(long_modernbert), device="cpu")
    got = np.array([item["embedding"] for item in output["data"]])
    picked = [0, 7, 8, 9]
    expected = np.stack([reference.encode([texts[i]], normalize_embeddings=True)[0] for i in picked])
    assert np.abs(got[picked] - expected).max() <= 1e-4
    batch = ["a short query", document(40), document(90)]  # padded to 90-odd: on real tokens too
    got_short = np.array([item["embedding"] for item in short["data"]])
    assert np.abs(got_short - reference.encode(batch, normalize_embeddings=True)).max() <= 1e-4
