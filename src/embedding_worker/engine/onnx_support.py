"""What the ONNX backend (`BACKEND=optimum`) needs to serve a model correctly, offline.

- a model file: exported once (at build time by `builder/`, or at first start) when the
  model ships none, into the model folder or, when that is read-only (RunPod's cache), a
  writable copy of it;
- the pooling the model's sentence-transformers config declares (Infinity's ONNX path
  pools with the CLS token unless told otherwise, which is wrong for mean-pooled models);
- the full-precision file, unless int8 is asked for (`ONNX_QUANTIZED`): then a dynamically
  quantized file is made once, next to it;
- Infinity's ONNX file lookup fixed for local folders: it returns the file's path with the
  folder prefixed, while optimum's loader matches ONNX files in the folder by name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

QUANTIZED_NAME = "model_quantized.onnx"  # Infinity picks files named *quantize* when asked


def ensure_onnx(path: Path, writable_parent: Path, quantized: bool = False) -> Path:
    """Return a folder holding `path`'s model with an ONNX file (and an int8 one if asked)."""
    files = list(path.glob("**/*.onnx"))
    has_quantized = any("quantize" in f.name for f in files)
    if files and (has_quantized or not quantized):
        return path
    if not os.access(path, os.W_OK):
        copy = writable_parent / "onnx-exports" / "--".join(path.parts[-3:])
        if not copy.is_dir():
            shutil.copytree(path, copy)  # follows the cache's symlinks
        return ensure_onnx(copy, writable_parent, quantized)
    if not files:
        files = [_export(path)]
    if quantized and not has_quantized:
        _quantize(files[0], files[0].with_name(QUANTIZED_NAME))
    return path


def _export(path: Path) -> Path:
    from optimum.exporters.onnx import main_export

    config = json.loads((path / "config.json").read_text())
    classifies = any("SequenceClassification" in a for a in config.get("architectures", []))
    task = "text-classification" if classifies else "feature-extraction"
    log.info("exporting %s to ONNX (%s), once", path, task)
    # The plain transformer: Infinity pools `last_hidden_state` itself.
    main_export(str(path), output=path / "onnx", task=task, library_name="transformers", do_validation=False)
    return path / "onnx" / "model.onnx"


def _quantize(model: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    log.info("quantizing %s to int8, once", model)
    quantize_dynamic(str(model), str(target), weight_type=QuantType.QInt8)


def pooling_method(path: Path) -> str:
    """`mean` or `cls`, as the sentence-transformers config in `path` declares; else `auto`."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        pooling = next(m for m in modules if m.get("type", "").endswith("models.Pooling"))
        config = json.loads((path / pooling.get("path", "") / "config.json").read_text())
    except (OSError, ValueError, StopIteration):
        return "auto"
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    return "auto"


def fix_infinity_onnx_lookup() -> None:
    """Make Infinity's `get_onnx_files` return just the file name for a local model folder."""
    from infinity_emb.transformer import utils_optimum
    from infinity_emb.transformer.classifier import optimum as classifier
    from infinity_emb.transformer.crossencoder import optimum as crossencoder
    from infinity_emb.transformer.embedder import optimum as embedder

    original = utils_optimum.get_onnx_files
    if getattr(original, "relative_to_folder", False):
        return

    def get_onnx_files(*, model_name_or_path: str, **kwargs) -> Path:
        found = original(model_name_or_path=model_name_or_path, **kwargs)
        folder = Path(model_name_or_path)
        return Path(found.name) if folder.is_dir() and found.is_relative_to(folder) else found

    get_onnx_files.relative_to_folder = True  # type: ignore[attr-defined]
    for module in (utils_optimum, embedder, crossencoder, classifier):
        module.get_onnx_files = get_onnx_files
