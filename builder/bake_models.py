"""Bake models into the image's Hugging Face cache at build time, so start-up downloads nothing.

Reads the same variables as the worker (passed as build arguments):
MODEL_NAMES, MODEL_REVISIONS, BACKEND, ONNX_QUANTIZED, and writes to BAKED_HF_CACHE (/opt/models/hub).
Hub ids are downloaded as the worker downloads them (retries, resumed transfers, checked
files; HF_TOKEN, or the build secret /run/secrets/hf_token, for gated models), with the
hub's file list kept beside each snapshot so the worker can check it offline at start-up;
with HF_HUB_OFFLINE=1 they are checked, then copied from the local Hugging Face cache
(HF_HUB_CACHE) instead. With BACKEND=optimum, a model
that ships no ONNX file gets one exported now (and an int8 one with ONNX_QUANTIZED).

    MODEL_NAMES="BAAI/bge-small-en-v1.5;BAAI/bge-reranker-base" python builder/bake_models.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from embedding_worker.errors import ModelLoadError  # noqa: E402
from embedding_worker.engine.model_sources.cache_layout import find_snapshot, lay_into_cache  # noqa: E402
from embedding_worker.engine.model_sources.download import download  # noqa: E402
from embedding_worker.engine.model_sources.hub import HubAccess  # noqa: E402
from embedding_worker.engine.model_sources.snapshot_check import check_snapshot  # noqa: E402
from embedding_worker.engine.onnx_support import ensure_onnx  # noqa: E402

TOKEN_SECRET = Path("/run/secrets/hf_token")


def split(value: str) -> list[str]:
    return [item.strip() for item in value.split(";") if item.strip()]


def bake(repo_id: str, revision: str | None, target: Path, onnx: bool, quantized: bool = False) -> Path:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        from huggingface_hub import constants

        local = find_snapshot(Path(constants.HF_HUB_CACHE), repo_id, revision)
        if local is None:
            raise ModelLoadError(f"{repo_id}: offline, and not in the local cache {constants.HF_HUB_CACHE}")
        if damage := check_snapshot(local, None, onnx):
            raise ModelLoadError(f"{repo_id}: the local cache's snapshot {local} is damaged: {damage[0]}")
        snapshot = lay_into_cache(local, repo_id, target, commit=local.name, ref=revision or "main")
    else:
        timeout = float(os.environ.get("MODEL_DOWNLOAD_TIMEOUT", "300"))
        snapshot = download(repo_id, revision, target, HubAccess.from_environment(timeout), onnx=onnx)
    if onnx:
        ensure_onnx(snapshot, target.parent, quantized=quantized)
    return snapshot


def main() -> int:
    names = split(os.environ.get("MODEL_NAMES", ""))
    if not names:
        print("bake: MODEL_NAMES is empty; the image stays generic")
        return 0
    revisions = split(os.environ.get("MODEL_REVISIONS", "")) or [None] * len(names)
    if len(revisions) != len(names):
        print("bake: MODEL_REVISIONS needs one revision per model in MODEL_NAMES", file=sys.stderr)
        return 1
    if not os.environ.get("HF_TOKEN") and TOKEN_SECRET.is_file():
        os.environ["HF_TOKEN"] = TOKEN_SECRET.read_text().strip()
    target = Path(os.environ.get("BAKED_HF_CACHE", "/opt/models/hub"))
    onnx = os.environ.get("BACKEND", "torch").strip().lower() == "optimum"
    quantized = os.environ.get("ONNX_QUANTIZED", "").strip().lower() in ("1", "true", "yes")
    for name, revision in zip(names, revisions):
        started = time.perf_counter()
        try:
            snapshot = bake(name, revision, target, onnx, quantized)
        except (ModelLoadError, ValueError, OSError) as err:
            print(f"bake: {err}", file=sys.stderr)
            return 1
        print(f"bake: {name} -> {snapshot} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
