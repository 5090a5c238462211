"""LLM rerankers (Qwen3-Reranker): a causal LM saved as the real one is (a `Qwen3ForCausalLM`
and its tokenizer, no sentence-transformers files) deploys by its folder as a reranker, and
its scores equal the model card's own scoring code at float32, with the family's default
instruction, a deployment's (MODEL_PROMPTS "instruction") and a request's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tiny_families
from conftest import start_worker

QUERY = "what is the capital of France?"
DOCS = ["The capital of France is Paris.", "Rome is in Italy.", "the cat sat on the mat", "Paris, France"]
DEPLOYED_INSTRUCTION = "Judge whether the passage names a city"


@pytest.fixture(scope="module")
def qwen3_reranker(tmp_path_factory):
    from transformers import Qwen3ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "yes", "no"]
    tokenizer, ids = tiny_families.bpe_tokenizer(specials, "$A <|endoftext|>", "<|endoftext|>", padding_side="left",
                                                 eos_token="<|endoftext|>")
    folder = tmp_path_factory.mktemp("qwen3-reranker") / "model"
    torch.manual_seed(7)
    config = tiny_families.qwen3_config(tokenizer, ids, architectures=["Qwen3ForCausalLM"])
    Qwen3ForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def card_scores(folder, query: str, docs: list[str], instruction: str | None = None) -> np.ndarray:
    """The Qwen3-Reranker model card's scoring, step by step: its prompt around each pair,
    left padding, the last position's logits of "yes" and "no", a softmax over the two."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    no, yes = tokenizer.convert_tokens_to_ids("no"), tokenizer.convert_tokens_to_ids("yes")
    max_length = 8192
    prefix = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
              "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prefix_tokens = tokenizer.encode(prefix, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(suffix, add_special_tokens=False)
    task = instruction or "Given a web search query, retrieve relevant passages that answer the query"
    pairs = [f"<Instruct>: {task}\n<Query>: {query}\n<Document>: {doc}" for doc in docs]
    inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                       max_length=max_length - len(prefix_tokens) - len(suffix_tokens))
    for i, ids in enumerate(inputs["input_ids"]):
        inputs["input_ids"][i] = prefix_tokens + ids + suffix_tokens
    inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1, :]
    pair = torch.nn.functional.log_softmax(torch.stack([logits[:, no], logits[:, yes]], dim=1), dim=1)
    return pair[:, 1].exp().numpy()


@pytest.fixture(scope="module")
def served(qwen3_reranker):
    running = start_worker(MODEL_NAMES=f"{qwen3_reranker};{qwen3_reranker}", SERVED_MODEL_NAMES="qwen3;instructed",
                           MODEL_PROMPTS=json.dumps({"instructed": {"instruction": DEPLOYED_INSTRUCTION}}))
    yield running
    running.close()


def scores_of(output) -> np.ndarray:
    body = output[0] if isinstance(output, list) else output
    assert "results" in body, body
    found = sorted(body["results"], key=lambda r: r["index"])
    return np.array([r["relevance_score"] for r in found])


@pytest.mark.parametrize("model, instruction, expected_instruction", [
    ("qwen3", None, None),  # the family's own instruction
    ("instructed", None, DEPLOYED_INSTRUCTION),  # the deployment's
    ("instructed", "Find recipes", "Find recipes"),  # the request's wins
])
def test_scores_equal_the_model_cards_code(served, qwen3_reranker, model, instruction, expected_instruction):
    expected = card_scores(qwen3_reranker, QUERY, DOCS, expected_instruction)
    body = {"model": model, "query": QUERY, "docs": DOCS, **({"instruction": instruction} if instruction else {})}
    standard = scores_of(served.run(body))
    assert np.abs(standard - expected).max() <= 1e-4
    cohere_body = {("documents" if key == "docs" else key): value for key, value in body.items()}
    openai = served.run({"openai_route": "/v1/rerank", "openai_input": cohere_body})
    assert np.abs(scores_of(openai) - expected).max() <= 1e-4
    ranked = (openai[0] if isinstance(openai, list) else openai)["results"]
    assert [r["index"] for r in ranked] == list(np.argsort(-expected, kind="stable"))


def test_raw_scores_are_the_log_odds_and_the_model_reranks_only(served, qwen3_reranker):
    expected = card_scores(qwen3_reranker, QUERY, DOCS)
    raw = scores_of(served.run({"model": "qwen3", "query": QUERY, "docs": DOCS, "raw_scores": True}))
    assert np.abs(raw - np.log(expected / (1 - expected))).max() <= 1e-3
    cards = {c["id"]: c["stats"] for c in served.run({"openai_route": "/v1/models"})[0]["data"]}
    assert cards["qwen3"]["capabilities"] == ["rerank"]
    embed = served.run({"model": "qwen3", "input": "x"})
    assert list(embed) == ["error"] and "cannot embed; it supports: rerank" in embed["error"]
