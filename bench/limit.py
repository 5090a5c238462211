"""The whole path against the CPU's limit, at bfloat16, for all-MiniLM-L6-v2, in one run.

The limit: each text's FLOPs (its real tokens through every linear layer, and its attention)
at the peak of a bfloat16 matrix product of the model's feed-forward shape, measured here in
the same run. Then each stage of the path, on the same texts, as texts/s and as a fraction
of that limit, so the gap between two stages is what the later one adds:

- the linear layers alone, on the batches' real tokens (the worker's packed kernels);
- the forward pass (the worker's: packed layers, real tokens only), on texts tokenized ahead;
- sentence-transformers' encode with that model: tokenization, the forward pass, pooling
  and normalising in line, one batch after another;
- the in-process engine: Infinity's queue and threads (tokenization beside the forward pass);
- the local endpoint: HTTP, JSON, the job handler, the service.

Two workloads: short sentences (30 words, 8 a request, 16 at once) and mixed documents
(20-400 words, 4 a request, 8 at once). Interleaved rounds, medians, every round shown.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from common import MODEL, corpus
from throughput import measure

BATCH = 32


def _workloads(scale: float) -> dict[str, tuple[list[list[str]], int]]:
    import workloads

    short = corpus(max(64, int(960 * scale)))
    mixed = [texts for _, texts in workloads.requests_for(workloads.WORKLOADS[0], max(scale, 1.0) * 2)]
    return {"short sentences, 8 x c16": ([short[i:i + 8] for i in range(0, len(short), 8)], 16),
            "mixed documents, 4 x c8": (mixed, 8)}


def text_flop(config, lengths: list[int]) -> int:
    """The FLOPs of texts of these real-token `lengths` through an encoder of `config`: every
    linear layer, and attention's two products."""
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return sum(layers * (2 * n * (4 * hidden * hidden + 2 * hidden * inner) + 4 * n * n * hidden) for n in lengths)


def matmul_peak(rows: int, hidden: int, inner: int) -> float:
    """FLOP/s of a bfloat16 matrix product of the feed-forward's shape, the best of 5 tries."""
    import torch

    a = torch.randn(rows, hidden, dtype=torch.bfloat16)
    b = torch.randn(hidden, inner, dtype=torch.bfloat16)
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(20):
            a @ b
        best = max(best, 2 * rows * hidden * inner * 20 / (time.perf_counter() - started))
    return best


def limit(rounds: int = 3, scale: float = 1.0) -> dict:
    import torch
    from huggingface_hub import snapshot_download
    from sentence_transformers import SentenceTransformer

    from embedding_worker.engine.cpu.kernels import pack_linear_layers
    from embedding_worker.engine.cpu.real_tokens import compute_on_real_tokens
    from servers import Targets

    model = SentenceTransformer(snapshot_download(MODEL, local_files_only=True), device="cpu").to(torch.bfloat16)
    pack_linear_layers(model)
    compute_on_real_tokens(model)
    config = model[0].auto_model.config
    hidden, inner = config.hidden_size, config.intermediate_size
    linears = [m for m in model.modules() if type(m).__name__ == "PackedLinear"]
    prepared = {}
    for name, (requests, concurrency) in _workloads(scale).items():
        texts = [t for request in requests for t in request]
        batches = [model.tokenize(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)]
        lengths = [n for b in batches for n in b["attention_mask"].sum(1).tolist()]
        flop = text_flop(config, lengths)
        rows = int(statistics.mean(int(b["attention_mask"].sum()) for b in batches))
        prepared[name] = {"requests": requests, "concurrency": concurrency, "texts": texts, "batches": batches,
                          "flop": flop, "rows": rows}

    def linear_layers(batches) -> float:
        inputs = [(torch.randn(int(b["attention_mask"].sum()), m.in_features, dtype=torch.bfloat16), m)
                  for b in batches for m in linears]
        started = time.perf_counter()
        with torch.inference_mode():
            for x, m in inputs:
                m(x)
        return time.perf_counter() - started

    def forward(batches) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                model.forward(dict(b))
        return time.perf_counter() - started

    def encode(texts) -> float:
        started = time.perf_counter()
        model.encode(texts, batch_size=BATCH, normalize_embeddings=True)
        return time.perf_counter() - started

    found: dict[str, dict[str, list[float]]] = {name: {} for name in prepared}

    async def run() -> None:
        targets = Targets(["in-process engine", "local endpoint"], "bfloat16")
        await targets.start()
        try:
            for data in prepared.values():  # warm every stage once
                forward(data["batches"][:2])
                encode(data["texts"][:BATCH])
            for _ in range(rounds):
                for name, data in prepared.items():
                    count = len(data["texts"])
                    stages = found[name]
                    stages.setdefault("limit", []).append(matmul_peak(data["rows"], hidden, inner) / (data["flop"] / count))
                    stages.setdefault("linear layers alone", []).append(count / linear_layers(data["batches"]))
                    stages.setdefault("forward pass", []).append(count / forward(data["batches"]))
                    stages.setdefault("sentence-transformers' encode", []).append(count / encode(data["texts"]))
                    for target in ("in-process engine", "local endpoint"):
                        row = await measure(targets, target, data["requests"], data["concurrency"])
                        stages.setdefault(target, []).append(row["sentences_per_s"])
        finally:
            await targets.stop()

    asyncio.run(run())
    results = {}
    for name, stages in found.items():
        limits = stages["limit"]
        results[name] = {
            "texts": len(prepared[name]["texts"]),
            "gflop_per_text": round(prepared[name]["flop"] / len(prepared[name]["texts"]) / 1e9, 3),
            "stages": {stage: {"texts_per_s": round(statistics.median(values), 1),
                               "of_limit": round(statistics.median(v / lim for v, lim in zip(values, limits)), 2),
                               "of_limit_by_round": [round(v / lim, 2) for v, lim in zip(values, limits)]}
                       for stage, values in stages.items()}}
    return {"dtype": "bfloat16", "threads": torch.get_num_threads(), "rounds": rounds, "workloads": results}
