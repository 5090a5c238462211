"""Device and precision: a GPU that is expected but unusable fails start-up in one line;
`DTYPES=auto` picks the fastest precision the hardware keeps accurate."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import EMBEDDER_ID, ROOT, start_worker
from embedding_worker.engine import hardware
from embedding_worker.errors import SettingsError
from embedding_worker.engine.hardware import Device, Hardware, choose_dtype, detect_hardware, gpu_expected

JOB = json.dumps({"input": {"model": EMBEDDER_ID, "input": "Hello"}})


def handler(env: dict[str, str], hub_cache) -> subprocess.CompletedProcess:
    import os

    environ = {k: v for k, v in os.environ.items() if k not in ("NVIDIA_VISIBLE_DEVICES", "DEVICE")}
    return subprocess.run([sys.executable, "src/handler.py", "--test_input", JOB], cwd=ROOT,
                          env={**environ, "MODEL_NAMES": EMBEDDER_ID, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("variable", [{"NVIDIA_VISIBLE_DEVICES": "all"}, {"RUNPOD_GPU_COUNT": "1"},
                                      {"DEVICE": "cuda"}])
def test_an_expected_gpu_that_torch_cannot_use_exits_1_in_seconds_with_one_line(variable, hub_cache):
    started = time.perf_counter()
    done = handler(variable, hub_cache)
    assert done.returncode == 1
    assert time.perf_counter() - started < 30
    (name, value), = variable.items()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: a GPU is expected ({name}={value}) but torch cannot use one: this torch is a CPU build; "
        "driver CUDA not found, torch built for CUDA none; set DEVICE=cpu to run on the CPU"
    ]
    assert "loaded in" not in done.stderr  # no model was loaded first


def test_device_cpu_starts_on_the_cpu_even_when_gpus_are_named(hub_cache):
    done = handler({"NVIDIA_VISIBLE_DEVICES": "all", "DEVICE": "cpu"}, hub_cache)
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(json.loads(line)["data"][0]["embedding"]) == 384


def test_what_makes_a_gpu_expected():
    assert gpu_expected(Device.auto, {}) is None
    assert gpu_expected(Device.auto, {"NVIDIA_VISIBLE_DEVICES": "void"}) is None
    assert gpu_expected(Device.auto, {"NVIDIA_VISIBLE_DEVICES": ""}) is None
    assert gpu_expected(Device.auto, {"RUNPOD_GPU_COUNT": "0"}) is None
    assert gpu_expected(Device.auto, {"NVIDIA_VISIBLE_DEVICES": "GPU-1a2b"}) == "NVIDIA_VISIBLE_DEVICES=GPU-1a2b"
    assert gpu_expected(Device.cpu, {"NVIDIA_VISIBLE_DEVICES": "all"}) is None
    assert gpu_expected(Device.cuda, {}) == "DEVICE=cuda"


@pytest.fixture
def cuda_torch(monkeypatch):
    """torch as a CUDA 12.9 build would look, on a host whose driver is set per test."""
    import torch

    monkeypatch.setattr(torch.version, "cuda", "12.9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return lambda driver: monkeypatch.setattr(hardware, "driver_cuda_version", lambda: driver)


@pytest.mark.parametrize("driver, why", [
    (None, "no NVIDIA driver is visible in the container (is it run with the NVIDIA runtime?)"),
    ("11.8", "the host's driver (CUDA 11.8) is older than this image's CUDA 12.9"),
    ("12.4", "torch.cuda.is_available() is False"),
])
def test_the_start_up_line_names_the_driver_and_the_images_cuda(cuda_torch, driver, why):
    cuda_torch(driver)
    with pytest.raises(SettingsError) as caught:
        detect_hardware(Device.auto, {"NVIDIA_VISIBLE_DEVICES": "all"})
    assert str(caught.value) == (
        f"a GPU is expected (NVIDIA_VISIBLE_DEVICES=all) but torch cannot use one: {why}; "
        f"driver CUDA {driver or 'not found'}, torch built for CUDA 12.9; set DEVICE=cpu to run on the CPU"
    )
    assert detect_hardware(Device.auto, {}).device == "cpu"  # no GPU expected: the CPU, as today


def test_a_usable_gpu_is_described(monkeypatch, cuda_torch):
    import torch

    cuda_torch("13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    properties = SimpleNamespace(name="NVIDIA L4", total_memory=24 * 2**30, major=8, minor=9)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: properties)
    found = detect_hardware(Device.auto, {"NVIDIA_VISIBLE_DEVICES": "all"})
    assert found.device == "cuda" and found.compute_capability == (8, 9)
    assert found.describe() == ("cuda (NVIDIA L4, 24 GiB, compute capability 8.9, torch CUDA 12.9, "
                                "driver CUDA 13.0)")


def gpu(major: int, minor: int) -> Hardware:
    return Hardware(device="cuda", gpu_name="NVIDIA RTX A5000", gpu_memory_gib=24,
                    compute_capability=(major, minor), torch_cuda="12.9")


def model_folder(path, **config):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_auto_dtype_per_hardware_and_model(tmp_path):
    bert = model_folder(tmp_path / "bert", model_type="bert", torch_dtype="float32")
    t5 = model_folder(tmp_path / "t5", model_type="t5")
    qwen = model_folder(tmp_path / "qwen", model_type="qwen3", torch_dtype="bfloat16")
    bf16_cpu, plain_cpu = Hardware(device="cpu", cpu_native_bf16=True), Hardware(device="cpu")
    assert choose_dtype("auto", gpu(8, 6), bert, "torch", "m") == "float16"
    assert choose_dtype("auto", gpu(8, 6), t5, "torch", "m") == "bfloat16"
    assert choose_dtype("auto", gpu(8, 6), qwen, "torch", "m") == "bfloat16"
    assert choose_dtype("auto", gpu(7, 5), t5, "torch", "m") == "float32"  # no bf16 before Ampere
    assert choose_dtype("auto", bf16_cpu, bert, "torch", "m") == "bfloat16"
    assert choose_dtype("auto", plain_cpu, bert, "torch", "m") == "float32"
    assert choose_dtype("auto", bf16_cpu, bert, "optimum", "m") == "auto"  # the ONNX file decides
    assert choose_dtype("float32", bf16_cpu, bert, "torch", "m") == "float32"  # explicit is obeyed
    assert choose_dtype("float16", plain_cpu, bert, "torch", "m") == "float16"


@pytest.mark.parametrize("family", ["gemma3_text", "gemma3", "gemma2", "t5", "umt5"])
def test_auto_never_picks_float16_for_families_that_overflow_in_it_and_says_why(tmp_path, family, caplog):
    folder = model_folder(tmp_path / family, model_type=family, torch_dtype="float32")
    with caplog.at_level("INFO", logger="embedding_worker"):
        assert choose_dtype("auto", gpu(9, 0), folder, "torch", "embeddinggemma") == "bfloat16"
        assert choose_dtype("auto", gpu(7, 5), folder, "torch", "embeddinggemma") == "float32"  # no bf16: float32
    assert "model 'embeddinggemma': DTYPES=auto runs it at bfloat16, not float16: " in caplog.text
    assert "overflow float16" in caplog.text
    assert choose_dtype("auto", Hardware(device="cpu", cpu_native_bf16=True), folder, "torch", "m") == "bfloat16"
    assert choose_dtype("float16", gpu(9, 0), folder, "torch", "m") == "float16"  # asked for: obeyed


def test_fp8_below_compute_capability_8_9_is_a_start_up_error_naming_the_gpu(tmp_path):
    with pytest.raises(SettingsError, match=r"DTYPES: fp8 for model 'm' needs compute capability 8\.9 "
                                            r"or newer; NVIDIA RTX A5000 has 8\.6"):
        choose_dtype("fp8", gpu(8, 6), tmp_path, "torch", "m")
    assert choose_dtype("fp8", gpu(8, 9), tmp_path, "torch", "m") == "fp8"


@pytest.mark.skipif(not hardware.cpu_has_native_bf16(), reason="this CPU has no native bfloat16")
def test_auto_on_a_bf16_cpu_runs_bfloat16_within_cosine_0_9995_of_float32(hub_cache, sentence_transformer):
    running = start_worker(MODEL_NAMES=EMBEDDER_ID, DTYPES="auto")
    try:
        (card,) = running.run({"openai_route": "/v1/models"})[0]["data"]
        assert card["stats"]["dtype"] == "bfloat16" and card["stats"]["device"] == "cpu"
        texts = [f"sentence number {i} about {topic}" for i, topic in
                 enumerate(["cats", "the stock market", "quantum physics", "cooking pasta"] * 8)]
        output = running.run({"model": EMBEDDER_ID, "input": texts})
        got = np.array([item["embedding"] for item in output["data"]])
        expected = sentence_transformer.encode(texts, normalize_embeddings=True)
        cosine = np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1)
        assert cosine.min() >= 0.9995, cosine.min()
    finally:
        running.close()
