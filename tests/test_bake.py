"""builder/bake_models.py: from a local Hugging Face cache, offline, it produces a baked
cache from which the worker starts with HF_HUB_OFFLINE=1 and nothing else to hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import EMBEDDER_ID, RERANKER_ID, ROOT


def bake(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "builder/bake_models.py"], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def start_worker(tmp_path: Path, baked: Path, job: dict, backend: str = "torch", models: str = EMBEDDER_ID):
    empty = tmp_path / "empty"
    env = {**os.environ, "MODEL_NAMES": models, "BACKEND": backend, "BAKED_HF_CACHE": str(baked),
           "RUNPOD_VOLUME_DIR": str(empty / "volume"), "HF_HOME": str(empty),
           "HF_HUB_CACHE": str(empty / "hub"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "src/handler.py", "--test_input", json.dumps({"input": job})],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_bake_then_start_from_the_baked_cache(hub_cache, tmp_path, sentence_transformer):
    baked = tmp_path / "baked"
    done = bake({"MODEL_NAMES": f"{EMBEDDER_ID};{RERANKER_ID}", "BAKED_HF_CACHE": str(baked), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("bake: ") == 2
    for repo in (EMBEDDER_ID, RERANKER_ID):
        repo_dir = baked / ("models--" + repo.replace("/", "--"))
        commit = (repo_dir / "refs" / "main").read_text()
        assert (repo_dir / "snapshots" / commit / "config.json").is_file()

    started = start_worker(tmp_path, baked, {"model": EMBEDDER_ID, "input": "Hello, world!"},
                           models=f"{EMBEDDER_ID};{RERANKER_ID}")
    assert started.returncode == 0, started.stderr[-2000:]
    assert f"model '{EMBEDDER_ID}': baked into the image ({baked}/models--" in started.stderr
    assert f"model '{RERANKER_ID}': baked into the image" in started.stderr
    output = json.loads(next(l for l in started.stdout.splitlines() if l.startswith("{")))
    expected = sentence_transformer.encode(["Hello, world!"], normalize_embeddings=True)[0]
    assert np.abs(np.array(output["data"][0]["embedding"]) - expected).max() <= 1e-5


def test_bake_for_onnx_exports_a_model_file(hub_cache, tmp_path):
    baked = tmp_path / "baked"
    done = bake({"MODEL_NAMES": EMBEDDER_ID, "BACKEND": "optimum", "BAKED_HF_CACHE": str(baked),
                 "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    snapshots = baked / ("models--" + EMBEDDER_ID.replace("/", "--")) / "snapshots"
    exported = list(snapshots.glob("*/onnx/model.onnx"))
    assert len(exported) == 1

    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} >= {"input_ids", "attention_mask"}
    assert session.get_outputs()[0].name == "last_hidden_state"


def test_without_models_the_image_stays_generic(tmp_path):
    done = bake({"MODEL_NAMES": "", "BAKED_HF_CACHE": str(tmp_path / "baked")})
    assert done.returncode == 0 and "stays generic" in done.stdout
    assert not (tmp_path / "baked").exists()


@pytest.mark.parametrize("env, message", [
    ({"MODEL_NAMES": "nobody/nothing", "HF_HUB_OFFLINE": "1"}, "bake: nobody/nothing: offline, and not in the local cache"),
    ({"MODEL_NAMES": "a/b;c/d", "MODEL_REVISIONS": "main"}, "bake: MODEL_REVISIONS needs one revision per model"),
])
def test_bake_failures_exit_1_with_one_line(hub_cache, tmp_path, env, message):
    done = bake({**env, "BAKED_HF_CACHE": str(tmp_path / "baked")})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(message)
