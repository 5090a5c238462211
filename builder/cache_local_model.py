"""Lay a model folder into a Hugging Face hub cache, so it loads by its hub id offline.

The result has the layout the hub client writes (and RunPod's cached models use):
`<hub cache>/models--org--name/snapshots/<revision>/...` and `refs/main`.

    python builder/cache_local_model.py SOURCE_DIR org/name HUB_CACHE_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from embedding_worker.engine.model_sources.cache_layout import lay_into_cache  # noqa: E402


def cache_local_model(source: Path, repo_id: str, hub_cache: Path) -> Path:
    return lay_into_cache(source, repo_id, hub_cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder holding config.json and weights")
    parser.add_argument("repo_id", help="hub id to file it under, e.g. org/name")
    parser.add_argument("hub_cache", type=Path, help="hub cache folder (HF_HUB_CACHE)")
    args = parser.parse_args()
    print(cache_local_model(args.source, args.repo_id, args.hub_cache))


if __name__ == "__main__":
    main()
