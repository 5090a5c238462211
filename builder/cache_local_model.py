"""Lay a model folder into a Hugging Face hub cache, so it loads by its hub id offline.

The result has the layout the hub client writes (and RunPod's cached models use):
`<hub cache>/models--org--name/snapshots/<revision>/...` and `refs/main`.

    python builder/cache_local_model.py SOURCE_DIR org/name HUB_CACHE_DIR
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path


def snapshot_revision(source: Path) -> str:
    """A stable 40-hex revision derived from the folder's file names and contents."""
    digest = hashlib.sha1()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(source)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_local_model(source: Path, repo_id: str, hub_cache: Path) -> Path:
    """Copy `source` into `hub_cache` as the `main` revision of `repo_id`; return the snapshot."""
    if repo_id.count("/") != 1:
        raise ValueError(f"repo id must look like 'org/name', got {repo_id!r}")
    if not (source / "config.json").is_file():
        raise ValueError(f"{source} is not a model folder (no config.json)")
    revision = snapshot_revision(source)
    repo_dir = hub_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    if not snapshot.is_dir():
        partial = snapshot.with_name(revision + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(".git*", "__pycache__"))
        partial.rename(snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder holding config.json and weights")
    parser.add_argument("repo_id", help="hub id to file it under, e.g. org/name")
    parser.add_argument("hub_cache", type=Path, help="hub cache folder (HF_HUB_CACHE)")
    args = parser.parse_args()
    print(cache_local_model(args.source, args.repo_id, args.hub_cache))


if __name__ == "__main__":
    main()
