"""Where the engines run and at what precision, decided once at start-up.

- `DEVICE=auto` (default) uses a GPU when torch can, else the CPU; `cuda` and `cpu` force one.
- When a GPU is expected (`DEVICE=cuda`, or the container was given GPUs) and torch cannot
  use one, start-up fails within seconds with one line naming the driver's CUDA version and
  the one torch was built for, instead of quietly computing on the CPU.
- `DTYPES=auto` becomes the fastest precision that keeps vectors within cosine 0.9995 of
  float32 on this hardware: float16 on a GPU (bfloat16 for model families that overflow in
  float16), bfloat16 on CPUs with native bf16 instructions, float32 elsewhere.
"""

from __future__ import annotations

import ctypes
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from embedding_worker.errors import SettingsError

log = logging.getLogger(__name__)

# Model families whose activations overflow float16, by `model_type`, with why: `DTYPES=auto`
# runs them at bfloat16 on a GPU (float32 on one without bfloat16), and says so at start-up.
FLOAT16_OVERFLOWS = {
    **dict.fromkeys(("t5", "mt5", "umt5"), "T5's feed-forward activations overflow float16"),
    **dict.fromkeys(("gemma", "gemma2", "gemma3", "gemma3_text"),
                    "Gemma's activations overflow float16 (EmbeddingGemma's model card: float32 or bfloat16 only)"),
}
# CPU flags of native bfloat16 arithmetic (AVX-512 BF16, AMX).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper


class Device(str, Enum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


@dataclass(frozen=True)
class Hardware:
    """What the engines run on; `device` is `cuda` or `cpu`."""

    device: str
    gpu_name: str | None = None
    gpu_memory_gib: float | None = None
    compute_capability: tuple[int, int] | None = None
    torch_cuda: str | None = None  # the CUDA version torch was built for
    driver_cuda: str | None = None  # the CUDA version the host's driver supports
    cpu_native_bf16: bool = False

    def describe(self) -> str:
        if self.device != "cuda":
            return f"cpu ({'native bf16' if self.cpu_native_bf16 else 'no native bf16'})"
        major, minor = self.compute_capability or (0, 0)
        return (
            f"cuda ({self.gpu_name}, {self.gpu_memory_gib:.0f} GiB, compute capability {major}.{minor}, "
            f"torch CUDA {self.torch_cuda}, driver CUDA {self.driver_cuda or 'unknown'})"
        )


def gpu_expected(device: Device, environ: Mapping[str, str]) -> str | None:
    """Why a GPU is expected (`VARIABLE=value`), or None when the CPU is fine."""
    if device is Device.cuda:
        return "DEVICE=cuda"
    if device is Device.cpu:
        return None
    visible = environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if visible and visible.lower() not in ("void", "none"):
        return f"NVIDIA_VISIBLE_DEVICES={visible}"
    count = environ.get("RUNPOD_GPU_COUNT", "").strip()
    if count.isdigit() and int(count) > 0:
        return f"RUNPOD_GPU_COUNT={count}"
    return None


def detect_hardware(device: Device, environ: Mapping[str, str]) -> Hardware:
    """The device to run on; raise `SettingsError` when a GPU is expected but unusable."""
    import torch

    cpu = Hardware(device="cpu", cpu_native_bf16=cpu_has_native_bf16())
    if device is Device.cpu:
        return cpu
    reason = gpu_expected(device, environ)
    if not torch.cuda.is_available():
        if reason is None:
            return cpu
        raise SettingsError(_no_gpu_message(reason, torch.version.cuda, driver_cuda_version()))
    properties = torch.cuda.get_device_properties(0)
    return Hardware(
        device="cuda",
        gpu_name=properties.name,
        gpu_memory_gib=properties.total_memory / 2**30,
        compute_capability=(properties.major, properties.minor),
        torch_cuda=torch.version.cuda,
        driver_cuda=driver_cuda_version(),
        cpu_native_bf16=cpu.cpu_native_bf16,
    )


def _no_gpu_message(reason: str, torch_cuda: str | None, driver_cuda: str | None) -> str:
    if torch_cuda is None:
        why = "this torch is a CPU build"
    elif driver_cuda is None:
        why = "no NVIDIA driver is visible in the container (is it run with the NVIDIA runtime?)"
    elif int(driver_cuda.split(".")[0]) < int(torch_cuda.split(".")[0]):
        why = f"the host's driver (CUDA {driver_cuda}) is older than this image's CUDA {torch_cuda}"
    else:
        why = "torch.cuda.is_available() is False"
    return (
        f"a GPU is expected ({reason}) but torch cannot use one: {why}; driver CUDA "
        f"{driver_cuda or 'not found'}, torch built for CUDA {torch_cuda or 'none'}; "
        "set DEVICE=cpu to run on the CPU"
    )


def driver_cuda_version() -> str | None:
    """The CUDA version the host's driver supports (`cuDriverGetVersion`), or None."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(NATIVE_BF16_FLAGS & set(line.split(":", 1)[1].split()))
    return False


def choose_dtype(requested: str, hardware: Hardware, model_path: Path, backend: str, model_name: str) -> str:
    """The Infinity dtype a model runs at: `requested` unless it is `auto`; fp8 is checked."""
    if requested == "fp8" and hardware.device == "cuda" and hardware.compute_capability < FP8_MIN_CAPABILITY:
        major, minor = hardware.compute_capability
        raise SettingsError(
            f"DTYPES: fp8 for model {model_name!r} needs compute capability 8.9 or newer; "
            f"{hardware.gpu_name} has {major}.{minor}; use float16 or bfloat16"
        )
    if requested != "auto":
        return requested
    if backend == "optimum":
        return "auto"  # ONNX files carry their own precision (ONNX_QUANTIZED)
    if hardware.device != "cuda" and "vision_config" in model_config(model_path):
        return "float32"  # Infinity loads CLIP-style models at full precision on a CPU
    if hardware.device == "cuda":
        reason = FLOAT16_OVERFLOWS.get(model_type(model_path) or "") or (
            "it was trained and shipped in bfloat16; float16's smaller range may overflow"
            if _stored_as_bfloat16(model_path) else None)
        if reason:
            chosen = "bfloat16" if hardware.compute_capability >= (8, 0) else "float32"
            log.info("model %r: DTYPES=auto runs it at %s, not float16: %s", model_name, chosen, reason)
            return chosen
        return "float16"
    if backend == "torch" and hardware.cpu_native_bf16:
        return "bfloat16"
    return "float32"


def model_type(model_path: Path) -> str | None:
    return model_config(model_path).get("model_type")


def _stored_as_bfloat16(model_path: Path) -> bool:
    """Trained and shipped in bfloat16: float16's smaller range may overflow."""
    config = model_config(model_path)
    return (config.get("torch_dtype") or config.get("dtype")) == "bfloat16"


def model_config(model_path: Path) -> dict:
    """The model's config.json, or {} when it has none."""
    try:
        return json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
