"""Benchmark the worker side by side with its engine, in one run, and write a report.

    python bench/run.py                # full run (about 10 minutes on 2 CPU cores)
    python bench/run.py --quick        # fewer requests, for a smoke run
    python bench/run.py --steps load   # re-run some steps, merged into the existing report

Writes docs/benchmarks.json, docs/benchmarks.png and docs/BENCHMARKS.md. Every figure
that is compared is measured in this run, on this machine; ratios matter more than the
absolute times, which drift on shared machines. Uses the bundled all-MiniLM-L6-v2,
loaded offline from `.cache/huggingface` (`make bundled-model` puts it there).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import psutil
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HF_HOME = ROOT / ".cache" / "huggingface"
ENV = {**os.environ, "HF_HOME": str(HF_HOME), "HF_HUB_OFFLINE": "1", "MODEL_NAMES": MODEL,
       "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
WORDS = ("the a of and to in is that for it as with was on be by this are from at an embedding "
         "model worker request vector search query document token batch engine serverless latency "
         "throughput cold start python runpod infinity rank score sentence meaning similar text "
         "language cloud gpu memory fast slow answer question retrieval index").split()

SHAPES = [  # (name, sentences per request, concurrency, requests per round)
    ("8 x c1", 8, 1, 40),
    ("8 x c16", 8, 16, 120),
    ("8 x c64", 8, 64, 160),
    ("256 x c1", 256, 1, 4),
]
ROUNDS = 3
STEPS = ["hardware", "throughput", "cold start", "imports", "payloads", "load", "flops", "backends"]


def corpus(count: int = 1600, words: int = 30, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(count)]


def shaped(requests: int, batch: int) -> list[list[str]]:
    texts = corpus()
    return [[texts[(i * batch + j) % len(texts)] for j in range(batch)] for i in range(requests)]


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99)}


async def drive(call, batches: list[list[str]], concurrency: int) -> dict:
    """Run `call(texts)` for every batch, `concurrency` at a time; time each and the whole."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(texts: list[str]) -> None:
        async with gate:
            started = time.perf_counter()
            await call(texts)
            latencies.append(time.perf_counter() - started)

    await call(batches[0])  # warm: engine started, first shapes seen
    me = psutil.Process()
    cpu_before, started = me.cpu_times(), time.perf_counter()
    await asyncio.gather(*(one(texts) for texts in batches))
    elapsed = time.perf_counter() - started
    cpu_after = me.cpu_times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    sentences = sum(len(texts) for texts in batches)
    return {"sentences_per_s": round(sentences / elapsed, 1), "seconds": round(elapsed, 2),
            **percentiles(latencies), "this_process_cpu_share": round(cpu / elapsed / psutil.cpu_count(), 3)}


def worker_for(backend: str, **variables: str):
    os.environ.update({k: v for k, v in ENV.items() if k.startswith(("HF_", "MODEL_", "TOKENIZERS"))})
    for key in ("BACKEND", "ONNX_QUANTIZED"):
        os.environ.pop(key, None)
    os.environ.update({"BACKEND": backend, **variables})
    from embedding_worker.serving.worker import build_worker

    return build_worker()


def in_process(shapes, scale: float, backend: str = "torch", **variables: str) -> dict:
    """The engine alone (the ceiling): `engine.embed` awaited directly, no worker code."""
    worker = worker_for(backend, **variables)
    model = worker.registry.resolve(MODEL)
    results = {}

    async def run_all() -> None:
        await worker.registry.start()

        async def call(texts: list[str]) -> None:
            await model.engine.embed(texts)

        for name, batch, concurrency, requests in shapes:
            results[name] = await drive(call, shaped(max(2, int(requests * scale)), batch), concurrency)
            results[name].pop("this_process_cpu_share")
        await worker.registry.stop()

    asyncio.run(run_all())
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(server: str) -> tuple[subprocess.Popen, str]:
    """Start the local endpoint or runpod's `--rp_serve_api`; return it and its /runsync URL."""
    port = free_port()
    if server == "local endpoint":
        command = ["src/local_endpoint.py", "--port", str(port)]
        url, probe = f"http://127.0.0.1:{port}/v2/bench/runsync", f"http://127.0.0.1:{port}/v2/bench/health"
    else:
        command = ["src/handler.py", "--rp_serve_api", "--rp_api_port", str(port)]
        url, probe = f"http://127.0.0.1:{port}/runsync", f"http://127.0.0.1:{port}/docs"
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while True:
        try:
            httpx.get(probe, timeout=2)
            return process, url
        except httpx.TransportError:
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{server} did not start") from None
            time.sleep(0.3)


