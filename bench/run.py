"""Benchmark the worker side by side with its peers, in one run, and write the report.

    python bench/run.py                      # everything (about an hour on 2 CPU cores, 30 minutes of it the soak)
    python bench/run.py --quick              # fewer requests and rounds, for a smoke run
    python bench/run.py --steps soak,load    # re-run some steps, merged into the existing report
    python bench/run.py --steps defaults --rounds 5   # more interleaved rounds where the machine is noisy

Writes docs/benchmarks.json, docs/benchmarks.png and docs/BENCHMARKS.md. One module per
measurement: `throughput` (with `servers` and `peers`), `batching`, `cold_start`, `quality`, `load`,
`serving_profile`, `compute`, `images`, `faults`, `hostile`, `priced`, `long_inputs`, `int8`, `limit`, `visual`, `backfill`; `report` writes the results. Uses the bundled all-MiniLM-L6-v2,
loaded offline from `.cache/huggingface` (`make bundled-model` puts it there).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import batching  # noqa: E402
import cold_start  # noqa: E402
import faults  # noqa: E402
import compute  # noqa: E402
import media  # noqa: E402
import load  # noqa: E402
import serving_profile  # noqa: E402
import quality  # noqa: E402
import hybrid  # noqa: E402
import hostile  # noqa: E402
import int8  # noqa: E402
import limit  # noqa: E402
import long_inputs  # noqa: E402
import precisions  # noqa: E402
import overhead  # noqa: E402
import visual  # noqa: E402
import backfill  # noqa: E402
import priced  # noqa: E402
import report  # noqa: E402
import throughput  # noqa: E402
import workloads  # noqa: E402
from common import ENV, HF_HOME, ROOT  # noqa: E402

STEPS = ["hardware", "defaults", "same dtype", "workloads", "sweep", "batching", "cold start", "imports", "quality",
         "profile", "payloads", "load", "soak", "flops", "attention", "workload profile", "backends", "images", "audio",
         "faults", "hybrid", "hostile", "priced", "overhead", "latency", "long inputs", "int8", "limit", "precisions", "visual", "backfill"]


def auto_dtype() -> str:
    from embedding_worker.engine.hardware import cpu_has_native_bf16

    return "bfloat16" if cpu_has_native_bf16() else "float32"


def defaults(scale: float, rounds: int) -> dict:
    names = ["in-process engine", "local endpoint", "production loop", "rp_serve_api", "original worker"]
    runs = throughput.compare(names, throughput.SHAPES, scale, rounds, "auto")
    return {"defaults_dtype": auto_dtype(), "defaults": {"vs original": throughput.summarise(runs, "original worker"),
                                                         "vs engine": throughput.summarise(runs, "in-process engine")}}


def same_dtype(scale: float, rounds: int) -> dict:
    dtype = auto_dtype()
    names = ["infinity server", "local endpoint", "production loop", "original worker", "in-process engine"]
    shapes = [s for s in throughput.SHAPES if s[0] in ("8 x c16", "256 x c1")]
    runs = throughput.compare(names, shapes, scale, rounds, dtype, original_dtype=dtype)
    return {"same_dtype_dtype": dtype, "same_dtype": {"vs infinity": throughput.summarise(runs, "infinity server")}}


def realistic_workloads(scale: float, rounds: int) -> dict:
    """Users' workloads, at this worker's and Infinity's same dtype; the original at its defaults."""
    names = ["local endpoint", "in-process engine", "infinity server", "original worker"]
    runs = workloads.compare(names, scale, rounds, auto_dtype(), "auto")
    return {"workloads_dtype": auto_dtype(),
            "workloads": workloads.summarise(runs, ("infinity server", "original worker"))}


def latency(scale: float, rounds: int) -> dict:
    """One query of 1 and of 8 texts at c1 and c16, p50 and p95, every way in; same dtype."""
    names = ["in-process engine", "load balancer", "local endpoint", "production loop", "infinity server"]
    runs = throughput.compare(names, throughput.LATENCY_SHAPES, scale, rounds, auto_dtype())
    return {"latency_dtype": auto_dtype(), "latency": throughput.latencies(runs, "in-process engine")}


