"""Retrieval-quality API: prompts and input types, truncation control, compact vectors and
the tokenize call, in both flavours, against the real engine and sentence-transformers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import EMBEDDER_ID, start_worker

TEXTS = ["What is the capital of France?", "Paris is the capital of France.", "how do rockets work"]
QUERY_PROMPT = "Represent this sentence for searching relevant passages: "


def openai(route: str, **body):
    return {"openai_route": route, "openai_input": body}


@pytest.fixture(scope="module")
def prompted_paths(embedder_path, tmp_path_factory):
    """MiniLM with prompts in its sentence-transformers config, one copy with a default."""
    paths = {}
    for name, default in (("prompted", None), ("prompted-default", "query")):
        folder = tmp_path_factory.mktemp(name) / "model"
        shutil.copytree(embedder_path, folder)
        config = json.loads((folder / "config_sentence_transformers.json").read_text())
        config.update(prompts={"query": QUERY_PROMPT, "document": "", "title": "title: "}, default_prompt_name=default)
        (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
        paths[name] = folder
    return paths


@pytest.fixture(scope="module")
def served(prompted_paths, hub_cache):
    running = start_worker(
        MODEL_NAMES=f"{prompted_paths['prompted']};{prompted_paths['prompted-default']};{EMBEDDER_ID}",
        SERVED_MODEL_NAMES=f"prompted;prompted-default;{EMBEDDER_ID}",
        MODEL_PROMPTS=json.dumps({EMBEDDER_ID: {"query": "query: ", "passage": "passage: "}}),
    )
    yield running
    running.close()


@pytest.fixture(scope="module")
def encoders(prompted_paths, embedder_path):
    from sentence_transformers import SentenceTransformer

    return {name: SentenceTransformer(str(path), device="cpu") for name, path in
            {**prompted_paths, EMBEDDER_ID: embedder_path}.items()}


def vectors(output) -> np.ndarray:
    body = output[0] if isinstance(output, list) else output
    assert "data" in body, body
    return np.array([item["embedding"] for item in body["data"]], dtype=np.float64)


@pytest.mark.parametrize("fields, encode_args", [
    ({"input_type": "query"}, {"prompt_name": "query"}),
    ({"input_type": "search_query"}, {"prompt_name": "query"}),
    ({"input_type": "document"}, {"prompt_name": "document"}),
    ({"prompt_name": "title"}, {"prompt_name": "title"}),
    ({"prompt": "custom: "}, {"prompt": "custom: "}),
    ({}, {}),
])
@pytest.mark.parametrize("flavour", ["standard", "openai"])
def test_prompts_equal_sentence_transformers(served, encoders, fields, encode_args, flavour):
    job = ({"model": "prompted", "input": TEXTS, **fields} if flavour == "standard"
           else openai("/v1/embeddings", model="prompted", input=TEXTS, **fields))
    expected = encoders["prompted"].encode(TEXTS, normalize_embeddings=True, **encode_args)
    assert np.abs(vectors(served.run(job)) - expected).max() <= 1e-5


def test_the_default_prompt_applies_unless_another_is_asked_for(served, encoders):
    model = encoders["prompted-default"]
    default = served.run({"model": "prompted-default", "input": TEXTS})
    assert np.abs(vectors(default) - model.encode(TEXTS, normalize_embeddings=True)).max() <= 1e-5
    assert np.abs(vectors(default) - model.encode(TEXTS, normalize_embeddings=True, prompt_name="query")).max() <= 1e-5
    document = served.run({"model": "prompted-default", "input": TEXTS, "input_type": "document"})
    assert np.abs(vectors(document) - model.encode(TEXTS, normalize_embeddings=True, prompt="")).max() <= 1e-5


def test_model_prompts_setting_gives_e5_style_prefixes(served, encoders):
    minilm = encoders[EMBEDDER_ID]
    query = served.run({"model": EMBEDDER_ID, "input": TEXTS, "input_type": "query"})
    assert np.abs(vectors(query) - minilm.encode(TEXTS, normalize_embeddings=True, prompt="query: ")).max() <= 1e-5
    passage = served.run({"model": EMBEDDER_ID, "input": TEXTS, "input_type": "passage"})
    assert np.abs(vectors(passage) - minilm.encode(TEXTS, normalize_embeddings=True, prompt="passage: ")).max() <= 1e-5


def test_usage_counts_the_prompt(served):
    plain = served.run({"model": "prompted", "input": TEXTS})["usage"]["prompt_tokens"]
    prompted = served.run({"model": "prompted", "input": TEXTS, "prompt": "one two three "})["usage"]["prompt_tokens"]
    assert prompted == plain + 3 * len(TEXTS)


def test_models_list_each_embedders_prompts(served):
    cards = {card["id"]: card["stats"] for card in served.run({"openai_route": "/v1/models"})[0]["data"]}
    assert cards["prompted"]["prompts"] == ["document", "query", "title"]
    assert cards[EMBEDDER_ID]["prompts"] == ["passage", "query"]


def test_a_model_without_the_asked_prompt_embeds_the_text_as_is(hub_cache, encoders):
    running = start_worker(MODEL_NAMES=EMBEDDER_ID)
    try:
        output = running.run({"model": EMBEDDER_ID, "input": TEXTS, "input_type": "query"})
        assert np.abs(vectors(output) - encoders[EMBEDDER_ID].encode(TEXTS, normalize_embeddings=True)).max() <= 1e-5
    finally:
        running.close()


BAD = {
    "unknown input_type": ({"input_type": "question"}, "input_type: Input should be 'query', 'document', "
                                                      "'search_query', 'search_document' or 'passage'"),
    "two prompt fields": ({"input_type": "query", "prompt": "x"},
                          "input_type: give at most one of input_type, prompt_name and prompt; got input_type and prompt"),
    "unknown prompt_name": ({"prompt_name": "summary"},
                            "prompt_name: 'summary' is not a prompt of model 'prompted'; its prompts: document, query, title"),
    "truncate not a boolean": ({"truncate": "no"}, "truncate: Input should be a valid boolean"),
    "prompt not a string": ({"prompt": 5}, "prompt: Input should be a valid string"),
    "prompt_name not a string": ({"prompt_name": ["query"]}, "prompt_name: Input should be a valid string"),
    "unknown encoding_format": ({"encoding_format": "int4"}, "encoding_format: Input should be 'float', 'base64', "
                                                            "'int8', 'uint8', 'binary', 'ubinary' or 'base64_float16'"),
}


@pytest.mark.parametrize("fields, message", BAD.values(), ids=BAD.keys())
@pytest.mark.parametrize("flavour", ["standard", "openai"])
def test_bad_values_fail_the_job_in_one_line_and_the_worker_serves_on(served, fields, message, flavour):
    job = ({"model": "prompted", "input": TEXTS, **fields} if flavour == "standard"
           else openai("/v1/embeddings", model="prompted", input=TEXTS, **fields))
    assert served.run(job) == {"error": message}
    assert "data" in served.run({"model": "prompted", "input": "still serving"})


def test_truncate_false_refuses_an_input_past_the_limit_naming_it(served):
    long_text = "word " * 300  # 300 tokens and more, past MiniLM's 256
    output = served.run({"model": EMBEDDER_ID, "input": ["short", long_text], "truncate": False})
    assert output == {"error": f"input: item 1 has 302 tokens; model '{EMBEDDER_ID}' takes at most 256 "
                               "(max_input_tokens); shorten it, or send truncate: true"}
    assert "data" in served.run({"model": EMBEDDER_ID, "input": ["short", long_text]})  # truncated by default
    fits = served.run({"model": EMBEDDER_ID, "input": ["word " * 254], "truncate": False})
    assert len(fits["data"]) == 1


@pytest.mark.parametrize("flavour", ["standard", "openai"])
def test_tokenize_gives_ids_and_counts_as_the_model_sees_them(served, encoders, flavour):
    job = ({"task": "tokenize", "model": EMBEDDER_ID, "input": TEXTS} if flavour == "standard"
           else openai("/v1/tokenize", model=EMBEDDER_ID, input=TEXTS))
    output = served.run(job)
    body = output[0] if flavour == "openai" else output
    tokenizer = encoders[EMBEDDER_ID].tokenizer
    assert body["object"] == "tokenize" and body["max_input_tokens"] == 256
    for item, text in zip(body["data"], TEXTS):
        assert item["tokens"] == tokenizer(text)["input_ids"] and item["count"] == len(item["tokens"])
    assert served.run({"task": "translate", "model": EMBEDDER_ID, "input": "x"}) == {
        "error": "task: 'translate' is not supported; supported: tokenize"}
    assert served.run({"task": 1, "model": EMBEDDER_ID, "input": "x"}) == {
        "error": "task: 1 is not supported; supported: tokenize"}


def test_tokenize_is_bounded_like_embeddings(served):
    at_bound = served.run({"task": "tokenize", "model": EMBEDDER_ID, "input": ["x"] * 2048})
    assert len(at_bound["data"]) == 2048
    past = served.run({"task": "tokenize", "model": EMBEDDER_ID, "input": ["x"] * 2049})
    assert past == {"error": "input: has 2049 items; the limit is 2048 (MAX_EMBED_INPUTS)"}
    assert served.run({"task": "tokenize", "model": EMBEDDER_ID, "input": []}) == {
        "error": "input: must not be an empty list"}


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
@pytest.mark.parametrize("flavour", ["standard", "openai"])
def test_binary_vectors_equal_sentence_transformers_quantization(served, encoders, precision, flavour):
    from sentence_transformers.quantization import quantize_embeddings

    job = ({"model": EMBEDDER_ID, "input": TEXTS, "encoding_format": precision} if flavour == "standard"
           else openai("/v1/embeddings", model=EMBEDDER_ID, input=TEXTS, encoding_format=precision))
    body = served.run(job)
    body = body[0] if flavour == "openai" else body
    got = [item["embedding"] for item in body["data"]]
    floats = vectors(served.run({"model": EMBEDDER_ID, "input": TEXTS}))
    assert got == quantize_embeddings(floats.astype(np.float32), precision=precision).tolist()
    assert all(isinstance(v, int) for v in got[0]) and len(got[0]) == 384 // 8


def test_dimensions_apply_before_quantisation(served):
    floats = vectors(served.run({"model": EMBEDDER_ID, "input": TEXTS, "dimensions": 64}))
    packed = served.run({"model": EMBEDDER_ID, "input": TEXTS, "dimensions": 64, "encoding_format": "ubinary"})
    assert [item["embedding"] for item in packed["data"]] == np.packbits(floats > 0, axis=-1).tolist()
    small = served.run({"model": EMBEDDER_ID, "input": TEXTS, "dimensions": 64, "encoding_format": "int8"})
    assert len(small["data"][0]["embedding"]) == 64


def test_int8_is_fixed_per_model_and_ranks_like_floats(served):
    from scipy.stats import spearmanr

    from embedding_worker.compact import CALIBRATION_TEXTS

    rng = np.random.default_rng(0)
    words = "the a river bank money loan water fish city night music band rock stone light year".split()
    docs = [" ".join(rng.choice(words, size=12)) for _ in range(200)]
    queries = [" ".join(rng.choice(words, size=4)) for _ in range(10)]
    as_floats = vectors(served.run({"model": EMBEDDER_ID, "input": queries + docs}))
    as_int8 = vectors(served.run({"model": EMBEDDER_ID, "input": queries + docs, "encoding_format": "int8"}))
    assert as_int8.min() >= -127 and as_int8.max() <= 127
    for q in range(len(queries)):
        exact, compact = as_floats[len(queries):] @ as_floats[q], as_int8[len(queries):] @ as_int8[q]
        assert spearmanr(exact, compact).statistic >= 0.97
    alone = vectors(served.run({"model": EMBEDDER_ID, "input": queries[:1], "encoding_format": "int8"}))
    assert np.array_equal(alone[0], as_int8[0])  # a vector never depends on its neighbours
    uint8 = vectors(served.run({"model": EMBEDDER_ID, "input": queries[:1], "encoding_format": "uint8"}))
    assert np.array_equal(uint8[0], as_int8[0] + 128)
    calibration = vectors(served.run({"model": EMBEDDER_ID, "input": CALIBRATION_TEXTS}))
    scale = 127 / np.abs(calibration).max()
    assert np.array_equal(as_int8, np.clip(np.rint(as_floats.astype(np.float32) * scale), -127, 127))
