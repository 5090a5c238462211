"""A corpus through `src/corpus.py`: what the client costs, and its memory.

- Rows/s of 20,000 short rows (all-MiniLM-L6-v2 at this CPU's default precision) through the
  local endpoint by each `--via`, against the in-process engine's ceiling (the worker's
  service, no HTTP, 128 rows a call, 8 at once) and a plain sequential loop with the OpenAI
  SDK (128 rows a call), in interleaved rounds; the client shares the two cores with the
  worker, as every load client here does.
- The client's peak memory on 100,000 and 1,000,000 short rows against a stand-in endpoint
  that answers at once (16-dimensional vectors): it streams, so memory stays flat.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from common import ENV, MODEL, ROOT, corpus, free_port, worker_for

ROWS = 20_000


def _parquet(path: Path, count: int, words: int = 12) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = corpus(min(count, 5000), words=words)
    pq.write_table(pa.table({"id": list(range(count)), "text": [texts[i % len(texts)] for i in range(count)]}), path)
    return path


def _client(source: Path, output: Path, endpoint: str, via: str, model: str = MODEL) -> tuple[float, int]:
    """Seconds the client took and its peak RSS (bytes), sampled every 10 ms."""
    for stale in output.parent.glob(output.name + "*"):
        if stale.is_dir():
            for part in stale.iterdir():
                part.unlink()
            stale.rmdir()
        else:
            stale.unlink()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "src/corpus.py", str(source), str(output), "--model", model,
                                "--endpoint", endpoint, "--via", via, "--no-progress"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    if process.returncode != 0:
        raise RuntimeError(f"corpus.py failed: {process.stderr.read().decode()[-500:]}")
    return time.perf_counter() - started, peak


def _in_process(texts: list[str]) -> float:
    from embedding_worker.api.schemas import EmbeddingRequest

    worker = worker_for("torch")
    loop = asyncio.new_event_loop()
    loop.run_until_complete(worker.registry.start())
    service = worker.handler.service

    async def run() -> float:
        gate = asyncio.Semaphore(8)

        async def one(part: list[str]) -> None:
            async with gate:
                await service.embed(EmbeddingRequest(model=MODEL, input=part, encoding_format="base64"))

        started = time.perf_counter()
        await asyncio.gather(*(one(texts[i:i + 128]) for i in range(0, len(texts), 128)))
        return time.perf_counter() - started

    loop.run_until_complete(run())  # warm
    seconds = loop.run_until_complete(run())
    loop.run_until_complete(worker.registry.stop())
    loop.close()
    return seconds


def _sdk_loop(texts: list[str], base: str) -> float:
    import openai

    client = openai.OpenAI(base_url=base, api_key="local")
    started = time.perf_counter()
    for i in range(0, len(texts), 128):
        client.embeddings.create(model=MODEL, input=texts[i:i + 128])
    return time.perf_counter() - started


def _stand_in(dimension: int = 16) -> tuple[subprocess.Popen, str]:
    """An OpenAI embeddings route that answers at once with the same vector for every input."""
    port = free_port()
    code = f"""
import base64, numpy as np, orjson, uvicorn
vector = base64.b64encode(np.full({dimension}, 0.25, '<f4').tobytes()).decode()
async def app(scope, receive, send):
    if scope['type'] != 'http':
        return
    body = b''
    while True:
        message = await receive()
        body += message.get('body', b'')
        if not message.get('more_body'):
            break
    count = len(orjson.loads(body)['input'])
    answer = orjson.dumps({{'object': 'list', 'model': 'stand-in', 'usage': {{'prompt_tokens': count, 'total_tokens': count}},
                          'data': [{{'object': 'embedding', 'index': i, 'embedding': vector}} for i in range(count)]}})
    await send({{'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'application/json')]}})
    await send({{'type': 'http.response.body', 'body': answer}})
uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning')
"""
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    import httpx

    for _ in range(100):
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": ["x"]}, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return server, f"http://127.0.0.1:{port}/v1"


def backfill(rounds: int = 2, quick: bool = False) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    rows = 4000 if quick else ROWS
    source = _parquet(scratch / "corpus.parquet", rows)
    import pyarrow.parquet as pq

    texts = pq.read_table(source).column("text").to_pylist()
    port = free_port()
    server = subprocess.Popen([sys.executable, "src/local_endpoint.py", "--port", str(port)], cwd=ROOT,
                              env={**ENV, "LOCAL_MAX_RESULT_BYTES": str(512 * 2**20)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v2/bench"
    import peers

    peers.wait_until_up(server, f"{base}/health", "local endpoint")
    rates: dict[str, list[float]] = {}
    try:
        for _ in range(rounds):
            for via in ("queue", "batch", "openai"):
                endpoint = f"{base}/openai" if via == "openai" else base
                seconds, _ = _client(source, scratch / "out.parquet", endpoint, via)
                rates.setdefault(f"corpus.py --via {via}", []).append(rows / seconds)
            rates.setdefault("sequential OpenAI SDK loop", []).append(rows / _sdk_loop(texts, f"{base}/openai/v1"))
    finally:
        server.terminate()
        server.wait(60)
    ceiling = rows / _in_process(texts)
    result = {"rows": rows, "in_process_rows_per_s": round(ceiling, 1),
              "rows_per_s": {name: {"median": round(statistics.median(values), 1),
                                    "rounds": [round(v, 1) for v in values],
                                    "of_ceiling": round(statistics.median(values) / ceiling, 3)}
                             for name, values in rates.items()}}
    stand_in, url = _stand_in()
    try:
        memory = {}
        for count in ((20_000, 100_000) if quick else (100_000, 1_000_000)):
            big = _parquet(scratch / f"rows-{count}.parquet", count, words=8)
            seconds, peak = _client(big, scratch / "big.parquet", url, "openai", model="stand-in")
            memory[f"{count:,} rows"] = {"peak_mb": round(peak / 2**20, 1), "seconds": round(seconds, 1)}
        result["client_memory"] = memory
    finally:
        stand_in.terminate()
        stand_in.wait(30)
    for leftover in sorted(scratch.rglob("*"), reverse=True):
        leftover.unlink() if leftover.is_file() else leftover.rmdir()
    scratch.rmdir()
    return result


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(ROOT / "src"))
    os.environ.update({k: v for k, v in ENV.items() if k.startswith(("HF_", "TOKENIZERS"))})
    print(json.dumps(backfill(1, "--quick" in sys.argv), indent=2))