def sweep(scale: float) -> dict:
    names = ["in-process engine", "local endpoint", "original worker", "infinity server"]
    return {"sweep_dtype": auto_dtype(), "sweep": throughput.sweep(names, scale, "auto")}


def run_step(step: str, scale: float, quick: bool, rounds: int) -> dict:
    """The results of one step, as keys of the report."""
    rounds = 1 if quick else rounds
    steps = {
        "hardware": lambda: {"hardware": compute.hardware()},
        "defaults": lambda: defaults(scale, rounds),
        "same dtype": lambda: same_dtype(scale, rounds),
        "workloads": lambda: realistic_workloads(scale, rounds),
        "sweep": lambda: sweep(scale),
        "batching": lambda: {"batching_dtype": auto_dtype(), "batching": batching.compare(scale, rounds, "auto")},
        "cold start": lambda: {"cold_start": cold_start.cold_start(1 if quick else 3)},
        "imports": lambda: {"imports": cold_start.import_costs()},
        "quality": lambda: {"quality": quality.dtypes(scale)},
        "profile": lambda: {"profile": serving_profile.profile()},
        "payloads": lambda: {"payloads": compute.payloads()},
        "load": lambda: {"load": load.burst()},
        "soak": lambda: {"soak": {**load.soak(120 if quick else 1800), "trim_cost": load.trim_cost(60 if quick else 200)}},
        "flops": lambda: {"flops": compute.flops(auto_dtype())},
        "attention": lambda: {"attention": compute.attention(auto_dtype())},
        "workload profile": lambda: {"workload_profile": compute.workload_profile(auto_dtype())},
        "backends": lambda: {"backends": quality.backends(scale)},
        "images": lambda: {"images": media.images()},
        "audio": lambda: {"audio": media.audio()},
        "hybrid": lambda: {"hybrid": hybrid.hybrid(auto_dtype(), rounds, scale)},
        "faults": lambda: {"faults": faults.faults()},
        "hostile": lambda: {"hostile": hostile.hostile()},
        "priced": lambda: {"priced": priced.priced(rounds)},
        "overhead": lambda: {"overhead": {"before_commit": "-", "after": overhead.overhead(rounds, scale)}},
        "latency": lambda: latency(scale, rounds),
        "long inputs": lambda: {"long_inputs": long_inputs.long_inputs()},
        "int8": lambda: {"int8": int8.int8()},
        "limit": lambda: {"limit": limit.limit(rounds, scale)},
        "precisions": lambda: {"precisions": precisions.precisions(rounds, scale)},
        "visual": lambda: {"visual": visual.visual(quick)},
        "backfill": lambda: {"backfill": backfill.backfill(rounds, quick)},
    }
    return steps[step]()


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request costs the client CPU
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the requests, one round")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput steps")
    parser.add_argument("--steps", help=f"comma-separated subset of {','.join(STEPS)}, merged into the "
                        "existing report (default: all)")
    args = parser.parse_args()
    if not (HF_HOME / "hub").is_dir():
        sys.exit("the bundled model is not in .cache/huggingface: run `make bundled-model` first")
    os.environ.update({k: v for k, v in ENV.items() if k.startswith(("HF_", "TOKENIZERS"))})
    steps = args.steps.split(",") if args.steps else STEPS
    path = args.out / "benchmarks.json"
    results: dict = json.loads(path.read_text()) if args.steps and path.exists() else {}
    if "hardware" not in results and "hardware" not in steps:
        steps.insert(0, "hardware")  # the report names the machine
    results["date"] = time.strftime("%Y-%m-%d")
    with tqdm(steps, desc="benchmarks", unit="step") as progress:
        for step in progress:
            progress.set_postfix_str(step)
            results.update(run_step(step, 0.25 if args.quick else 1.0, args.quick, args.rounds))
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2) + "\n")  # each step kept, whatever comes next
    report.plot(results, args.out / "benchmarks.png")
    (args.out / "BENCHMARKS.md").write_text(report.markdown(results))
    print(report.markdown(results))


if __name__ == "__main__":
    main()
