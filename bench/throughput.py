"""Throughput and latency: every target at the same request shapes, in interleaved rounds.

Each round runs every target once at a shape, so the machine's drift hits them alike; each
ratio is taken within its round against the round's reference, and the report gives the
median over rounds with every round's value (the spread).
"""

from __future__ import annotations

import asyncio
import statistics

import psutil

from common import drive, shaped
from servers import Targets

SHAPES = [  # (name, sentences per request, concurrency, requests per round)
    ("8 x c1", 8, 1, 40),
    ("8 x c16", 8, 16, 120),
    ("8 x c64", 8, 64, 160),
    ("256 x c1", 256, 1, 4),
]
SWEEP = [1, 4, 16, 64]  # concurrency, at 8 sentences per request, for the plot


def compare(names: list[str], shapes, scale: float, rounds: int, dtype: str,
            original_dtype: str = "auto") -> dict:
    """{target: {shape: [row per round]}}; `summarise` takes ratios within rounds."""
    runs: dict[str, dict[str, list[dict]]] = {}

    async def run_all() -> None:
        targets = Targets(names, dtype, original_dtype)
        await targets.start()
        try:
            for shape, batch, concurrency, requests in shapes:
                batches = shaped(max(2, int(requests * scale)), batch)
                for _ in range(rounds):
                    for name in names:
                        runs.setdefault(name, {}).setdefault(shape, []).append(
                            await measure(targets, name, batches, concurrency))
        finally:
            await targets.stop()

    asyncio.run(run_all())
    return runs


async def measure(targets: Targets, name: str, batches, concurrency: int) -> dict:
    await targets.renew_client()
    server = targets.process(name)
    before = server.cpu_times() if server else None
    row = await drive(targets.call(name), batches, concurrency)
    row["client_cpu_share"] = row.pop("this_process_cpu_share") if server else None
    if server:
        after = server.cpu_times()
        used = (after.user - before.user) + (after.system - before.system)
        row["server_cpu_share"] = round(used / row["seconds"] / psutil.cpu_count(), 3)
    return row


def summarise(runs: dict, reference: str) -> dict:
    results: dict[str, dict[str, dict]] = {}
    for target, shapes_runs in runs.items():
        for shape, rows in shapes_runs.items():
            base = runs[reference][shape]
            ratios = [r["sentences_per_s"] / b["sentences_per_s"] for r, b in zip(rows, base)]
            p95 = [r["p95_ms"] / b["p95_ms"] for r, b in zip(rows, base)]
            summary = {key: (statistics.median(r[key] for r in rows) if rows[0].get(key) is not None else None)
                       for key in rows[0]}
            summary.update(ratio=round(statistics.median(ratios), 3), ratio_by_round=[round(x, 3) for x in ratios],
                           p95_ratio=round(statistics.median(p95), 3), reference=reference)
            results.setdefault(target, {})[shape] = summary
    return results


def sweep(names: list[str], scale: float, dtype: str, original_dtype: str = "auto") -> dict:
    """Sentences/s against concurrency (8 sentences per request), one round, for the plot."""
    shapes = [(f"8 x c{c}", 8, c, max(24, 8 * c)) for c in SWEEP]
    runs = compare(names, shapes, scale, 1, dtype, original_dtype)
    return {name: {shape: rows[0]["sentences_per_s"] for shape, rows in shapes_runs.items()}
            for name, shapes_runs in runs.items()}


LATENCY_SHAPES = [("1 x c1", 1, 1, 200), ("8 x c1", 8, 1, 120), ("1 x c16", 1, 16, 480), ("8 x c16", 8, 16, 240)]


def latencies(runs: dict, reference: str) -> dict:
    """p50 and p95 per target and shape (medians over rounds, each round's p50 kept), and the
    p50's distance from `reference`'s in the same round, in ms."""
    results: dict[str, dict[str, dict]] = {}
    for target, shapes_runs in runs.items():
        for shape, rows in shapes_runs.items():
            base = runs[reference][shape]
            results.setdefault(target, {})[shape] = {
                "p50_ms": statistics.median(r["p50_ms"] for r in rows),
                "p95_ms": statistics.median(r["p95_ms"] for r in rows),
                "p50_by_round": [r["p50_ms"] for r in rows],
                "p50_minus_reference_ms": round(statistics.median(r["p50_ms"] - b["p50_ms"]
                                                                  for r, b in zip(rows, base)), 1),
                "reference": reference,
            }
    return results
