"""The Dockerfile and RunPod Hub files, checked statically (no Docker engine here)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTRUCTIONS = [
    line
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def instructions(keyword: str) -> list[list[str]]:
    return [shlex.split(line)[1:] for line in INSTRUCTIONS if line.split()[0].upper() == keyword]


def copied_sources() -> list[str]:
    sources = []
    for args in instructions("COPY") + instructions("ADD"):
        if any(a.startswith("--from=") for a in args):
            continue
        sources += [a for a in args if not a.startswith("--")][:-1]
    return sources


def dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    allowed = True
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            allowed = negate
    return allowed


def test_every_copied_source_exists_and_is_in_the_build_context():
    sources = copied_sources()
    assert sources, "no COPY found"
    for source in sources:
        assert (ROOT / source).exists(), source
        assert dockerignore_allows(source.rstrip("/")), f"{source} is excluded by .dockerignore"


def test_the_image_runs_the_handler_unbuffered():
    (line,) = [line for line in INSTRUCTIONS if line.split()[0].upper() == "CMD"]
    command = json.loads(line.split(None, 1)[1])  # exec form: signals reach python
    assert command[:2] == ["python", "-u"] and command[2] == "src/handler.py"
    assert (ROOT / command[2]).is_file()


def requirement_lines(name: str) -> list[str]:
    return [line.strip() for line in (ROOT / name).read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def pins(name: str) -> dict[str, str]:
    """package (extras dropped) -> pinned version, following `-r` includes."""
    found: dict[str, str] = {}
    for line in requirement_lines(name):
        if line.startswith("-r "):
            found.update(pins(line.split()[1]))
        elif not line.startswith("-"):
            package, _, version = line.partition("==")
            assert version, f"{name}: {line!r} is not pinned with =="
            found[package.split("[")[0].lower()] = version
    return found


def test_named_requirements_exist_and_every_package_is_pinned():
    for name in set(re.findall(r"[\w./-]*requirements[\w.-]*\.txt", DOCKERFILE)):
        assert (ROOT / Path(name).name).is_file(), name
    for name in ("requirements.txt", "requirements-cpu.txt", "requirements-gpu.txt"):
        pins(name)


def test_one_cuda_line_in_the_image_the_tags_and_the_hub_files():
    gpu = requirement_lines("requirements-gpu.txt")
    (index,) = [line.split()[1] for line in gpu if line.startswith("--extra-index-url")]
    tag = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)", index).group(1)
    assert pins("requirements-gpu.txt")["torch"].endswith(f"+cu{tag}")
    bake = (ROOT / "docker-bake.hcl").read_text()
    cuda = re.search(r'variable "CUDA_VERSION" \{ default = "(\d+)\.(\d+)" \}', bake)
    assert cuda and cuda.group(1) + cuda.group(2) == tag, "docker-bake.hcl tags another CUDA line"
    line = f"{cuda.group(1)}.{cuda.group(2)}"
    # allowedCudaVersions lists host drivers: the same in both files, every 12.x and 13.x
    # driver from the floor up (a CUDA 12 build runs on newer drivers), the image's line among them.
    allowed = HUB["config"]["allowedCudaVersions"]
    assert TESTS["config"]["allowedCudaVersions"] == allowed
    assert line in allowed and any(v.startswith("13.") for v in allowed)
    assert all(v.split(".")[0] in ("12", "13") for v in allowed)
    assert "torch==" not in (ROOT / "requirements.txt").read_text()


def test_the_image_gets_gpu_builds_of_every_backend_and_dev_the_cpu_builds():
    runtime, cpu, gpu = pins("requirements.txt"), pins("requirements-cpu.txt"), pins("requirements-gpu.txt")
    assert "onnxruntime" not in runtime and "onnxruntime-gpu" not in runtime
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu and "+" not in cpu["torch"]
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    # optimum's `onnxruntime` extra (also infinity-emb's `optimum` extra) would pull the CPU build
    assert not re.search(r"(optimum|infinity-emb)\[[^]]*(onnxruntime|optimum)", (ROOT / "requirements.txt").read_text())
    assert "ctranslate2" in runtime  # links cuBLAS 12, which torch's nvidia-cublas-cu12 brings
    assert "nvidia/cublas/lib" in DOCKERFILE
    assert "requirements-gpu.txt" in DOCKERFILE and "requirements-cpu.txt" not in DOCKERFILE
    assert "requirements-cpu.txt" in (ROOT / "Makefile").read_text()


def test_a_final_python_release_and_no_compilers():
    froms = [args[0] for args in instructions("FROM")]
    version = re.search(r"ARG PYTHON_VERSION=(\S+)", DOCKERFILE).group(1)
    assert re.fullmatch(r"3\.11\.\d+", version), f"{version} is not a final 3.11 release"
    assert froms[0] == "python:${PYTHON_VERSION}-slim-bookworm"
    assert "apt-get install" not in DOCKERFILE  # Ubuntu's python3.11 is a release candidate
    assert "build-essential" not in DOCKERFILE and "gcc" not in DOCKERFILE
    assert "NVIDIA_VISIBLE_DEVICES=all" in DOCKERFILE


def test_models_are_baked_before_the_code_is_copied():
    assert DOCKERFILE.index("bake_models.py") < DOCKERFILE.index("COPY src/ src/")


def test_the_image_keeps_start_up_work_done_at_build_time(tmp_path):
    after_code = INSTRUCTIONS[next(i for i, line in enumerate(INSTRUCTIONS) if line.split() == ["COPY", "src/", "src/"]):]
    (build,) = [line for line in after_code if line.startswith("RUN ")]
    assert "compileall -q src" in build
    step = build.split("&&")[-1].split()
    assert step[0] == "PYTHONPATH=src" and step[1:4] == ["python", "-m", "embedding_worker.engine.transformers_index"]
    done = subprocess.run([sys.executable, *step[2:]], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": "src", "XDG_CACHE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((tmp_path / "embedding-worker").glob("transformers-*.json"))


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


HUB = json.loads((ROOT / ".runpod" / "hub.json").read_text())
TESTS = json.loads((ROOT / ".runpod" / "tests.json").read_text())


def test_hub_json_has_the_documented_fields():
    for key in ("title", "description", "type", "category", "config"):
        assert HUB[key], key
    assert HUB["type"] == "serverless" and HUB["category"] == "embedding"
    config = HUB["config"]
    assert config["runsOn"] == "GPU" and config["gpuCount"] >= 1 and config["gpuIds"]
    assert config["containerDiskInGb"] > 0 and config["allowedCudaVersions"]
    for item in config["env"]:
        assert set(item) == {"key", "input"}
        assert {"name", "type", "description", "default"} <= set(item["input"])
        assert item["input"]["type"] in ("string", "number", "boolean")
    assert "presets" not in HUB, "the Hub reads presets inside config"
    presets = config["presets"]
    assert len(presets) >= 2 and all(p["name"] and p["defaults"]["MODEL_NAMES"] for p in presets)


def test_tests_json_covers_embeddings_models_and_rerank_with_two_models():
    names = {test["name"] for test in TESTS["tests"]}
    assert names >= {"standard_embedding", "openai_embedding", "openai_models", "rerank"}
    env = {item["key"]: item["value"] for item in TESTS["config"]["env"]}
    assert len(env["MODEL_NAMES"].split(";")) == 2
    assert TESTS["config"]["gpuCount"] >= 1 and TESTS["config"]["gpuTypeId"]


# RunPod's GPU pools (hub.json `gpuIds`) and the GPUs in them
GPU_POOLS = {
    "AMPERE_16": {"NVIDIA RTX A4000", "NVIDIA RTX A4500", "NVIDIA RTX 4000 Ada Generation"},
    "AMPERE_24": {"NVIDIA RTX A5000", "NVIDIA L4", "NVIDIA GeForce RTX 3090"},
    "ADA_24": {"NVIDIA GeForce RTX 4090"},
}


def test_the_hub_tests_run_on_a_gpu_of_the_hubs_pools_and_survive_a_first_download():
    pools = HUB["config"]["gpuIds"].split(",")
    assert set(pools) <= set(GPU_POOLS)
    assert any(TESTS["config"]["gpuTypeId"] in GPU_POOLS[pool] for pool in pools)
    for test in TESTS["tests"]:
        assert test["timeout"] >= 300_000, f"{test['name']}: the first test downloads both models"


@pytest.mark.parametrize("test", TESTS["tests"], ids=lambda t: t["name"])
def test_tests_json_inputs_are_valid_requests(test):
    from embedding_worker.api.job_input import normalize_job_input

    env = {item["key"]: item["value"] for item in TESTS["config"]["env"]}
    job = normalize_job_input(test["input"])
    model = getattr(job.request, "model", None)
    assert model is None or model in env["MODEL_NAMES"].split(";")