def throughput(shapes, scale: float, rounds: int) -> dict:
    """The engine alone and the worker over HTTP, in interleaved rounds at each shape.

    All three are up at once (idle ones cost nothing); each round runs the engine, then the
    local endpoint, then `--rp_serve_api`, so the machine's drift hits them alike. Each ratio
    is taken within its round; the report gives the medians over rounds.
    """
    servers = {name: start_server(name) for name in ("local endpoint", "rp_serve_api")}
    worker = worker_for("torch")
    model = worker.registry.resolve(MODEL)
    runs: dict[str, dict[str, list[dict]]] = {}

    async def run_all() -> None:
        await worker.registry.start()
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:

            async def engine(texts: list[str]) -> None:
                await model.engine.embed(texts)

            def over_http(url: str):
                async def call(texts: list[str]) -> None:
                    body = orjson.dumps({"input": {"model": MODEL, "input": texts}})
                    reply = await client.post(url, content=body, headers={"content-type": "application/json"})
                    data = orjson.loads(reply.content)["output"]["data"]
                    assert len(data) == len(texts) and len(data[-1]["embedding"]) == 384

                return call

            targets = {"in-process engine": (engine, None)}
            targets.update({name: (over_http(url), psutil.Process(p.pid)) for name, (p, url) in servers.items()})
            for name, batch, concurrency, requests in shapes:
                batches = shaped(max(2, int(requests * scale)), batch)
                for _ in range(rounds):
                    for target, (call, server) in targets.items():
                        before = server.cpu_times() if server else None
                        row = await drive(call, batches, concurrency)
                        row["client_cpu_share"] = row.pop("this_process_cpu_share") if server else None
                        if server:
                            after = server.cpu_times()
                            used = (after.user - before.user) + (after.system - before.system)
                            row["server_cpu_share"] = round(used / row["seconds"] / psutil.cpu_count(), 3)
                        runs.setdefault(target, {}).setdefault(name, []).append(row)
        await worker.registry.stop()

    try:
        asyncio.run(run_all())
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(60)
    results: dict[str, dict[str, dict]] = {}
    for target, shapes_runs in runs.items():
        for shape, rows in shapes_runs.items():
            ceiling = runs["in-process engine"][shape]
            ratios = [r["sentences_per_s"] / c["sentences_per_s"] for r, c in zip(rows, ceiling)]
            summary = {key: (statistics.median(r[key] for r in rows) if rows[0][key] is not None else None)
                       for key in rows[0]}
            summary["ratio_to_engine"] = round(statistics.median(ratios), 3)
            summary["ratio_by_round"] = [round(x, 3) for x in ratios]
            results.setdefault(target, {})[shape] = summary
    return results


def load(requests: int = 300) -> dict:
    """`requests` concurrent single-text requests at once to the local endpoint: each must be
    answered, once, with its own text's vector; the server's peak memory is sampled."""
    process, url = start_server("local endpoint")
    server, peak = psutil.Process(process.pid), [0]
    texts = [f"load request {i}: " + sentence for i, sentence in enumerate(corpus(requests))]

    async def run_all() -> tuple[list[dict], float]:
        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], server.memory_info().rss)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        limits = httpx.Limits(max_connections=requests)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            started = time.perf_counter()
            replies = await asyncio.gather(*(client.post(url, json={"input": {"model": MODEL, "input": text}})
                                             for text in texts))
            elapsed = time.perf_counter() - started
        sampler.cancel()
        return [reply.json() for reply in replies], elapsed

    idle = server.memory_info().rss
    try:
        bodies, elapsed = asyncio.run(run_all())
    finally:
        process.terminate()
        process.wait(60)
    completed = sum(body["status"] == "COMPLETED" for body in bodies)
    vectors = np.array([body["output"]["data"][0]["embedding"] for body in bodies])
    expected = np.asarray(embed_once("torch", texts))
    return {"requests": requests, "completed": completed, "distinct_job_ids": len({b["id"] for b in bodies}),
            "max_abs_diff_to_own_vector": float(np.abs(vectors - expected).max()), "seconds": round(elapsed, 2),
            "server_rss_idle_mib": round(idle / 2**20), "server_rss_peak_mib": round(peak[0] / 2**20)}


