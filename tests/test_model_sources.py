"""Model resolution at start-up: baked image cache, then RunPod's cache, then the
Hugging Face cache, then a download; each model's log line names where it came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EMBEDDER_ID, ROOT
from cache_local_model import cache_local_model
from embedding_worker.errors import ModelLoadError
from embedding_worker.engine.model_sources import ModelLocations, ModelSource, resolve_model


@pytest.fixture
def places(tmp_path: Path):
    """An empty image cache, RunPod volume and container cache."""
    baked, volume, hf_cache = tmp_path / "baked", tmp_path / "runpod-volume", tmp_path / "hf"
    for folder in (baked, volume, hf_cache):
        folder.mkdir()
    locations = ModelLocations(baked, volume / "huggingface-cache" / "hub", hf_cache)
    return locations


def test_runpod_cache_is_found_offline(places, embedder_path):
    snapshot = cache_local_model(embedder_path, EMBEDDER_ID, places.runpod_cache)
    found = resolve_model(EMBEDDER_ID, None, places)
    assert found == (found.__class__(snapshot, ModelSource.runpod_cache))


def test_baked_cache_is_preferred(places, embedder_path):
    cache_local_model(embedder_path, EMBEDDER_ID, places.runpod_cache)
    cache_local_model(embedder_path, EMBEDDER_ID, places.hf_cache)
    baked = cache_local_model(embedder_path, EMBEDDER_ID, places.baked_cache)
    found = resolve_model(EMBEDDER_ID, None, places)
    assert (found.path, found.source) == (baked, ModelSource.baked)


def test_runpod_cache_before_the_container_cache(places, embedder_path):
    cache_local_model(embedder_path, EMBEDDER_ID, places.hf_cache)
    in_runpod = cache_local_model(embedder_path, EMBEDDER_ID, places.runpod_cache)
    assert resolve_model(EMBEDDER_ID, None, places).path == in_runpod


def test_container_cache_last(places, embedder_path):
    snapshot = cache_local_model(embedder_path, EMBEDDER_ID, places.hf_cache)
    found = resolve_model(EMBEDDER_ID, None, places)
    assert (found.path, found.source) == (snapshot, ModelSource.hf_cache)


def test_a_local_folder_is_used_as_it_is(places, embedder_path):
    found = resolve_model(str(embedder_path), None, places)
    assert (found.path, found.source) == (embedder_path, ModelSource.local)


def test_a_revision_that_is_not_cached_is_not_taken_for_another(places, embedder_path):
    cache_local_model(embedder_path, EMBEDDER_ID, places.runpod_cache)
    with pytest.raises(ModelLoadError, match="not in the image or any cache, and HF_HUB_OFFLINE=1 forbids downloading it"):
        resolve_model(EMBEDDER_ID, "v9.9", places)


def test_downloads_go_to_the_volume_when_one_is_mounted(places, tmp_path):
    assert places.download_cache == places.runpod_cache
    without_volume = ModelLocations(places.baked_cache, tmp_path / "absent" / "huggingface-cache" / "hub",
                                    places.hf_cache)
    assert without_volume.download_cache == places.hf_cache


def test_nothing_cached_and_offline_fails_in_one_line(places):
    with pytest.raises(ModelLoadError) as failed:
        resolve_model("nobody/nothing", None, places)
    message = str(failed.value)
    assert message.startswith("could not load model 'nobody/nothing': not in the image or any cache")
    assert "\n" not in message


def test_neither_folder_nor_hub_id(places, tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder, and not a hub id"):
        resolve_model(str(tmp_path / "missing"), None, places)


def test_the_worker_starts_from_runpod_cache_and_logs_the_source(tmp_path, embedder_path, sentence_transformer):
    """As on RunPod: nothing baked, nothing in the container cache, the hub unreachable."""
    import json

    import numpy as np

    volume = tmp_path / "runpod-volume"
    cache_local_model(embedder_path, EMBEDDER_ID, volume / "huggingface-cache" / "hub")
    env = {
        **os.environ,
        "MODEL_NAMES": EMBEDDER_ID,
        "RUNPOD_VOLUME_DIR": str(volume),
        "BAKED_HF_CACHE": str(tmp_path / "no-baked-cache"),
        "HF_HOME": str(tmp_path / "empty-hf-home"),
        "HF_HUB_CACHE": str(tmp_path / "empty-hf-home" / "hub"),
        "HF_HUB_OFFLINE": "1",
    }
    job = json.dumps({"input": {"model": EMBEDDER_ID, "input": "Hello, world!"}})
    done = subprocess.run([sys.executable, "src/handler.py", "--test_input", job], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    assert f"model '{EMBEDDER_ID}': RunPod model cache ({volume}/huggingface-cache/hub/models--" in log
    output = json.loads(next(l for l in done.stdout.splitlines() if l.startswith("{")))
    expected = sentence_transformer.encode(["Hello, world!"], normalize_embeddings=True)[0]
    assert np.abs(np.array(output["data"][0]["embedding"]) - expected).max() <= 1e-5
