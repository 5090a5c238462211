"""Import Infinity with only what serving needs, and as fast as it goes, for a shorter cold
start.

Two things are skipped while Infinity is first imported:

- The backends the deployment does not use. Infinity imports every backend it finds
  installed (ONNX Runtime and optimum, CTranslate2); only one serves a deployment.
- scikit-learn and SciPy (about 0.8 s). Nothing on the serving path uses them: transformers
  imports scikit-learn only for assisted generation, behind its own availability check, and
  sentence-transformers only through its `evaluation` package (training-time evaluators).
  That package becomes lazy (`LazyEvaluation`): its names load on first use, from
  the same files, so training code that asks for an evaluator still gets it.

Skipped packages are hidden (`sys.modules[name] = None`, Python's own way to make an import
fail), so their users record them as not installed; they are visible again afterwards.

Two things are done once instead of at each start:

- transformers' index of its model classes comes from a file (`transformers_index`, 0.5 s).
- The garbage collector is off during the import. The import makes about 600,000 objects
  that live as long as the process, and collecting while they are made traverses them some
  900 times (0.65 s here). They are then frozen (`gc.freeze`), so that later collections, in
  loading and serving, skip them too. The import leaves little garbage (about 12,000
  objects, no tensors), which freezing keeps.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from embedding_worker.engine.transformers_index import cached_index

UNUSED_BY_BACKEND = {
    "torch": ("optimum", "onnxruntime", "ctranslate2"),
    "optimum": ("ctranslate2",),
    "ctranslate2": ("optimum", "onnxruntime"),
}
UNUSED_FOR_SERVING = ("sklearn", "scipy")
LAZY_PACKAGE = "sentence_transformers.evaluation"


def import_infinity(backend: str) -> None:
    """For a process that serves `backend` only (the entry points): Infinity then cannot
    load another backend in this process."""
    if "infinity_emb" in sys.modules or backend not in UNUSED_BY_BACKEND:
        return
    with importing_for(backend):
        import infinity_emb  # noqa: F401


@contextmanager
def importing_for(backend: str) -> Iterator[None]:
    """While inside: every cut above; on leaving, what was imported is frozen."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        with skipping_unused(backend), cached_index():
            yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


@contextmanager
def skipping_unused(backend: str) -> Iterator[None]:
    """While inside: what a `backend` worker does not use is hidden, and sentence-transformers'
    `evaluation` package is lazy."""
    hidden = [name for name in (*UNUSED_BY_BACKEND[backend], *UNUSED_FOR_SERVING) if name not in sys.modules]
    if "sklearn" in hidden:
        make_evaluation_lazy()
    for name in hidden:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


class LazyEvaluation(types.ModuleType):
    """sentence-transformers' `evaluation` package, loaded name by name.

    Each of its names is a class in the module of the same name (`SentenceEvaluator` in
    `SentenceEvaluator.py`), which is all that importing sentence-transformers asks for;
    those modules need neither scikit-learn nor SciPy. A name without such a module runs the
    package's own `__init__` once, and the package is then the real one.
    """

    def __getattr__(self, name: str):  # only for names not bound yet
        if name.startswith("__") and name != "__all__":
            raise AttributeError(name)
        if not name.startswith("_") and importlib.util.find_spec(f"{self.__name__}.{name}") is not None:
            value = getattr(importlib.import_module(f"{self.__name__}.{name}"), name)
        else:
            self.__spec__.loader.exec_module(self)
            self.__class__ = types.ModuleType  # the real package from here on
            return getattr(self, name)
        types.ModuleType.__setattr__(self, name, value)
        return value

    def __setattr__(self, name: str, value) -> None:
        # Importing a submodule binds it on its package; the package's own `__init__` then
        # rebinds the name to the class it holds (`from .X import X`). Do the same here.
        if isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            value = getattr(value, name, value)
        types.ModuleType.__setattr__(self, name, value)


def make_evaluation_lazy() -> None:
    """Register `LazyEvaluation` for sentence-transformers' `evaluation` package, found
    without importing sentence-transformers itself; nothing if it is imported already or
    not installed."""
    if LAZY_PACKAGE in sys.modules:
        return
    package, child = LAZY_PACKAGE.split(".")
    parent = importlib.util.find_spec(package)
    if parent is None or not parent.submodule_search_locations:
        return
    folders = [Path(location, child) for location in parent.submodule_search_locations]
    folder = next((folder for folder in folders if (folder / "__init__.py").is_file()), None)
    if folder is None:
        return
    spec = importlib.util.spec_from_file_location(LAZY_PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    module.__class__ = LazyEvaluation
    sys.modules[LAZY_PACKAGE] = module
