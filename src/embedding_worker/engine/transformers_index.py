"""transformers' index of its model classes, kept in a file instead of rebuilt at each start.

When transformers is imported it maps every class its model folders export to the module that
holds it (`define_import_structure`), by reading all ~2,800 of their source files, and it
does so twice (for `transformers` and for `transformers.models`): about 0.5 s of each cold
start. The map depends only on the installed transformers, so this worker keeps it in a JSON
file, `$XDG_CACHE_HOME/embedding-worker/transformers-<version>.json` (`~/.cache` without
XDG_CACHE_HOME), each entry stamped with its folder's modification time. The image writes
the file at build time (`python -m embedding_worker.engine.transformers_index`, see the
Dockerfile); elsewhere the first start writes it. A missing, stale or unreadable file costs
only the scan it would have saved.
"""

from __future__ import annotations

import functools
import importlib.machinery
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

logger = logging.getLogger(__name__)

INDEXED_MODULE = "transformers.utils.import_utils"
Structure = dict[frozenset[str], dict[str, set[str]]]


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "embedding-worker"


@contextmanager
def cached_index(folder: Path | None = None) -> Iterator[None]:
    """While inside, a first import of transformers reads its index from the file (or builds
    and keeps it); on leaving, what was built is written. Nothing if transformers is
    imported already."""
    if "transformers" in sys.modules:
        yield
        return
    index = IndexFile(folder or cache_dir())
    finder = AfterLoading(INDEXED_MODULE, index.serve)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        index.save()


class IndexFile:
    """The entries of one transformers version, keyed by folder and prefix."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path: Path | None = None
        self.entries: dict[str, dict[str, Any]] = {}
        self.changed = False

    def serve(self, import_utils: ModuleType) -> None:
        """Put the file in front of transformers' `define_import_structure`, which its
        packages bind by name after this module has run."""
        version = getattr(sys.modules.get("transformers"), "__version__", None)
        if version is None:
            return
        self.path = self.folder / f"transformers-{version}.json"
        try:
            self.entries = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            self.entries = {}
        if not isinstance(self.entries, dict):
            self.entries = {}
        import_utils.define_import_structure = self.cached(import_utils.define_import_structure)

    def cached(self, build: Callable[..., Structure]) -> Callable[..., Structure]:
        @functools.wraps(build)
        def define_import_structure(module_path, prefix=None) -> Structure:
            folder = Path(module_path)
            if not folder.is_dir():  # transformers' own rule: a file stands for its folder
                folder = folder.parent
            key = f"{folder}|{prefix}"
            stamp = folder.stat().st_mtime_ns
            entry = self.entries.get(key)
            if isinstance(entry, dict) and entry.get("stamp") == stamp:
                try:
                    return decode(entry["structure"])
                except (KeyError, TypeError, ValueError):
                    pass
            structure = build(module_path, prefix)
            self.entries[key] = {"stamp": stamp, "structure": encode(structure)}
            self.changed = True
            return structure

        return define_import_structure

    def save(self) -> None:
        if not self.changed or self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=".index-", delete=False) as out:
                out.write(orjson.dumps(self.entries))
            os.chmod(out.name, 0o644)  # readable by whichever user the image runs as
            os.replace(out.name, self.path)
            self.changed = False
        except OSError as err:
            logger.debug("transformers' index not kept: %s", err)


def encode(structure: Structure) -> list:
    return [[sorted(backends), {module: sorted(names) for module, names in modules.items()}]
            for backends, modules in structure.items()]


def decode(entries: list) -> Structure:
    return {frozenset(backends): {module: set(names) for module, names in modules.items()}
            for backends, modules in entries}


class AfterLoading:
    """A meta path finder that runs `then(module)` right after the module `name` has run,
    before whatever imported it goes on."""

    def __init__(self, name: str, then: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.then = then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            self.then(module)

        spec.loader.exec_module = exec_module  # this spec's own loader, made for this import
        return spec


def main() -> int:
    """Write the index file for the installed transformers (the image's build step)."""
    with cached_index():
        import transformers  # noqa: F401
    print(cache_dir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
