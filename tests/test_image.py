"""The Dockerfile and RunPod Hub files, checked statically (no Docker engine here)."""

from __future__ import annotations

import fnmatch
import json
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


def test_named_requirements_exist_and_torch_is_pinned_first():
    for name in set(re.findall(r"[\w./-]*requirements[\w.-]*\.txt", DOCKERFILE)):
        assert (ROOT / Path(name).name).is_file(), name
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==\d+\.\d+\.\d+$", requirements, re.M)
    assert DOCKERFILE.index("'^torch=='") < DOCKERFILE.index("pip install -r")


def test_cuda_runtime_base_with_python_311():
    froms = [args[0] for args in instructions("FROM")]
    assert froms[0].startswith("nvidia/cuda:") and "-runtime-" in froms[0]
    assert "python3.11" in DOCKERFILE
    assert "build-essential" not in DOCKERFILE and "gcc" not in DOCKERFILE


def test_models_are_baked_before_the_code_is_copied():
    assert DOCKERFILE.index("bake_models.py") < DOCKERFILE.index("COPY src/ src/")


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
    presets = HUB["presets"]
    assert len(presets) >= 2 and all(p["name"] and p["defaults"]["MODEL_NAMES"] for p in presets)


def test_tests_json_covers_embeddings_models_and_rerank_with_two_models():
    names = {test["name"] for test in TESTS["tests"]}
    assert names >= {"standard_embedding", "openai_embedding", "openai_models", "rerank"}
    env = {item["key"]: item["value"] for item in TESTS["config"]["env"]}
    assert len(env["MODEL_NAMES"].split(";")) == 2
    assert TESTS["config"]["gpuCount"] >= 1 and TESTS["config"]["gpuTypeId"]


@pytest.mark.parametrize("test", TESTS["tests"], ids=lambda t: t["name"])
def test_tests_json_inputs_are_valid_requests(test):
    from embedding_worker.job_input import normalize_job_input

    env = {item["key"]: item["value"] for item in TESTS["config"]["env"]}
    job = normalize_job_input(test["input"])
    model = getattr(job.request, "model", None)
    assert model is None or model in env["MODEL_NAMES"].split(";")
