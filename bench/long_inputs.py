"""Long documents, this worker beside Infinity's own server: 32 documents of 512, 2,048 and
8,192 tokens in one request, to a tiny model of BGE-M3's shape (XLM-R, 8,194 positions, 64
dimensions, 2 layers: the tests' `long_model`, so attention, not weights, decides memory),
and one row at BGE-M3's real width and depth (XLM-R large: 24 layers, 1,024 dimensions, 16
heads, random weights) at 2,048 tokens. Both at bfloat16, one process each, up side by side
and sent each case in turn (interleaved rounds); each server's peak RSS over idle sampled
every 5 ms; a server past KILL_AT_GB is stopped there (this machine has 24 GiB: the row says
how far it got)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from common import ENV, ROOT, free_port

sys.path.insert(0, str(ROOT / "tests"))

KILL_AT_GB = 12.0
DOCUMENTS = 32
WORDS = "the cat sat on the mat and the dog ran in the garden while".split()


def m3_shaped(folder: Path, hidden: int = 64, heads: int = 2, inner: int = 128, layers: int = 2) -> Path:
    """XLM-R reading 8,194 positions, random weights, the tests' small tokenizer: BGE-M3's
    shape at the given width and depth (its real one: 1,024, 16 heads, 4,096, 24 layers)."""
    import tiny_families
    from conftest import tiny_sentence_transformer

    tokenizer, ids = tiny_families.xlm_roberta_tokenizer()
    tokenizer.model_max_length = 8192
    config = tiny_families.xlm_roberta_config(tokenizer, ids)
    config.max_position_embeddings = 8196
    config.hidden_size, config.num_attention_heads, config.intermediate_size = hidden, heads, inner
    config.num_hidden_layers = layers
    return tiny_sentence_transformer(folder, config, tokenizer, pooling="cls", max_seq_length=8192)


def documents(model: Path, tokens: int) -> tuple[list[str], int]:
    """DOCUMENTS texts of up to `tokens` tokens each (special tokens included), and their
    tokens in all (counted here: Infinity's server counts characters)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    words = max(1, tokens)
    while len(tokenizer(" ".join(WORDS[i % len(WORDS)] for i in range(words)))["input_ids"]) > tokens:
        words = int(words * 0.97)
    text = " ".join(WORDS[i % len(WORDS)] for i in range(words))
    return [text] * DOCUMENTS, DOCUMENTS * len(tokenizer(text)["input_ids"])


class Peak:
    def __init__(self, pid: int, kill_at: float) -> None:
        self.process, self.kill_at = psutil.Process(pid), kill_at
        self.idle = self.peak = self.process.memory_info().rss
        self.killed = False
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while self._running:
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            if rss - self.idle > self.kill_at * 2**30:
                self.killed = True
                self.process.kill()
                return
            time.sleep(0.005)

    def stop(self) -> float:
        self._running = False
        self._thread.join()
        return (self.peak - self.idle) / 2**30


def _start_worker(models: dict[str, Path]) -> tuple[subprocess.Popen, callable]:
    port = free_port()
    variables = {"MODEL_NAMES": ";".join(map(str, models.values())), "SERVED_MODEL_NAMES": ";".join(models),
                 "DTYPES": "bfloat16", "BATCH_SIZES": str(DOCUMENTS), **({"MEMORY_TRIM_INTERVAL": "0.2"} if "MEMORY_TRIM_INTERVAL" not in ENV else {}),
                 "MAX_OUTPUT_VALUES": "100000000"}
    server = subprocess.Popen([sys.executable, "src/local_endpoint.py", "--port", str(port)], cwd=ROOT,
                              env={**ENV, **variables}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v2/local"
    _wait(server, f"{base}/health")

    def embed(model: str, texts: list[str]) -> None:
        reply = httpx.post(f"{base}/runsync", json={"input": {"model": model, "input": texts}}, timeout=1800).json()
        while reply.get("status") in ("IN_QUEUE", "IN_PROGRESS"):  # as RunPod's /runsync, past its wait
            time.sleep(0.5)
            reply = httpx.get(f"{base}/status/{reply['id']}", timeout=60).json()
        if reply.get("status") != "COMPLETED":
            raise RuntimeError(str(reply.get("error") or reply)[:200])

    return server, embed


def _start_infinity(models: dict[str, Path]) -> tuple[subprocess.Popen, callable]:
    from peers import ensure_infinity_server

    python = ensure_infinity_server()
    port = free_port()
    per_model = [arg for name, path in models.items() for arg in (
        "--model-id", str(path), "--served-model-name", name, "--dtype", "bfloat16", "--engine", "torch",
        "--device", "cpu", "--batch-size", str(DOCUMENTS))]
    server = subprocess.Popen([str(python), "-m", "infinity_emb.cli", "v2", *per_model, "--port", str(port),
                               "--no-model-warmup", "--log-level", "warning"],
                              cwd=ROOT, env={**ENV, "INFINITY_ANONYMOUS_USAGE_STATS": "0"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    _wait(server, f"{base}/health")

    def embed(model: str, texts: list[str]) -> None:
        httpx.post(f"{base}/embeddings", json={"model": model, "input": texts}, timeout=1800).raise_for_status()

    return server, embed


def _wait(server: subprocess.Popen, probe: str) -> None:
    deadline = time.time() + 600
    while time.time() < deadline and server.poll() is None:
        try:
            if httpx.get(probe, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"{probe} did not come up")


def long_inputs(rounds: int = 3) -> dict:
    """Both servers up side by side; each case sent to one, then the other, `rounds` times
    (the large row once: it takes minutes); the median time, every round's shown."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        models = {"m3-tiny": m3_shaped(scratch / "m3-tiny"),
                  "m3-large": m3_shaped(scratch / "m3-large", hidden=1024, heads=16, inner=4096, layers=24)}
        cases = [("m3-tiny", 512), ("m3-tiny", 2048), ("m3-tiny", 8192), ("m3-large", 2048)]
        texts = {case: documents(models[case[0]], case[1]) for case in cases}
        rows = {case: {"model": case[0], "tokens_per_document": case[1], "documents": DOCUMENTS} for case in cases}
        starts = {"worker": _start_worker, "infinity server": _start_infinity}
        servers = {label: start(models) for label, start in starts.items()}
        try:
            for case in cases:
                batch, tokens = texts[case]
                runs: dict[str, list[dict]] = {label: [] for label in servers}
                for _ in range(1 if case[0] == "m3-large" else rounds):
                    for label in servers:
                        server, embed = servers[label]
                        if server.poll() is not None:  # stopped past KILL_AT_GB last time
                            server, embed = servers[label] = starts[label](models)
                        runs[label].append(_one(server, embed, case[0], batch, tokens))
                for label, measured in runs.items():
                    seconds = sorted(run["seconds"] for run in measured)
                    median = seconds[len(seconds) // 2]
                    answered = all(run["outcome"] == "answered" for run in measured)
                    rows[case][label] = {"peak_gb": max(run["peak_gb"] for run in measured),
                                         "seconds": median, "seconds_by_round": [run["seconds"] for run in measured],
                                         "tokens_per_s": round(tokens / median) if answered else None,
                                         "outcome": next((run["outcome"] for run in measured
                                                          if run["outcome"] != "answered"), "answered")}
                print(case, rows[case], flush=True)
        finally:
            for server, _ in servers.values():
                server.kill()
                server.wait(60)
    return {"kill_at_gb": KILL_AT_GB, "rounds": rounds, "rows": list(rows.values())}


def _one(server: subprocess.Popen, embed, model: str, batch: list[str], tokens: int) -> dict:
    from test_hostile_inputs import settle

    embed(model, ["warm"])
    settle(server.pid)
    peak = Peak(server.pid, KILL_AT_GB)
    started = time.perf_counter()
    try:
        embed(model, batch)
        outcome = "answered"
    except Exception as exc:  # noqa: BLE001 - what the peer did is the result
        outcome = f"{type(exc).__name__}: {str(exc)[:120]}"
    seconds = time.perf_counter() - started
    grown = peak.stop()
    if peak.killed:
        outcome = f"stopped past {KILL_AT_GB:g} GB over idle"
    return {"peak_gb": round(grown, 2), "seconds": round(seconds, 2), "outcome": outcome}


if __name__ == "__main__":
    print(long_inputs())
