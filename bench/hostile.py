"""Hostile inputs, before and after the request budgets: the tests' corpus
(`tests/test_hostile_inputs.py`) and two BGE-M3 requests of realistic size, sent to the local
endpoint of this tree and of the tree before the budgets (`BEFORE`, checked out with git
worktree), one process each, with the worker's peak RSS over idle sampled every 5 ms; and
what hashing large weights costs at cold start."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import ROOT, checkout_of, serve_local_endpoint

sys.path.insert(0, str(ROOT / "tests"))

BEFORE = "8945635"  # the last commit without the request budgets
M3_TEXTS, M3_WORDS = 256, 480


def m3_shaped(folder: Path) -> Path:
    """BGE-M3's layout and width (XLM-R, 1,024 dimensions, 512 positions), one layer, random
    weights and the tests' small tokenizer: the token vectors are BGE-M3's size."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    source = ROOT / "tests" / "data" / "hybrid" / "bge-m3"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors", "*.pt", "config.json"))
    base = XLMRobertaConfig.from_pretrained(source)
    config = XLMRobertaConfig(vocab_size=base.vocab_size, hidden_size=1024, num_hidden_layers=1,
                              num_attention_heads=16, intermediate_size=1024, max_position_embeddings=514,
                              pad_token_id=base.pad_token_id, bos_token_id=base.bos_token_id,
                              eos_token_id=base.eos_token_id)
    torch.manual_seed(0)
    XLMRobertaModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    torch.save(torch.nn.Linear(1024, 1024).state_dict(), folder / "colbert_linear.pt")
    torch.save(torch.nn.Linear(1024, 1).state_dict(), folder / "sparse_linear.pt")
    config_file = folder / "tokenizer_config.json"
    config_file.write_text(config_file.read_text().replace('"model_max_length": 128', '"model_max_length": 512'))
    return folder


def _serve(tree: Path, variables: dict[str, str]) -> tuple[subprocess.Popen, str]:
    return serve_local_endpoint(tree, variables, "hostile")


def _measure(server: subprocess.Popen, base: str, job: dict) -> dict:
    from process_watch import PeakMemory, settle

    settle(server.pid)
    started = time.perf_counter()
    with PeakMemory(server.pid) as memory:
        try:
            reply = httpx.post(f"{base}/runsync", json={"input": job}, timeout=900).json()
        except httpx.HTTPError as exc:
            reply = {"status": "FAILED", "error": f"no answer: {type(exc).__name__}"}
    alive = server.poll() is None
    outcome = (f"{len(reply['output']['data'])} vectors" if reply.get("status") == "COMPLETED"
               else (reply.get("error") or str(reply))[:140] if alive else "the worker died")
    return {"peak_mb": round(memory.over_idle_mb), "seconds": round(time.perf_counter() - started, 2),
            "outcome": outcome}


def hostile() -> dict:
    import tiny_families
    from test_hostile_inputs import CASES, M3

    with tempfile.TemporaryDirectory() as scratch, checkout_of(BEFORE, Path(scratch)) as before:
        scratch = Path(scratch)
        clip, clap = tiny_families.clip(scratch / "clip"), tiny_families.clap(scratch / "clap")
        m3_large = m3_shaped(scratch / "m3-shaped")
        variables = {"MODEL_NAMES": f"{clip};{clap};{M3};{m3_large}", "SERVED_MODEL_NAMES": "clip;clap;m3;m3-shaped",
                     "BATCH_SIZES": "4;4;4;16", "MAX_OUTPUT_VALUES": "1000000", "DTYPES": "float32",
                     "MEMORY_TRIM_INTERVAL": "0.2", "HF_HUB_OFFLINE": "1"}
        text = " ".join(["word"] * M3_WORDS)
        cases = {name: make for name, (make, _, _) in CASES.items()}
        cases[f"BGE-M3 shape, dense only, {M3_TEXTS} texts of 500 tokens"] = lambda: {
            "model": "m3-shaped", "input": [text] * M3_TEXTS}
        cases[f"BGE-M3 shape, multi_vector, {M3_TEXTS} texts of 500 tokens"] = lambda: {
            "model": "m3-shaped", "input": [text] * M3_TEXTS, "embedding_types": ["multi_vector"]}
        rows: dict[str, dict] = {name: {"input": name} for name in cases}
        for label, tree in (("before", before), ("after", ROOT)):
            server, base = _serve(tree, variables)
            try:
                for name, make in cases.items():
                    if server.poll() is not None:
                        server, base = _serve(tree, variables)
                    rows[name][label] = _measure(server, base, make())
            finally:
                server.terminate()
                server.wait(60)
    return {"before": BEFORE, "rows": list(rows.values()), "hashing": hash_cost()}


def hash_cost(size: int = 1 << 30) -> dict:
    """sha256 of a 1 GiB file as the download check reads it (1 MiB chunks, file in the page cache)."""
    from embedding_worker.engine.model_sources.cache_layout import HubFile
    from embedding_worker.engine.model_sources.snapshot_check import file_digest

    with tempfile.NamedTemporaryFile() as file:
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            file.write(block)
        file.flush()
        expected = HubFile("model.safetensors", size, sha256="0" * 64)
        file_digest(Path(file.name), expected)  # into the page cache
        started = time.perf_counter()
        file_digest(Path(file.name), expected)
        seconds = time.perf_counter() - started
    return {"bytes": size, "seconds": round(seconds, 3), "gb_per_s": round(size / seconds / 1e9, 2),
            "bge_m3_seconds": round(2_270_000_000 / (size / seconds), 2), "hashlib": hashlib.sha256().name}
