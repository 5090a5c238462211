"""EmbeddingGemma's shape, saved by sentence-transformers as the real one is (a Gemma3 text
encoder, mean pooling, two Dense layers, Normalize, and its query and document prompts),
deploys by its folder and answers as sentence-transformers does with each prompt; at
DTYPES=auto on a GPU it would run bfloat16, never float16 (test_device has the table)."""

from __future__ import annotations

import numpy as np
import pytest

import tiny_families
from conftest import start_worker

PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}
TEXTS = ["the cat sat on the mat", "a dog in the garden"]


@pytest.fixture(scope="module")
def embeddinggemma(tmp_path_factory):
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoModel, Gemma3TextConfig

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tokenizer, ids = tiny_families.bpe_tokenizer(specials, "<bos> $A <eos>", "<pad>", bos_token="<bos>",
                                                 eos_token="<eos>", unk_token="<unk>")
    root = tmp_path_factory.mktemp("embeddinggemma")
    torch.manual_seed(5)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
                              sliding_window=16, pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"],
                              eos_token_id=ids["<eos>"])
    AutoModel.from_config(config).eval().save_pretrained(root / "encoder")
    tokenizer.save_pretrained(root / "encoder")
    transformer = models.Transformer(str(root / "encoder"), max_seq_length=128)
    pooling = models.Pooling(32, pooling_mode="mean")
    up, down = models.Dense(32, 48, bias=False, activation_function=torch.nn.Identity()), \
        models.Dense(48, 32, bias=False, activation_function=torch.nn.Identity())
    model = SentenceTransformer(modules=[transformer, pooling, up, down, models.Normalize()], device="cpu",
                                prompts=PROMPTS)
    model.save(str(root / "model"))
    return root / "model"


def test_embeddinggemma_answers_as_sentence_transformers_with_its_prompts(embeddinggemma):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(embeddinggemma), device="cpu")
    running = start_worker(MODEL_NAMES=str(embeddinggemma), SERVED_MODEL_NAMES="embeddinggemma")
    try:
        for input_type in ("query", "document"):
            output = running.run({"model": "embeddinggemma", "input": TEXTS, "input_type": input_type})
            got = np.array([item["embedding"] for item in output["data"]])
            expected = reference.encode(TEXTS, prompt_name=input_type, normalize_embeddings=True)
            assert np.abs(got - expected).max() <= 1e-5, input_type
        cards = {c["id"]: c["stats"] for c in running.run({"openai_route": "/v1/models"})[0]["data"]}
        assert cards["embeddinggemma"]["prompts"] == ["document", "query"]
    finally:
        running.close()
