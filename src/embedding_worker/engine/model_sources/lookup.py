"""Where each model's files come from, so that a cold start downloads nothing it need not,
and never loads a model that is only partly there.

A hub id is looked up, in this order:
1. baked into the image (`BAKED_HF_CACHE`, filled at build time by `builder/bake_models.py`);
2. RunPod's cached models (`<RUNPOD_VOLUME_DIR>/huggingface-cache/hub`), which is also where
   earlier downloads went when a network volume is mounted;
3. the container's Hugging Face cache (`HF_HUB_CACHE`);
4. otherwise downloaded from the hub (`HF_TOKEN` for gated models) into the network volume
   when one is mounted and writable, so the next cold start finds it, else into (3).
Each snapshot found is checked first (`snapshot_check.py`); a damaged one is passed over,
and the download into the writable cache fetches only what is missing or damaged there.
A local folder is used as it is. Whatever is found is loaded from its folder, offline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from embedding_worker.engine.model_sources.cache_layout import (
    RepoFiles,
    find_snapshot,
    is_writable,
    read_file_list,
    repo_folder,
    write_file_list,
)
from embedding_worker.engine.model_sources.download import download
from embedding_worker.engine.model_sources.hub import Hub, HubAccess
from embedding_worker.engine.model_sources.snapshot_check import Damage, check_snapshot
from embedding_worker.errors import ModelLoadError

log = logging.getLogger(__name__)

LISTING_CHECK_SECONDS = 8.0  # how long a cached snapshot's check may wait for the hub's file list


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
        if volume.is_dir() and is_writable(volume):
            return self.runpod_cache
        return self.hf_cache


def resolve_model(
    source: str, revision: str | None, locations: ModelLocations, onnx: bool = False,
    access: HubAccess | None = None,
) -> ResolvedModel:
    """Find, check, and if need be fetch or repair a model's folder; raise `ModelLoadError`
    saying what was tried and what to do."""
    if Path(source).is_dir():
        return ResolvedModel(Path(source), ModelSource.local)
    if source.count("/") != 1 or source.startswith(("/", ".")):
        raise ModelLoadError(f"could not load model {source!r}: no such folder, and not a hub id (org/name)")
    access = access or HubAccess.from_environment(timeout=300.0)
    damaged: list[tuple[Path, Path, list[Damage]]] = []
    for kind, cache in (
        (ModelSource.baked, locations.baked_cache),
        (ModelSource.runpod_cache, locations.runpod_cache),
        (ModelSource.hf_cache, locations.hf_cache),
    ):
        snapshot = find_snapshot(cache, source, revision)
        if snapshot is None:
            continue
        damage = check_snapshot(snapshot, _file_list(source, snapshot, cache, access), onnx)
        if not damage:
            return ResolvedModel(snapshot, kind)
        damaged.append((cache, snapshot, damage))
        log.warning("model %r: the snapshot in %s (%s) is damaged: %s; %s", source, cache, kind.value,
                    "; ".join(map(str, damage[:3])),
                    "passing it over" if access.offline or cache != locations.download_cache else "repairing it")
    if access.offline:
        raise _offline_error(source, revision, damaged)
    target = locations.download_cache
    if not damaged:
        log.info("model %r: not in the image (%s), RunPod's model cache (%s) or the Hugging Face cache (HF_HOME: %s); "
                 "downloading it from %s into %s", source, locations.baked_cache, locations.runpod_cache,
                 locations.hf_cache, access.endpoint, target)
    try:
        path = download(source, revision, target, access, onnx, donors=tuple(d[1] for d in damaged))
    except ModelLoadError as err:
        if damaged:  # say what was found before the hub failed
            cache, _, damage = damaged[0]
            raise ModelLoadError(f"{err}; the snapshot in {cache} is damaged ({damage[0]})") from err
        raise
    return ResolvedModel(path, ModelSource.downloaded)


def _file_list(repo_id: str, snapshot: Path, cache: Path, access: HubAccess) -> RepoFiles | None:
    """The hub's list of the snapshot's files: written beside it at download, else asked of the
    hub briefly (and kept, where the cache is writable); None offline or when the hub is away."""
    listing = read_file_list(snapshot)
    if listing is not None or access.offline:
        return listing
    try:
        with Hub(replace(access, timeout=LISTING_CHECK_SECONDS), repo_id, snapshot.name) as hub:
            listing = hub.repo_files()
    except ModelLoadError as err:  # the hub is away or refuses: the files' own checks remain
        log.info("model %r: the hub's file list could not be had (%s); checking the snapshot's files alone",
                 repo_id, err)
        return None
    if is_writable(cache):
        try:
            write_file_list(cache, listing)
        except OSError:
            pass
    return listing


def _offline_error(source: str, revision: str | None, damaged: list[tuple[Path, Path, list[Damage]]]) -> ModelLoadError:
    if not damaged:
        rev = f" at revision {revision!r}" if revision else ""
        return ModelLoadError(
            f"could not load model {source!r}{rev}: not in the image or any cache, and HF_HUB_OFFLINE=1 forbids "
            "downloading it: unset HF_HUB_OFFLINE, or bake the model into the image"
        )
    cache, _, damage = damaged[0]
    return ModelLoadError(
        f"could not load model {source!r}: its snapshot in {cache} is damaged: {'; '.join(map(str, damage[:3]))}; "
        f"HF_HUB_OFFLINE=1 forbids repairing it: unset HF_HUB_OFFLINE so that the damaged files are downloaded "
        f"again, or delete {repo_folder(cache, source)} and restore the model"
    )

