"""Each precision side by side with Infinity's server: all-MiniLM-L6-v2 through the worker's
local endpoint and through Infinity's own server, each at DTYPES float32, bfloat16 and int8
(six servers up at once), in interleaved rounds.

For each: short sentences/s (30 words, 8 a request, 16 at once), that as a fraction of the
CPU's limit (`limit.py`'s: the texts' FLOPs at the bfloat16 matrix-product peak measured in
the same round, so int8 may pass 1), and the vectors each server returns for the int8 gate's
corpus against sentence-transformers' at float32: min and mean cosine, and the share of
each sentence's top-10 neighbours that stay the same.
"""

from __future__ import annotations

import asyncio
import statistics

import numpy as np
import orjson

from common import MODEL, corpus, cosines
from limit import matmul_peak, text_flop
from servers import Targets
from throughput import measure

PRECISIONS = ("float32", "bfloat16", "int8")
SERVERS = ("local endpoint", "infinity server")


async def _vectors(targets: Targets, name: str, texts: list[str]) -> np.ndarray:
    if name == "infinity server":
        reply = await targets.client.post(f"{targets.urls[name]}/embeddings",
                                          json={"model": MODEL, "input": texts, "encoding_format": "float"})
        data = orjson.loads(reply.content)["data"]
    else:
        reply = await targets.client.post(f"{targets.urls[name]}/runsync",
                                          json={"input": {"model": MODEL, "input": texts}})
        data = orjson.loads(reply.content)["output"]["data"]
    matrix = np.array([item["embedding"] for item in sorted(data, key=lambda item: item["index"])], dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def precisions(rounds: int = 3, scale: float = 1.0) -> dict:
    from huggingface_hub import snapshot_download
    from sentence_transformers import SentenceTransformer

    from embedding_worker.compact import CALIBRATION_TEXTS
    from embedding_worker.engine.cpu.int8_gate import neighbour_overlap

    reference_model = SentenceTransformer(snapshot_download(MODEL, local_files_only=True), device="cpu")
    reference = reference_model.encode(CALIBRATION_TEXTS, normalize_embeddings=True)
    texts = corpus(max(64, int(960 * scale)))
    requests = [texts[i:i + 8] for i in range(0, len(texts), 8)]
    lengths = reference_model.tokenize(texts)["attention_mask"].sum(1).tolist()
    config = reference_model[0].auto_model.config
    flop_per_text = text_flop(config, lengths) / len(texts)
    rows = 32 * int(statistics.mean(lengths))
    speeds: dict[tuple[str, str], list[float]] = {}
    limits: list[float] = []
    quality: dict[tuple[str, str], dict] = {}

    async def run() -> None:
        fleet = {precision: Targets(list(SERVERS), precision) for precision in PRECISIONS}
        try:
            for targets in fleet.values():
                await targets.start()
            for precision, targets in fleet.items():
                for name in SERVERS:
                    vectors = await _vectors(targets, name, CALIBRATION_TEXTS)
                    cosine = cosines(reference, vectors)
                    quality[precision, name] = {"min_cosine": round(float(cosine.min()), 4),
                                                "mean_cosine": round(float(cosine.mean()), 4),
                                                "top10_same": round(neighbour_overlap(reference, vectors), 3)}
                    await measure(targets, name, requests[:4], 16)  # warm
            for _ in range(rounds):
                limits.append(matmul_peak(rows, config.hidden_size, config.intermediate_size) / flop_per_text)
                for precision, targets in fleet.items():
                    for name in SERVERS:
                        row = await measure(targets, name, requests, 16)
                        speeds.setdefault((precision, name), []).append(row["sentences_per_s"])
        finally:
            for targets in fleet.values():
                await targets.stop()

    asyncio.run(run())
    worker_bf16 = speeds["bfloat16", "local endpoint"]
    table = []
    for (precision, name), values in speeds.items():
        peer = speeds[precision, "infinity server"]
        table.append({
            "precision": precision, "server": name, "sentences_per_s": round(statistics.median(values), 1),
            "by_round": [round(v, 1) for v in values],
            "of_limit": round(statistics.median(v / lim for v, lim in zip(values, limits)), 2),
            "vs_worker_bfloat16": round(statistics.median(v / b for v, b in zip(values, worker_bf16)), 2),
            "vs_infinity_same_precision": round(statistics.median(v / p for v, p in zip(values, peer)), 2),
            **quality[precision, name]})
    return {"texts": len(texts), "gflop_per_text": round(flop_per_text / 1e9, 3), "rounds": rounds,
            "limit_texts_per_s": round(statistics.median(limits), 1), "rows": table}
