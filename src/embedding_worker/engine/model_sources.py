"""Where each model's files come from, so that a cold start downloads nothing it need not.

A hub id is looked up, in this order:
1. baked into the image (`BAKED_HF_CACHE`, filled at build time by `builder/bake_models.py`);
2. RunPod's cached models (`<RUNPOD_VOLUME_DIR>/huggingface-cache/hub`), which is also where
   earlier downloads went when a network volume is mounted;
3. the container's Hugging Face cache (`HF_HUB_CACHE`);
4. otherwise downloaded from the hub (`HF_TOKEN` for gated models) into the network volume
   when one is mounted and writable, so the next cold start finds it, else into (3).
A local folder is used as it is. Whatever is found is loaded from its folder, offline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from embedding_worker.errors import ModelLoadError

log = logging.getLogger(__name__)

# Weights for other frameworks and runtimes that no backend here reads.
IGNORED_FILES = ["*.h5", "*.ot", "*.msgpack", "*.tflite", "openvino/*", "coreml/*", "*.mlmodel"]
ONNX_FILES = ["*.onnx", "*.onnx_data", "onnx/*"]


class ModelSource(str, Enum):
    local = "local folder"
    baked = "baked into the image"
    runpod_cache = "RunPod model cache"
    hf_cache = "Hugging Face cache"
    downloaded = "downloaded from the hub"


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # the folder to load from
    source: ModelSource


@dataclass(frozen=True)
class ModelLocations:
    baked_cache: Path
    runpod_cache: Path
    hf_cache: Path

    @classmethod
    def of(cls, baked_cache: str, runpod_volume: str) -> ModelLocations:
        from huggingface_hub import constants

        return cls(
            baked_cache=Path(baked_cache),
            runpod_cache=Path(runpod_volume) / "huggingface-cache" / "hub",
            hf_cache=Path(constants.HF_HUB_CACHE),
        )

    @property
    def download_cache(self) -> Path:
        volume = self.runpod_cache.parents[1]
        if volume.is_dir() and os.access(volume, os.W_OK):
            return self.runpod_cache
        return self.hf_cache


def resolve_model(
    source: str, revision: str | None, locations: ModelLocations, onnx: bool = False
) -> ResolvedModel:
    """Find or fetch a model's folder; raise `ModelLoadError` saying what was tried."""
    if Path(source).is_dir():
        return ResolvedModel(Path(source), ModelSource.local)
    if source.count("/") != 1 or source.startswith(("/", ".")):
        raise ModelLoadError(f"could not load model {source!r}: no such folder, and not a hub id (org/name)")
    for kind, cache in (
        (ModelSource.baked, locations.baked_cache),
        (ModelSource.runpod_cache, locations.runpod_cache),
        (ModelSource.hf_cache, locations.hf_cache),
    ):
        path = cached_snapshot(source, revision, cache)
        if path is not None:
            return ResolvedModel(path, kind)
    return ResolvedModel(download(source, revision, locations.download_cache, onnx), ModelSource.downloaded)


def cached_snapshot(repo_id: str, revision: str | None, cache: Path) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not cache.is_dir():
        return None
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def download(repo_id: str, revision: str | None, cache: Path, onnx: bool = False) -> Path:
    """Fetch a snapshot from the hub into `cache` (the token comes from HF_TOKEN)."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            ignore_patterns=IGNORED_FILES + ([] if onnx else ONNX_FILES),
        )
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, gated, disk full: one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not load model {repo_id!r}: not in the image or any cache, and the download "
            f"failed: {reason}"
        ) from exc
    return Path(path)


def lay_into_cache(
    folder: Path, repo_id: str, cache: Path, commit: str | None = None, ref: str = "main"
) -> Path:
    """Copy a model folder into `cache` in the hub client's layout; return the snapshot.

    `<cache>/models--org--name/snapshots/<commit>/...` plus `refs/<ref>`, so the model loads
    by its hub id offline. Without a commit, one is derived from the folder's contents.
    """
    if repo_id.count("/") != 1:
        raise ValueError(f"repo id must look like 'org/name', got {repo_id!r}")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a model folder (no config.json)")
    commit = commit or _content_hash(folder)
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    if not snapshot.is_dir():
        partial = snapshot.with_name(commit + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(folder, partial, ignore=shutil.ignore_patterns(".git*", "__pycache__"))
        partial.rename(snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


def _content_hash(folder: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
