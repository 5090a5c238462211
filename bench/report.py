"""The benchmark report: docs/BENCHMARKS.md and the plot, from the results of one run."""

from __future__ import annotations

from pathlib import Path


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, memory) = plt.subplots(1, 3, figsize=(19, 4.8))
    for name, points in results.get("sweep", {}).items():
        shapes = list(points)
        left.plot([int(s.split("c")[-1]) for s in shapes], list(points.values()), marker="o", label=name)
    left.set_xscale("log", base=2)
    left.set_xlabel("concurrent requests (8 sentences each)")
    left.set_ylabel("sentences / s")
    left.set_title(f"Throughput against concurrency, defaults ({results.get('sweep_dtype', 'auto')} here)")
    left.legend()
    backends = results.get("backends", {})
    right.bar(list(backends), [row["sentences_per_s"] for row in backends.values()], color="tab:gray")
    right.set_title("Backends, in-process, 8 sentences x c16")
    right.set_ylabel("sentences / s")
    right.tick_params(axis="x", labelrotation=20)
    for name, variant in results.get("soak", {}).get("variants", {}).items():
        minutes = [t / 60 for t, _ in variant["rss_samples"]]
        memory.plot(minutes, [m for _, m in variant["rss_samples"]], label=name)
    memory.set_xlabel("minutes of mixed load")
    memory.set_ylabel("server RSS, MiB")
    memory.set_title("Soak: local endpoint memory, same requests to each")
    if results.get("soak", {}).get("variants"):
        memory.legend()
    fig.suptitle(f"all-MiniLM-L6-v2 on {results['hardware']['cpu']} ({results['hardware']['threads_used']} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _rows(table: dict, reference: str, first: str = "target", last: tuple[str, str] = ("server CPU",
                                                                                      "server_cpu_share")) -> list[str]:
    """A throughput table: one row per target and shape; `last` is (heading, key) of the last column."""
    lines = [f"| {first} | shape | sentences/s | vs {reference} (rounds) | p95 vs {reference} | p50 ms | p95 ms | "
             f"{last[0]} |", "|---|---|---|---|---|---|---|---|"]
    for target, shapes in table.items():
        for shape, row in shapes.items():
            spread = ", ".join(f"{r:.2f}" for r in row["ratio_by_round"])
            lines.append(f"| {target} | {shape} | {row['sentences_per_s']} | **{row['ratio']:.2f}** ({spread}) | "
                         f"{row['p95_ratio']:.2f} | {row['p50_ms']} | {row['p95_ms']} | "
                         f"{row.get(last[1]) or '-'} |")
    return lines


def priced_stop() -> str:
    from priced import STOP_GB, STOP_SECONDS

    return f"{STOP_GB:g} GB over idle or {STOP_SECONDS:g} s"