def cold_start(runs: int) -> dict:
    """Process start -> model loaded -> first `--test_input` result -> process exit."""
    job = json.dumps({"input": {"model": MODEL, "input": "Hello, world!"}})
    timelines = []
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "src/handler.py", "--test_input", job], cwd=ROOT, env=ENV,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        loaded = result = None
        for line in process.stderr:
            if "loaded in" in line:
                loaded = time.perf_counter() - started
                break
        for line in process.stdout:
            if line.startswith("{"):
                result = time.perf_counter() - started
        process.wait(120)
        exited = time.perf_counter() - started
        assert process.returncode == 0 and result is not None and loaded is not None
        timelines.append({"model_loaded_s": loaded, "first_result_s": result, "exit_s": exited})
    median = {k: round(statistics.median(t[k] for t in timelines), 2) for k in timelines[0]}
    return {"runs": runs, "median": median, "all": [{k: round(v, 2) for k, v in t.items()} for t in timelines]}


def import_costs() -> dict:
    """`python -X importtime` of what the worker imports, and runpod's import with and
    without its cpuinfo subprocess (the cut this worker makes)."""
    code = ("import sys; sys.path.insert(0, 'src'); import infinity_emb; "
            "from embedding_worker.serving.runpod_patches import import_runpod; import_runpod()")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    cumulative = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if match and len(match.group(2)) <= 2:
            cumulative[match.group(3)] = round(int(match.group(1)) / 1e6, 2)
    top = dict(sorted(cumulative.items(), key=lambda kv: -kv[1])[:6])

    def timed(code: str) -> float:
        runs = []
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
            runs.append(float(out.stdout.strip().splitlines()[-1]))
        return round(statistics.median(runs), 2)

    plain = timed("import time; s = time.perf_counter(); import runpod; print(time.perf_counter() - s)")
    cut = timed("import sys, time; sys.path.insert(0, 'src'); s = time.perf_counter(); "
                "from embedding_worker.serving.runpod_patches import import_runpod; import_runpod(); print(time.perf_counter() - s)")
    return {"top_level_imports_s": top, "runpod_import_s": {"before": plain, "after": cut}}


