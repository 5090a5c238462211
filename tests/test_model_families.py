"""The model families users deploy today, as tiny random models built like the real ones:
XLM-RoBERTa, ModernBERT and a Qwen3 decoder (last-token pooling, left padding) embed as
sentence-transformers does; XLM-RoBERTa and Qwen3 classifiers rerank as `CrossEncoder` does;
a tokenizer that emits inputs the model cannot take is fitted at start-up, and a model that
cannot serve fails start-up in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tiny_families
from conftest import start_worker

TEXTS = ["the cat sat on the mat.", "paris is in france.", "quantum bits talks about a passage.",
         "a dog runs past the hill. " * 3, "rome"]
QUERY, DOCS = "the cat is in france.", ["the cat sat on the mat.", "rome is in italy.", "a dog was near the hill.",
                                         "my phone talks about the document."]


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return tiny_families.embedders(root), tiny_families.rerankers(root)


@pytest.fixture(scope="module")
def served(families):
    embedders, rerankers = families
    names = {**{f"{k}-embedder": v for k, v in embedders.items()}, **{f"{k}-reranker": v for k, v in rerankers.items()}}
    running = start_worker(MODEL_NAMES=";".join(map(str, names.values())), SERVED_MODEL_NAMES=";".join(names))
    yield running
    running.close()


@pytest.mark.parametrize("family", ["xlm-roberta", "modernbert", "qwen3"])
def test_embedders_match_sentence_transformers(families, served, family):
    from sentence_transformers import SentenceTransformer

    path = families[0][family]
    expected = SentenceTransformer(str(path), device="cpu").encode(TEXTS, normalize_embeddings=True)
    output = served.run({"model": f"{family}-embedder", "input": TEXTS})
    got = np.array([item["embedding"] for item in output["data"]])
    assert np.abs(got - expected).max() <= 1e-5
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    assert "token_type_ids" not in tokenizer_config["model_input_names"]
    if family == "qwen3":
        assert tokenizer_config["padding_side"] == "left"


@pytest.mark.parametrize("family", ["xlm-roberta", "qwen3"])
def test_rerankers_match_cross_encoder(families, served, family):
    from sentence_transformers import CrossEncoder

    expected = CrossEncoder(str(families[1][family]), device="cpu").predict([(QUERY, d) for d in DOCS])
    output = served.run({"model": f"{family}-reranker", "query": QUERY, "docs": DOCS})
    got = {item["index"]: item["relevance_score"] for item in output["results"]}
    assert np.abs(np.array([got[i] for i in range(len(DOCS))]) - expected).max() <= 1e-5


def test_a_tokenizer_that_emits_token_type_ids_for_modernbert_is_fitted(families, tmp_path):
    """As a BERT tokenizer would: ModernBERT's forward takes no token_type_ids."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "modernbert"
    shutil.copytree(families[0]["modernbert"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    running = start_worker(MODEL_NAMES=str(folder), SERVED_MODEL_NAMES="m")
    try:
        output = running.run({"model": "m", "input": TEXTS})
        assert len(output["data"]) == len(TEXTS)
        expected = SentenceTransformer(str(families[0]["modernbert"]), device="cpu").encode(
            TEXTS, normalize_embeddings=True)
        assert np.abs(np.array([item["embedding"] for item in output["data"]]) - expected).max() <= 1e-5
        assert running.registry.healthy
    finally:
        running.close()


def test_a_model_that_cannot_serve_fails_start_up_in_one_line(families, tmp_path):
    from embedding_worker.errors import ModelLoadError

    from transformers import XLMRobertaConfig, XLMRobertaModel

    folder = tmp_path / "broken"
    shutil.copytree(families[0]["xlm-roberta"], folder)
    config = XLMRobertaConfig.from_pretrained(folder)
    config.vocab_size = 8  # token ids past 7 are out of the embedding table: loads, then cannot run
    XLMRobertaModel(config).save_pretrained(folder)
    with pytest.raises(ModelLoadError) as caught:
        start_worker(MODEL_NAMES=str(folder), SERVED_MODEL_NAMES="broken")
    message = str(caught.value)
    assert message.startswith("model 'broken' (XLMRobertaModel) cannot serve: its self-test failed in encode_core: ")
    assert "\n" not in message