def markdown(results: dict) -> str:
    hw = results["hardware"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python bench/run.py` on {results['date']}: all-MiniLM-L6-v2, torch backend unless said, "
        f"{hw['cpu']}, {hw['cores_usable']} usable cores (cgroup CPU quota: {hw['cgroup_cpu_quota'] or 'none'}), "
        f"{hw['threads_used']} threads, native bf16: {hw.get('native_bf16')}, {hw['memory_gib']} GiB, "
        f"Python {hw['python']}, torch {hw['torch']}, no GPU. Corpus: generated sentences of 30 words (seed 0). "
        "Every figure comes from the same run, with every peer measured side by side in interleaved rounds "
        "(each round runs every target once; each ratio is taken within its round; the median and every "
        "round's value are shown). Compare ratios, not absolute times, across machines. The load client "
        "shares the machine's two cores.",
        "",
        "![throughput](benchmarks.png)",
        "",
        "Targets: `in-process engine` is `engine.embed` awaited directly (the ceiling); `local endpoint` is "
        "`src/local_endpoint.py` (`/runsync`); `production loop` is runpod's job loop (what runs on RunPod) "
        "against a stand-in job API on loopback; `rp_serve_api` is runpod's test server; `original worker` is "
        "RunPod's original worker (`../shared/baselines`) through `--rp_serve_api`; `infinity server` is "
        "`infinity_emb v2` in its own virtual environment, OpenAI `/embeddings`.",
        "",
    ]
    if "defaults" in results:
        lines += ["## Throughput at each worker's defaults", "",
                  f"This worker at `DTYPES=auto` ({results['defaults_dtype']} on this machine), the original at its "
                  "`auto` (float32 on a CPU).", ""]
        lines += _rows(results["defaults"]["vs original"], "original worker")
        lines += ["", "The same runs against the in-process engine (the HTTP paths' overhead):", ""]
        lines += _rows(results["defaults"]["vs engine"], "in-process engine")
    if "same_dtype" in results:
        lines += ["", f"## Throughput at the same dtype ({results['same_dtype_dtype']})", ""]
        lines += _rows(results["same_dtype"]["vs infinity"], "infinity server")
    if "batching" in results:
        lines += ["", "## Batching", "",
                  f"The in-process engine at `DTYPES=auto` ({results['batching_dtype']}) with Infinity's own queue "
                  "against this worker's (`engine/batching.py`: the next batch formed when the forward pass takes "
                  "the previous one, full batches while there are any), one engine, the queue swapped between runs.",
                  ""]
        lines += _rows(results["batching"], "Infinity's queue", first="queue", last=("mean batch (of 32)", "mean_batch"))
    if "cold_start" in results:
        cold = results["cold_start"]
        timeline = cold["test_input"]
        lines += ["", "## Cold start", "",
                  f"Process start to the first embedding through `--rp_serve_api`, alternating runs: this worker "
                  f"{cold['ours_first_result_s']} s, the original {cold['original_first_result_s']} s: "
                  f"**{cold['ratio']:.2f}x** the original (runs: {', '.join(f'{r:.2f}' for r in cold['ratio_by_run'])}).",
                  "",
                  f"`python src/handler.py --test_input ...`, median: model loaded (and self-tested) at "
                  f"{timeline['model_loaded_s']} s, result at {timeline['first_result_s']} s, process exited at "
                  f"{timeline['exit_s']} s."]
    if "imports" in results:
        imports = results["imports"]
        lines += ["", "Largest top-level imports (cumulative seconds, `python -X importtime`): "
                  + ", ".join(f"`{k}` {v}" for k, v in imports["top_level_imports_s"].items()) + ".", "",
                  f"runpod's import: {imports['runpod_import_s']['before']} s as is, "
                  f"{imports['runpod_import_s']['after']} s with the worker's cut (no `py-cpuinfo` subprocess). "
                  f"Infinity's import: {imports['infinity_import_s']['before']} s as is, "
                  f"{imports['infinity_import_s']['after']} s without the backends a torch worker does not use, "
                  "scikit-learn and SciPy."]
        if "what_remains_s" in imports:
            lines += ["", "What the worker's imports still cost, each part on its own in import order (median of 3 "
                      "processes): " + ", ".join(f"{k} {v} s" for k, v in imports["what_remains_s"].items()) + "."]
    if "quality" in results:
        q = results["quality"]
        lines += ["", "## Precision: what `DTYPES=auto` picks here, and what it costs", "",
                  f"`auto` on this machine ({q['device']}): **{q['auto_on_this_machine']}**. On the corpus, each "
                  f"vector's cosine to float32: min {q['min_cosine_to_float32']}, mean {q['mean_cosine_to_float32']}. "
                  f"A reranker's scores (a random 4-layer BERT cross-encoder: no real reranker is available offline) "
                  f"move by at most {q['rerank_max_abs_score_diff']}; same top 10: {q['rerank_same_top10']}. "
                  f"In-process speed at 8 x c16: {q['speed_auto']} sentences/s against {q['speed_float32']} at "
                  f"float32 ({q['speed_auto'] / q['speed_float32']:.2f}x)."]
    if "profile" in results:
        lines += ["", "## Where the serving path's time goes", "",
                  f"py-spy, {results['profile']['samples']} samples of the local endpoint at 8 x c16 (inclusive "
                  "shares of all samples; threads included):", "", "| frame | share |", "|---|---|"]
        lines += [f"| `{row['frame']}` | {row['share']:.1%} |" for row in results["profile"]["top"]]
    if "payloads" in results:
        lines += ["", "## Response size and encoding time", "", "| body | bytes | orjson ms | json ms |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {row['bytes']:,} | {row['orjson_ms']} | {row['json_ms']} |"
                  for name, row in results["payloads"].items()]
    if "load" in results:
        lines += ["", "## Load", "",
                  "{requests} requests sent at once to the local endpoint's `/runsync` (one text each, all distinct): "
                  "{completed} completed, {distinct_job_ids} distinct job ids, every vector its own text's (min cosine "
                  "{min_cosine_to_own_vector}), in {seconds} s; server memory {server_rss_idle_mib} MiB idle, "
                  "{server_rss_peak_mib} MiB at peak.".format(**results["load"])]
    if "soak" in results and "variants" in results["soak"]:
        s = results["soak"]
        lines += ["", "## Soak", "",
                  f"{s['seconds'] / 60:.0f} minutes of mixed load at concurrency {s['concurrency']}, the very same "
                  "requests sent to each server in turn: 1 to 256 texts of 3 to 300 words (so new padded lengths, "
                  "and new kernel shapes, keep coming) through `/runsync`, `/run` then `/status`, the OpenAI route "
                  f"with base64, and bad inputs; finished results kept {s['result_ttl_s']} s (`LOCAL_RESULT_TTL`, "
                  "`LOCAL_RUNSYNC_TTL`) so the curve shows the process's own growth, not retention (which "
                  f"`LOCAL_MAX_RESULT_BYTES` bounds). RSS sampled every {s['sample_every_s']} s, plotted in "
                  "benchmarks.png (right); the plateau is the median of the last third.", "",
                  "| server | completed | failed (bad inputs) | refused | time in requests vs the first | RSS start | "
                  "after 1 min | plateau | end | peak | trend, 2nd half |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        first = next(iter(s["variants"].values()))["seconds_in_requests"]
        timed = s.get("order_rotated")  # without rotation, whichever server is asked first is slower
        for name, v in s["variants"].items():
            env = ", ".join(f"`{k}={val}`" for k, val in v["env"].items()) or "defaults"
            lines.append(f"| {name} ({env}) | {v['completed']} | {v['failed']} | {v['refused']} | "
                         f"{v['seconds_in_requests'] / first if timed else '-':{'.2f' if timed else ''}} | "
                         f"{v['rss_start_mib']} MiB | {v['rss_after_first_minute_mib']} MiB | "
                         f"**{v['rss_plateau_mib']} MiB** | {v['rss_end_mib']} MiB | {v['rss_peak_mib']} MiB | "
                         f"{v['rss_trend_second_half_mib_per_min']} MiB/min |")
        if "trim_cost" in s:
            t = s["trim_cost"]
            lines += ["", f"What trimming costs in speed: {t['seconds']:.0f} s of the same load, trimming against not "
                      "trimming, twice, once in each order (the server asked first is slower): time in requests "
                      f"with trimming over without, {', '.join(f'{x:.2f}' for x in t['ratios'])}; geometric mean "
                      f"**{t['geometric_mean']:.3f}**. RSS plateau {t['plateau_mib']['trim']} MiB trimming, "
                      f"{t['plateau_mib']['no trim']} MiB not."]
    if "workloads" in results:
        lines += ["", "## Users' workloads", "",
                  f"Each workload side by side in interleaved rounds, this worker and Infinity's server at "
                  f"{results.get('workloads_dtype', 'the same dtype')}, RunPod's original worker at its defaults. "
                  "Ratios of requests/s within each round: the median, then every round's. Padding: the padded "
                  "positions a padded model computes for batches of the workload's texts (up to 32, sorted by "
                  "length as Infinity sorts them), over their real tokens; this worker's encoders compute on real "
                  "tokens only. Every server holds all three models (the embedder and both rerankers); peak RSS "
                  "is the server's highest resident memory since it started, so a later row includes the "
                  "earlier rows' peaks. Each round opens a new HTTP client (see `Targets.renew_client`).", "",
                  "| workload | padding | target | requests/s | tokens/s | p95 ms | vs Infinity's server (rounds) | "
                  "p95 vs Infinity | vs the original (rounds) | peak RSS |", "|---|---|---|---|---|---|---|---|---|---|"]
        def versus(row: dict, reference: str, bold: bool = False) -> str:
            if f"vs {reference}" not in row:
                return "-"
            ratio = f"**{row[f'vs {reference}']:.2f}**" if bold else f"{row[f'vs {reference}']:.2f}"
            return f"{ratio} ({', '.join(f'{x:.2f}' for x in row[f'vs {reference} by round'])})"

        for workload, found in results["workloads"].items():
            for target, row in found["targets"].items():
                if "error" in row:
                    lines.append(f"| {workload} | {found['padding_share']:.0%} | {target} | fails: {row['error']} "
                                 "| - | - | - | - | - | - |")
                    continue
                p95 = f"{row['p95 vs infinity server']:.2f}" if "p95 vs infinity server" in row else "-"
                lines.append(f"| {workload} | {found['padding_share']:.0%} | {target} | {row['requests_per_s']} | "
                             f"{row['tokens_per_s']:,.0f} | {row['p95_ms']} | {versus(row, 'infinity server', True)} | "
                             f"{p95} | {versus(row, 'original worker')} | {row['peak_rss_mib'] or '-'} MiB |")
    if "workload_profile" in results:
        w = results["workload_profile"]
        lines += ["", "## Where a mixed-documents batch goes", "",
                  f"One batch of the mixed-documents workload ({w['batch']} texts padded to {w['padded_length']} "
                  f"tokens, {w['real_share']:.0%} of them real), {w['dtype']}, {w['threads']} threads; medians of "
                  f"interleaved rounds; the worker is {w['speedup_median']:.2f}x the padded model "
                  f"({', '.join(f'{x:.2f}' for x in w['speedup_rounds'])}). FLOP/s count real tokens only, against "
                  f"a GEMM of the feed-forward's shape at {w['gemm_gflops']} GFLOP/s.", "",
                  "| model | ms per batch | real tokens/s | GFLOP/s on real tokens | time by operator |",
                  "|---|---|---|---|---|"]
        for name, row in w["variants"].items():
            shares = ", ".join(f"{kind} {share:.0%}" for kind, share in row["time_by_operator"].items())
            lines.append(f"| {name} | {row['ms_per_batch']} | {row['real_tokens_per_s']:,} | "
                         f"{row['gflops_on_real_tokens']} | {shares} |")
    if "attention" in results:
        a = results["attention"]
        lines += ["", "## Attention kernels, one text at a time", "",
                  f"One text's self-attention as the real-token path runs it, {a['threads']} threads, ms per call "
                  "(median of interleaved rounds) with torch's scaled-dot-product flash kernel (what the worker "
                  "calls), its math kernel, and a plain matmul-softmax.", "",
                  "| dtype | heads x size | length | sdpa flash | sdpa math | matmul + softmax | fastest |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['heads']} x {r['head_size']} | {r['length']} | {r['ms']['sdpa flash']} | "
                  f"{r['ms']['sdpa math']} | {r['ms']['matmul + softmax']} | {r['fastest']} |" for r in a["rows"]]
    if "faults" in results:
        f = results["faults"]
        lines += ["", "## Model loading under faults", "",
                  f"Each fault played by the tests' stand-in hub on loopback, serving {f['model']} "
                  f"({f['weights_bytes']:,} bytes of weights), with the shipped retry policy; seconds from the "
                  "start of the model's look-up to a whole snapshot ready to load, or to the one line that ends "
                  "start-up.", "", "| fault | outcome | seconds | weights requests | resumed from |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['fault']} | {r['outcome']} | {r['seconds']} | {r['weights_requests']} | "
                  f"{', '.join(r['resumed_from']) or '-'} |" for r in f["rows"]]
    if "latency" in results:
        table = results["latency"]
        shapes = list(next(iter(table.values())))
        lines += ["", "## Latency: load-balancing endpoint against the queue paths", "",
                  "One query of 1 or 8 texts at concurrency 1 and 16, every target serving all-MiniLM-L6-v2 at "
                  f"{results.get('latency_dtype')} on loopback, in interleaved rounds (median of the rounds; every "
                  "round's p50 listed). `load balancer` is `ENDPOINT_TYPE=load_balancer` (`POST /v1/embeddings` "
                  "at its root); `local endpoint` its `/runsync`; `production loop` runpod's job loop against a "
                  "stand-in job API; `in-process engine` Infinity's engine called in the benchmark's own process "
                  "(no HTTP); the last column is the p50's distance from the engine's in the same round.", "",
                  "| shape | target | p50 ms | p95 ms | p50 by round | p50 - engine's (ms) |", "|---|---|---|---|---|---|"]
        for shape in shapes:
            for target, rows in table.items():
                row = rows[shape]
                lines.append(f"| {shape} | {target} | {row['p50_ms']} | {row['p95_ms']} | "
                             f"{', '.join(str(x) for x in row['p50_by_round'])} | {row['p50_minus_reference_ms']} |")
    if "hostile" in results:
        h, cost = results["hostile"], results["hostile"]["hashing"]
        lines += ["", "## Hostile inputs", "",
                  "Small requests that decode or compute large, each sent to the local endpoint of this tree and of "
                  f"the tree before the request budgets (commit {h['before']}), serving a tiny CLIP, a tiny CLAP, "
                  "a tiny BGE-M3 and one of BGE-M3's shape (1,024 dimensions, one layer) at float32 with default "
                  "limits but `MAX_OUTPUT_VALUES=1000000`; peak RSS of the worker's process over its idle RSS, "
                  "sampled every 5 ms, and the time to the answer or the refusal "
                  "(`tests/test_hostile_inputs.py` asserts each bound).", "",
                  "| input | before: MB over idle | before: s | before: outcome | after: MB over idle | after: s | "
                  "after: outcome |", "|---|---|---|---|---|---|---|"]
        for row in h["rows"]:
            cells = [f"{row[side]['peak_mb']:,} | {row[side]['seconds']} | {row[side]['outcome']}"
                     for side in ("before", "after")]
            lines.append(f"| {row['input']} | {cells[0]} | {cells[1]} |")
        lines += ["", f"Hashing large weights: sha256 reads {cost['gb_per_s']} GB/s here (a 1 GiB file in the page "
                  f"cache, {cost['seconds']} s); each downloaded or copied file is hashed once, from disk, before "
                  f"it is published: BGE-M3's 2.27 GB of weights add {cost['bge_m3_seconds']} s to its first cold "
                  "start, none to later ones (their size is checked)."]
    if "overhead" in results:
        ov = results["overhead"]
        lines += ["", "## The serving path", "",
                  "What the worker costs beside a forward pass that is nearly free, as on a GPU (`bench/overhead.py`): "
                  "a BERT of one layer and 32 dimensions on all-MiniLM-L6-v2's tokenizer at float32, served by the "
                  "load-balancing worker, the local endpoint's `/runsync` and its OpenAI route, the in-process engine "
                  "(no HTTP) and Infinity's own server, all up at once, in interleaved rounds "
                  f"({ov['after']['rounds']} a run); `before` is the tree at commit {ov['before_commit']}, `after` this "
                  "one, each run with Infinity's server beside it. Ratios are to Infinity's server in the same round.",
                  "", "| target | shape | before: requests/s | before: p50 ms | before: p99 ms | before: vs Infinity "
                  "(rounds) | after: requests/s | after: p50 ms | after: p99 ms | after: vs Infinity (rounds) | after: "
                  "p50 / Infinity's (rounds) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for target, shapes in ov["after"]["table"].items():
            for shape, row in shapes.items():
                was = (ov.get("before") or {}).get("table", {}).get(target, {}).get(shape)
                before = (f"{was['requests_per_s']} | {was['p50_ms']} | {was['p99_ms']} | "
                          f"{', '.join(map(str, was['vs_infinity_by_round']))}") if was else "- | - | - | -"
                lines.append(f"| {target} | {shape} | {before} | {row['requests_per_s']} | {row['p50_ms']} | "
                             f"{row['p99_ms']} | {', '.join(map(str, row['vs_infinity_by_round']))} | "
                             f"{', '.join(map(str, row['p50_vs_infinity_by_round']))} |")
        before_profile = (ov.get("before") or {}).get("profile", {})
        stages_before, stages_after = before_profile.get("stages_ms", {}), ov["after"]["profile"]["stages_ms"]
        lines += ["", "One text's path through the worker, in process, stage by stage (median ms of "
                  f"{ov['after']['profile']['requests']} requests; the HTTP stack is what a transport's p50 adds): "
                  f"{before_profile.get('total_ms', '-')} ms before, {ov['after']['profile']['total_ms']} ms after.", "",
                  "| stage | before ms | after ms |", "|---|---|---|"]
        for stage in stages_after:
            lines.append(f"| {stage} | {stages_before.get(stage, '-')} | {stages_after[stage]} |")
        if "short_sentences" in ov["after"]:
            sentences = ov["after"]["short_sentences"]
            lines += ["", "Short sentences on all-MiniLM-L6-v2 at bfloat16 (8 a request, 16 clients), the same run: " +
                      "; ".join(f"{name} {row['sentences_per_s']} sentences/s "
                                f"({', '.join(map(str, row['vs_infinity_by_round']))}x Infinity's server by round)"
                                for name, row in sentences.items()) + "."]
            if "short_sentences" in (ov.get("before") or {}):
                was = ov["before"]["short_sentences"]
                lines += ["Before, in its own run: " + "; ".join(
                    f"{name} {row['sentences_per_s']} sentences/s ({', '.join(map(str, row['vs_infinity_by_round']))}x)"
                    for name, row in was.items()) + "."]
    if "priced" in results:
        pr, cost = results["priced"], results["priced"]["pricing_cost"]
        lines += ["", "## Every request priced", "",
                  "This round's hostile corpus (`tests/test_request_price.py`, which asserts each bound), each request "
                  "sent to the local endpoint of this tree and of the tree before requests were priced (commit "
                  f"{pr['before']}), serving all-MiniLM-L6-v2, a one-layer BERT of its width, a tiny BERT cross-encoder, "
                  "a tiny Qwen3-Reranker and a tiny ColBERT at float32 with `MAX_REQUEST_TOKENS=1000000` and "
                  "`MAX_OUTPUT_VALUES=1000000`: peak RSS of the worker's process over its idle RSS (sampled every "
                  "5 ms), the time to the answer or the refusal, and the worst time `/health` took, asked every 20 ms "
                  f"meanwhile. A request still working at {priced_stop()} is stopped and its worker started again.", "",
                  "| input | before: MB over idle | before: s | before: health ms | before: outcome | after: MB over idle "
                  "| after: s | after: health ms | after: outcome |", "|---|---|---|---|---|---|---|---|---|"]
        for row in pr["rows"]:
            cells = [f"{row[side]['peak_mb']:,} | {row[side]['seconds']} | {row[side]['health_worst_ms']} | "
                     f"{row[side]['outcome']}" for side in ("before", "after")]
            lines.append(f"| {row['input']} | {cells[0]} | {cells[1]} |")
        rounds = ", ".join(f"{r['before']:.1f} / {r['after']:.1f}" for r in cost["requests_per_s"])
        lines += ["", f"What pricing costs: short sentences ({cost['shape']}, all-MiniLM-L6-v2 at bfloat16) through "
                  "both trees' local endpoints `/runsync`, up at once, in interleaved rounds (the first tree "
                  f"alternating): after/before requests/s median {cost['ratio_median']}x (rounds from "
                  f"{cost['ratio_min']}x to {cost['ratio_max']}x; requests/s before / after by round: {rounds})."]
    if "long_inputs" in results:
        lg = results["long_inputs"]
        lines += ["", "## Long inputs", "",
                  "32 documents of one length in one request, at bfloat16, to this worker's local endpoint and to "
                  "Infinity's own server (`infinity_emb v2`, batch size 32), one process each, both up and sent each "
                  f"case in turn, {lg.get('rounds', 1)} interleaved rounds (the large row once), median time: `m3-tiny` is BGE-M3's "
                  "shape at 64 dimensions and 2 layers (attention, not weights, decides memory), `m3-large` BGE-M3's "
                  "real width and depth (XLM-R large, 24 layers, random weights). Peak RSS over idle, sampled every "
                  f"5 ms; a process past {lg['kill_at_gb']:g} GB over idle is stopped there (the machine has 24 GiB).",
                  "", "| model | tokens a document | worker: GB over idle | worker: tokens/s (time by round) | "
                  "worker: outcome | Infinity: GB over idle | Infinity: tokens/s (time by round) | Infinity: outcome |", "|---|---|---|---|---|---|---|---|"]
        for row in lg["rows"]:
            cells = [f"{row[side]['peak_gb']} | {row[side]['tokens_per_s'] or '-'} "
                     f"({', '.join(f'{x:g} s' for x in row[side].get('seconds_by_round', [row[side]['seconds']]))}) | "
                     f"{row[side]['outcome']}" for side in ("worker", "infinity server")]
            lines.append(f"| {row['model']} | {row['tokens_per_document']:,} | {cells[0]} | {cells[1]} |")
    if "limit" in results:
        lm = results["limit"]
        lines += ["", "## The whole path against the CPU's limit", "",
                  f"all-MiniLM-L6-v2 at {lm['dtype']}, {lm['threads']} threads. The limit: each text's FLOPs (real "
                  "tokens through every linear layer, and attention) at the peak of a matrix product of the model's "
                  "feed-forward shape measured in the same round. Each stage runs the same texts; the gap between "
                  "two rows is what the later stage adds (`bench/limit.py`). Medians of "
                  f"{lm['rounds']} interleaved rounds, every round's fraction shown.", ""]
        for name, w in lm["workloads"].items():
            lines += [f"**{name}** ({w['texts']} texts, {w['gflop_per_text']} GFLOP each):", "",
                      "| stage | texts/s | of the limit (rounds) |", "|---|---|---|"]
            lines += [f"| {stage} | {row['texts_per_s']} | **{row['of_limit']}** "
                      f"({', '.join(str(x) for x in row['of_limit_by_round'])}) |" for stage, row in w["stages"].items()]
            lines.append("")
    if "int8" in results:
        q, mp, fw = results["int8"]["quality"], results["int8"]["matrix_products"], results["int8"]["forward"]
        lines += ["", "## int8 on this CPU", "",
                  f"all-MiniLM-L6-v2 against float32 on the int8 gate's {q['sentences']} sentences "
                  f"(`engine/cpu/int8_gate.py`: every vector within cosine {q['gate']['min_cosine']}, top-10 neighbours "
                  f"at least {q['gate']['top10_same']:.0%} the same). W8A8 rows are emulated (weights and inputs of "
                  "each linear layer rounded to int8 and back) to measure quality alone.", "",
                  "| scheme | min cosine | mean cosine | top-10 the same | passes the gate |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {row['min_cosine']} | {row['mean_cosine']} | {row['top10_same']:.1%} | "
                  f"{'yes' if row['passes_gate'] else 'no'} |" for name, row in q["schemes"].items()]
        shapes = list(next(iter(mp["gflops"].values())))
        lines += ["", f"One linear layer at the model's shapes ({mp['rows']} rows: a batch of 32 padded sentences), "
                  f"{mp['threads']} threads, GFLOP/s, median of {mp['rounds']} interleaved rounds"
                  + (f" (torch.compile took {mp['compile_seconds']} s)" if mp.get("compile_seconds") else "") + ":", "",
                  f"| scheme | {' | '.join(shapes)} |", "|---|" + "---|" * len(shapes)]
        lines += [f"| {name} | {' | '.join(str(by_shape[s]) for s in shapes)} |" for name, by_shape in mp["gflops"].items()]
        lines += ["", "The whole forward pass, the worker's int8 against its bfloat16 and float32 (the speed-up "
                  "within each round, median and rounds):", "",
                  "| batch | variant | ms | speed-up | against |", "|---|---|---|---|---|"]
        lines += [f"| {batch} | {name} | {row['ms']} | **{row['speedup']}x** "
                  f"({', '.join(str(x) for x in row['speedup_by_round'])}) | {row['against']} |"
                  for batch, by_name in fw.items() for name, row in by_name.items()]
    if "precisions" in results:
        p = results["precisions"]
        lines += ["", "## Each precision beside Infinity's server", "",
                  f"all-MiniLM-L6-v2, short sentences (8 a request, 16 at once, {p['texts']} texts of "
                  f"{p['gflop_per_text']} GFLOP) through the worker's local endpoint and Infinity's own server, each "
                  "at `DTYPES` float32, bfloat16 and int8, six servers up at once, "
                  f"{p['rounds']} interleaved rounds (`bench/precisions.py`). The limit is the bfloat16 one "
                  f"(median {p['limit_texts_per_s']} texts/s), so int8 may pass 1. Quality: each server's vectors "
                  "for the int8 gate's corpus against sentence-transformers' at float32.", "",
                  "| precision | server | sentences/s (rounds) | of the limit | vs the worker at bfloat16 | "
                  "vs Infinity at the same precision | min cosine | mean cosine | top-10 the same |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['precision']} | {r['server']} | {r['sentences_per_s']} "
                  f"({', '.join(str(x) for x in r['by_round'])}) | {r['of_limit']} | {r['vs_worker_bfloat16']} | "
                  f"**{r['vs_infinity_same_precision']}** | {r['min_cosine']} | {r['mean_cosine']} | "
                  f"{r['top10_same']:.1%} |" for r in p["rows"]]
    if "flops" in results and "dtypes" in results["flops"]:
        f = results["flops"]
        lines += ["", "## Compute: how close to the hardware", "",
                  f"sentence-transformers' forward pass on a batch of 32 sentences, {f['threads']} threads, with "
                  "torch's linear layers and with the worker's packed ones (`PACK_CPU_WEIGHTS`), timed in "
                  f"{f.get('rounds', 1)} interleaved rounds, against a torch matmul at the model's shapes in the same "
                  "dtype; time by operator from torch's profiler (self CPU time).", "",
                  "| dtype, layers | padded tokens (real share) | GFLOP per batch | ms per batch | model GFLOP/s | "
                  "vs torch's layers (rounds) | GEMM GFLOP/s (h x h, h x 4h, 4h x h) | model / best GEMM | "
                  "time by operator |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, d in f["dtypes"].items():
            shares = ", ".join(f"{kind} {share:.0%}" for kind, share in d["time_by_operator"].items())
            speedup = (f"**{d['speedup_median']:.2f}** ({', '.join(f'{x:.2f}' for x in d['speedup_rounds'])})"
                       if "speedup_rounds" in d else "-")
            lines.append(f"| {name} | {d['padded_tokens_per_sentence']} ({d['real_token_share']:.0%}) | "
                         f"{d['model_gflop_per_batch']} | {d['ms_per_batch']} | **{d['model_gflops']}** | {speedup} | "
                         f"{', '.join(str(v) for v in d['gemm_gflops'].values())} | {d['model_over_gemm']:.2f} | "
                         f"{shares} |")
    if "backends" in results:
        lines += ["", "## Backends", "", "In-process engine, 8 sentences x concurrency 16; quality is each vector's "
                  "cosine to torch float32's.", "", "| backend | sentences/s | min cosine | mean cosine |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {row['sentences_per_s']} | {row['min_cosine_to_torch']} | {row['mean_cosine_to_torch']} |"
                  for name, row in results["backends"].items()]
    if "images" in results:
        i = results["images"]
        lines += ["", "## Images", "",
                  f"{i['model']}: **{i['images_per_s']} images/s** through the worker's service, {i['per_request']} "
                  f"images a request x {i['concurrency']} concurrent, {i['input']}. A real CLIP: "
                  f"{i['real_clip']}; this row measures the image path (decoding, preprocessing, batching), "
                  "not a real vision tower."]
    if "visual" in results:
        v = results["visual"]
        lines += ["", "## Visual documents", "",
                  "ColPali-family models through the worker's service (`bench/visual.py`), at this CPU's default "
                  f"precision ({v['dtype']}); PDFs of generated A4 pages of text, 8 pages a request, 2 requests at "
                  "once, rendering included. No trained checkpoint can be had offline here: the tiny models measure "
                  "the path's own cost, the real-size one the forward pass.", "",
                  "| model | pages/s | rendered at (pixels) | token vectors a page, at most |", "|---|---|---|---|"]
        for name, row in v["tiny"].items():
            lines.append(f"| tiny {name} (2 layers, 16 dimensions) | {row['pages_per_s']} | {row['render_pixels']:,} | "
                         f"{row['page_tokens_at_most']} |")
        if "real_size_colqwen2" in v:
            r = v["real_size_colqwen2"]
            lines.append(f"| random ColQwen2 of colqwen2-v1.0's shape (2.2 B parameters, 768 visual tokens a page at "
                         f"most) | {round(1 / r['seconds_per_page'], 3)} ({r['seconds_per_page']} s a page, "
                         f"{r['pages']} pages) | {768 * 28 * 28:,} | {r['page_vectors'][0][0]} (this page) |")
        lines += ["", "Bytes one page's token vectors take in the JSON answer:", "",
                  "| page | float (JSON numbers) | base64 (float32) | base64_float16 |", "|---|---|---|---|"]
        for name, row in v["bytes_per_page"].items():
            lines.append(f"| {name} | {row['float']:,} | {row['base64']:,} | {row['base64_float16']:,} |")
        lines += ["", "`pool_factor` against ranking (tiny ColPali, 12 queries against 24 rendered pages; each "
                  "query's MaxSim order of the pages with pooled vectors against the unpooled ones). A random model "
                  "separates pages by little, so every change of order counts here: read these as a lower bound, "
                  "and measure on your own corpus with the trained model.", "",
                  "| pool_factor | vectors kept | top-1 kept | top-3 overlap | Kendall's tau |", "|---|---|---|---|---|"]
        for row in v["pooling"]:
            lines.append(f"| {row['pool_factor']} | {row['vectors_kept']} | {row['top1_kept']} | {row['top3_overlap']} "
                         f"| {row['kendall_tau']} |")
    if "backfill" in results:
        b = results["backfill"]
        lines += ["", "## Embedding a corpus", "",
                  f"`src/corpus.py` embedding {b['rows']:,} short rows (all-MiniLM-L6-v2 at this CPU's default precision) "
                  "through the local endpoint, by each `--via`, against the in-process engine's ceiling (the worker's "
                  f"service without HTTP, 128 rows a call, 8 at once: {b['in_process_rows_per_s']:,} rows/s) and a plain "
                  "sequential loop with the OpenAI SDK (128 rows a call); interleaved rounds, the client on the same two "
                  "cores as the worker (`bench/backfill.py`).", "",
                  "| client | rows/s (median) | rounds | of the in-process ceiling |", "|---|---|---|---|"]
        for name, row in b["rows_per_s"].items():
            lines.append(f"| {name} | {row['median']:,} | {', '.join(map(str, row['rounds']))} | {row['of_ceiling']} |")
        memory = "; ".join(f"{rows}: {m['peak_mb']} MB peak RSS ({m['seconds']} s)" for rows, m in b["client_memory"].items())
        lines += ["", f"The client's memory, against a stand-in endpoint that answers at once: {memory}. It reads the "
                  "corpus a slice at a time and writes each answer as it arrives; what grows is the duplicate-id check, "
                  "8 bytes a row."]
    if "audio" in results:
        a = results["audio"]
        lines += ["", "## Audio", "",
                  f"{a['model']}: **{a['clips_per_s']} clips/s** through the worker's service, {a['per_request']} "
                  f"clips a request x {a['concurrency']} concurrent, {a['input']}. A real CLAP: {a['real_clap']}; "
                  "this row measures the audio path (decoding, resampling, features, batching), not a real audio "
                  "tower."]
    if "hybrid" in results:
        sparse, m3 = results["hybrid"]["sparse"], results["hybrid"]["bge_m3"]
        lines += ["", "## Sparse and multi-vector", "",
                  f"A SPLADE of splade-v3's shape (BERT-base masked LM), {sparse['texts']} documents of 20-200 words "
                  f"at {sparse['dtype']}, in one call each, interleaved rounds: the worker (its service, through the "
                  f"engine) **{sparse['ratio']}x** sentence-transformers' `SparseEncoder.encode` (rounds "
                  f"{', '.join(map(str, sparse['ratio_by_round']))}; {sparse['worker_texts_per_s']} against "
                  f"{sparse['sparse_encoder_texts_per_s']} texts/s); the first text's weights agree to cosine "
                  f"{sparse['cosine_to_sparse_encoder']}.",
                  "",
                  f"A model of bge-m3's shape (XLM-R large), {m3['texts']} documents at {m3['dtype']}, the response "
                  f"encoded as JSON: dense, sparse and multi-vector from one call cost **{m3['ratio']}x** the "
                  f"dense-only call (rounds {', '.join(map(str, m3['ratio_by_round']))}; seconds {m3['seconds']}; "
                  f"response bytes {m3['response_bytes']})."]
    if "gpu" in results:
        lines += ["", "## GPU", "", results["gpu"]]
    return "\n".join(lines) + "\n"
