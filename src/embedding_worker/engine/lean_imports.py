"""Import Infinity with only what the deployment's backend needs, for a shorter cold start.

Infinity imports every backend it finds installed (ONNX Runtime and optimum, CTranslate2);
only one of them serves a deployment. While Infinity is first imported, the packages the backend does not use
are hidden (`sys.modules[name] = None`, Python's own way to make an import fail), so
Infinity records them as not installed and skip them. They are visible
again afterwards.
"""

from __future__ import annotations

import sys

UNUSED_BY_BACKEND = {
    "torch": ("optimum", "onnxruntime", "ctranslate2"),
    "optimum": ("ctranslate2",),
    "ctranslate2": ("optimum", "onnxruntime"),
}


def import_infinity(backend: str) -> None:
    """For a process that serves `backend` only (the entry points): Infinity then cannot
    load another backend in this process."""
    if "infinity_emb" in sys.modules or backend not in UNUSED_BY_BACKEND:
        return
    hidden = [name for name in UNUSED_BY_BACKEND[backend] if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    try:
        import infinity_emb  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