def payloads() -> dict:
    """Response bytes and encoding time, float against base64."""
    results = {}
    for rows in (8, 256):
        vectors = np.random.default_rng(0).standard_normal((rows, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for encoding in ("float", "base64"):
            data = [{"object": "embedding", "index": i,
                     "embedding": v.tolist() if encoding == "float"
                     else base64.b64encode(v.astype("<f4").tobytes()).decode()}
                    for i, v in enumerate(vectors)]
            body = {"object": "list", "data": data, "model": MODEL, "usage": {"prompt_tokens": 1, "total_tokens": 1}}
            timings = {}
            for name, dumps in (("orjson", orjson.dumps), ("json", lambda b: json.dumps(b).encode())):
                started = time.perf_counter()
                for _ in range(20):
                    encoded = dumps(body)
                timings[f"{name}_ms"] = round((time.perf_counter() - started) / 20 * 1000, 3)
            results[f"{rows} vectors, {encoding}"] = {"bytes": len(encoded), **timings}
    return results


def flops() -> dict:
    """GEMM FLOP/s at the model's shapes against the FLOP/s the model achieves at batch 32."""
    import torch
    from huggingface_hub import snapshot_download
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(snapshot_download(MODEL, local_files_only=True), device="cpu")
    config = model[0].auto_model.config
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    texts = corpus(32)
    tokens = model.tokenize(texts)["input_ids"]
    batch, seq = tokens.shape
    real_tokens = int((tokens != 0).sum())

    def gemm_flops(m: int, k: int, n: int) -> float:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        started, reps = time.perf_counter(), 20
        for _ in range(reps):
            a @ b
        return 2 * m * k * n * reps / (time.perf_counter() - started)

    m = batch * seq
    shapes = {"h x h": (m, hidden, hidden), "h x 4h": (m, hidden, inter), "4h x h": (m, inter, hidden)}
    gemm = {name: round(gemm_flops(*shape) / 1e9, 1) for name, shape in shapes.items()}
    # per layer: Q, K, V and output projections (4 h^2), FFN (2 h i), attention (2 s h)
    model_flop = layers * (2 * m * (4 * hidden * hidden + 2 * hidden * inter) + 2 * 2 * batch * seq * seq * hidden)
    with torch.inference_mode():
        for _ in range(2):
            model.encode(texts, batch_size=32)
        started, reps = time.perf_counter(), 10
        for _ in range(reps):
            model.encode(texts, batch_size=32)
    per_batch = (time.perf_counter() - started) / reps
    achieved = model_flop / per_batch / 1e9
    return {"threads": torch.get_num_threads(), "batch": batch, "padded_tokens_per_sentence": seq,
            "real_token_share": round(real_tokens / (batch * seq), 3), "gemm_gflops": gemm,
            "model_gflop_per_batch": round(model_flop / 1e9, 2), "model_gflops": round(achieved, 1),
            "ms_per_batch": round(per_batch * 1000, 1), "model_over_gemm": round(achieved / max(gemm.values()), 3)}


def backends(scale: float) -> dict:
    """Each backend's in-process speed at 8 sentences x c16, and its vectors against torch's."""
    shape = [s for s in SHAPES if s[0] == "8 x c16"]
    texts = corpus(64)
    reference = None
    results = {}
    for label, backend, variables in (("torch", "torch", {}), ("onnx (optimum)", "optimum", {}),
                                      ("onnx int8", "optimum", {"ONNX_QUANTIZED": "true"}),
                                      ("ctranslate2", "ctranslate2", {})):
        speed = in_process(shape, scale, backend, **variables)["8 x c16"]
        vectors = embed_once(backend, texts, **variables)
        reference = vectors if reference is None else reference
        cosine = (vectors * reference).sum(1)
        results[label] = {"sentences_per_s": speed["sentences_per_s"],
                          "min_cosine_to_torch": round(float(cosine.min()), 5),
                          "mean_cosine_to_torch": round(float(cosine.mean()), 5)}
    return results


def embed_once(backend: str, texts: list[str], **variables: str) -> np.ndarray:
    worker = worker_for(backend, **variables)
    model = worker.registry.resolve(MODEL)

    async def run() -> list:
        await worker.registry.start()
        vectors, _ = await model.engine.embed(texts)
        await worker.registry.stop()
        return vectors

    vectors = np.asarray(asyncio.run(run()))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def hardware() -> dict:
    import torch

    from embedding_worker.engine.cpu_quota import available_cpus, cpu_quota
    from embedding_worker.serving.runpod_patches import cpu_name

    return {"cpu": cpu_name(), "cores_usable": len(os.sched_getaffinity(0)), "cgroup_cpu_quota": cpu_quota(),
            "threads_used": available_cpus(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "torch": torch.__version__, "gpu": None}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    throughput = results["throughput"]
    shapes = list(throughput["in-process engine"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(throughput)
    for i, (label, rows) in enumerate(throughput.items()):
        left.bar([x + i * width for x in range(len(shapes))], [rows[s]["sentences_per_s"] for s in shapes],
                 width, label=label)
    left.set_xticks([x + width for x in range(len(shapes))], shapes)
    left.set_ylabel("sentences / s")
    left.set_title("Throughput by request shape (sentences x concurrency)")
    left.legend()
    names = list(results["backends"])
    right.bar(names, [results["backends"][n]["sentences_per_s"] for n in names], color="tab:gray")
    right.set_title("Backends, in-process, 8 sentences x c16")
    right.set_ylabel("sentences / s")
    fig.suptitle(f"all-MiniLM-L6-v2 on {results['hardware']['cpu']} ({results['hardware']['threads_used']} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(results: dict) -> str:
    hw = results["hardware"]
    throughput = results["throughput"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python bench/run.py` on {results['date']}: all-MiniLM-L6-v2, torch backend unless said, "
        f"{hw['cpu']}, {hw['cores_usable']} usable cores (cgroup CPU quota: {hw['cgroup_cpu_quota'] or 'none'}), "
        f"{hw['threads_used']} threads, {hw['memory_gib']} GiB, Python {hw['python']}, torch {hw['torch']}, no GPU. "
        "Corpus: 1,600 generated sentences of 30 words (seed 0). Every figure below comes from the same run; "
        "compare ratios, not absolute times, across machines.",
        "",
        "![throughput](benchmarks.png)",
        "",
        "## Throughput and latency",
        "",
        "`in-process engine`: `engine.embed` awaited directly, no worker code (the ceiling). The HTTP rows send "
        "the same request shapes (sentences per request x concurrent requests) to `/runsync` of the local "
        "endpoint (`src/local_endpoint.py`) and of runpod's `--rp_serve_api`, and check every reply. The three "
        f"are measured in {results['rounds']} interleaved rounds; figures are medians over rounds, and each ratio "
        "is taken within its round (the spread is shown). The load client shares the machine's cores; its CPU "
        "share (of all cores) is shown.",
        "",
        "| server | shape | sentences/s | ratio to engine (rounds) | p50 ms | p95 ms | p99 ms | client CPU | server CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, rows in throughput.items():
        for shape, row in rows.items():
            spread = ", ".join(f"{r:.2f}" for r in row["ratio_by_round"])
            lines.append(f"| {label} | {shape} | {row['sentences_per_s']} | {row['ratio_to_engine']:.3f} ({spread}) | "
                         f"{row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | {row.get('client_cpu_share') or '-'} | "
                         f"{row.get('server_cpu_share') or '-'} |")
    cold = results["cold_start"]["median"]
    imports = results["imports"]
    lines += [
        "",
        "## Cold start",
        "",
        f"`python src/handler.py --test_input ...`, median of {results['cold_start']['runs']} runs: "
        f"model loaded at {cold['model_loaded_s']} s, first result at {cold['first_result_s']} s, "
        f"process exited at {cold['exit_s']} s.",
        "",
        "Largest top-level imports (cumulative seconds, `python -X importtime`): "
        + ", ".join(f"`{k}` {v}" for k, v in imports["top_level_imports_s"].items()) + ".",
        "",
        f"runpod's import: {imports['runpod_import_s']['before']} s as is, {imports['runpod_import_s']['after']} s "
        "with the worker's cut (runpod's debugger spawns a `py-cpuinfo` subprocess at import).",
        "",
        "## Response size and encoding time",
        "",
        "| body | bytes | orjson ms | json ms |",
        "|---|---|---|---|",
    ]
    for name, row in results["payloads"].items():
        lines.append(f"| {name} | {row['bytes']:,} | {row['orjson_ms']} | {row['json_ms']} |")
    f = results["flops"]
    lines += [
        "",
        "## Load",
        "",
        "{requests} requests sent at once to the local endpoint's `/runsync` (one text each, all distinct): "
        "{completed} completed, {distinct_job_ids} distinct job ids, every vector its own text's "
        "(max abs difference {max_abs_diff_to_own_vector:.1e}), in {seconds} s; server memory "
        "{server_rss_idle_mib} MiB idle, {server_rss_peak_mib} MiB at peak.".format(**results["load"]),
        "",
        "## Compute: how close to the hardware",
        "",
        f"A batch of {f['batch']} sentences pads to {f['padded_tokens_per_sentence']} tokens "
        f"({f['real_token_share']:.0%} real tokens): {f['model_gflop_per_batch']} GFLOP in {f['ms_per_batch']} ms "
        f"= **{f['model_gflops']} GFLOP/s** achieved by the model, against a torch matmul at the model's shapes "
        "(" + ", ".join(f"{k}: {v}" for k, v in f["gemm_gflops"].items()) + f" GFLOP/s, {f['threads']} threads): "
        f"**{f['model_over_gemm']:.2f}** of the best GEMM.",
        "",
        "## Backends",
        "",
        "In-process engine, 8 sentences x concurrency 16; quality is each vector's cosine to torch's.",
        "",
        "| backend | sentences/s | speed vs torch | min cosine | mean cosine |",
        "|---|---|---|---|---|",
    ]
    torch_speed = results["backends"]["torch"]["sentences_per_s"]
    for name, row in results["backends"].items():
        lines.append(f"| {name} | {row['sentences_per_s']} | {row['sentences_per_s'] / torch_speed:.2f} | "
                     f"{row['min_cosine_to_torch']} | {row['mean_cosine_to_torch']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request costs the client CPU
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the requests, one cold start")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--steps", help=f"comma-separated subset of {','.join(STEPS)}, merged into the "
                        "existing report (default: all)")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0
    if not (HF_HOME / "hub").is_dir():
        sys.exit("the bundled model is not in .cache/huggingface: run `make bundled-model` first")
    os.environ.update({k: v for k, v in ENV.items() if k.startswith(("HF_", "TOKENIZERS"))})
    steps = args.steps.split(",") if args.steps else STEPS
    report = args.out / "benchmarks.json"
    results: dict = json.loads(report.read_text()) if args.steps and report.exists() else {}
    results["date"] = time.strftime("%Y-%m-%d")
    with tqdm(steps, desc="benchmarks", unit="step") as progress:
        for step in progress:
            progress.set_postfix_str(step)
            if step == "hardware":
                results["hardware"] = hardware()
            elif step == "throughput":
                results["rounds"] = 1 if args.quick else ROUNDS
                results["throughput"] = throughput(SHAPES, scale, results["rounds"])
            elif step == "cold start":
                results["cold_start"] = cold_start(1 if args.quick else 3)
            elif step == "imports":
                results["imports"] = import_costs()
            elif step == "payloads":
                results["payloads"] = payloads()
            elif step == "load":
                results["load"] = load()
            elif step == "flops":
                results["flops"] = flops()
            else:
                results["backends"] = backends(scale)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "benchmarks.png")
    (args.out / "BENCHMARKS.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
