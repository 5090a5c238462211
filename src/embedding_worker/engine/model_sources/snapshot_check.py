"""Is a cached snapshot whole? A cache is not proof of a complete model: a worker killed
mid-download, a copy cut short or a full disk leave folders that look like models.

With the hub's list of the snapshot's files (written beside it at download, or asked of the
hub), every file the model needs must be there at its listed size, and small ones must match
their hash. Without one, what the files themselves tell: each safetensors file's header
covers the file, each shard an index names is there, a torch zip archive has its end, every
link reaches its blob, small blobs named by a hash match it, and some weights are there.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path

from embedding_worker.engine.model_sources.cache_layout import COMMIT, SHA256, HubFile, RepoFiles

HASHED_UP_TO = 32 * 2**20  # bytes: a file this small is hashed (tokenizers, configs); weights are not
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".ckpt")

# Files no backend here reads: weights for other frameworks, documents, pictures.
IGNORED_FILES = ["*.h5", "*.ot", "*.msgpack", "*.tflite", "openvino/*", "coreml/*", "*.mlmodel", "*.mlpackage/*",
                 "*.md", ".gitattributes", "*.png", "*.jpg", "*.jpeg", "*.gif", "*.svg"]
ONNX_FILES = ["*.onnx", "*.onnx_data", "onnx/*"]


@dataclass(frozen=True)
class Damage:
    file: str  # path inside the snapshot
    problem: str

    def __str__(self) -> str:
        return f"{self.file} is {self.problem}"


def wanted_files(files: tuple[HubFile, ...] | list[HubFile], onnx: bool) -> list[HubFile]:
    """The files a model needs: not other frameworks' weights nor documents, ONNX only for the
    ONNX backend, and torch pickles only where a folder has no safetensors weights."""
    ignored = IGNORED_FILES + ([] if onnx else ONNX_FILES)
    keep = [f for f in files if not any(fnmatch.fnmatch(f.name, pattern) for pattern in ignored)]
    with_safetensors = {posixpath.dirname(f.name) for f in keep
                        if fnmatch.fnmatch(posixpath.basename(f.name), "model*.safetensors")}
    return [f for f in keep if not (fnmatch.fnmatch(posixpath.basename(f.name), "pytorch_model*.bin*")
                                    and posixpath.dirname(f.name) in with_safetensors)]


def file_problem(path: Path, expected: HubFile) -> str | None:
    """What is wrong with `path` as `expected`, or None when it is whole."""
    try:
        size = path.stat().st_size
    except OSError:
        return "missing (a link to a blob that is not there)" if path.is_symlink() else "missing"
    if size < expected.size:
        return f"cut short ({size:,} of {expected.size:,} bytes)"
    if size > expected.size:
        return f"{size:,} bytes where the hub lists {expected.size:,}"
    if size <= HASHED_UP_TO and (expected.sha256 or expected.git_sha1) and file_digest(path, expected) != expected.blob:
        return "not what the hub holds (its hash differs)"
    return None


def check_snapshot(snapshot: Path, listing: RepoFiles | None, onnx: bool) -> list[Damage]:
    """Every problem found in `snapshot`; empty when it can be loaded."""
    damage = []
    if listing is not None:
        for expected in wanted_files(listing.files, onnx):
            if problem := file_problem(snapshot / expected.name, expected):
                damage.append(Damage(expected.name, problem))
    reported = {d.file for d in damage}
    damage += [d for d in _structural_damage(snapshot, listed=listing is not None) if d.file not in reported]
    return damage


def _structural_damage(snapshot: Path, listed: bool) -> list[Damage]:
    damage, weights = [], 0
    for path in sorted(_files(snapshot)):
        name = path.relative_to(snapshot).as_posix()
        if not path.exists():
            damage.append(Damage(name, "missing (a link to a blob that is not there)"))
            continue
        problem = None
        if name.endswith(WEIGHTS):
            weights += 1
        if name.endswith(".safetensors"):
            problem = _safetensors_problem(path)
        elif name.endswith(".bin") and _starts_with(path, b"PK") and not zipfile.is_zipfile(path):
            problem = "cut short (its zip archive has no end)"
        elif name.endswith(".index.json"):
            problem = _index_problem(path)
        elif path.is_symlink() and not listed:  # with the hub's list, small files were hashed against it
            problem = _blob_problem(path)
        if problem:
            damage.append(Damage(name, problem))
    modules = snapshot / "modules.json"
    if modules.is_file():
        damage += _modules_damage(snapshot, modules)
    elif not (snapshot / "config.json").is_file():
        damage.append(Damage("config.json", "missing"))
    if not weights and not listed:  # with the hub's list, the missing file is named instead
        cut = sorted(p.name for p in (snapshot.parents[1] / "blobs").glob("*.incomplete"))
        damage.append(Damage("the weights file", "missing: the snapshot holds none"
                             + (f" (a download was cut short: blobs/{cut[0]})" if cut else "")))
    return damage


def _files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / n for n in names if not n.startswith(".")]
    return found


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as file:
        return file.read(len(magic)) == magic


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 0 or length > size - 8:
            return f"cut short ({size:,} bytes, not even its header)"
        try:
            header = json.loads(file.read(length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "not a safetensors file (its header does not parse)"
    expected = 8 + length + end
    if size < expected:
        return f"cut short ({size:,} of {expected:,} bytes)"
    return None if size == expected else f"{size:,} bytes where its header says {expected:,}"


def _index_problem(path: Path) -> str | None:
    try:
        shards = set(json.loads(path.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "not a readable index of weight shards"
    missing = sorted(s for s in shards if not (path.parent / s).exists())
    return f"naming shards that are missing: {', '.join(missing)}" if missing else None


def _modules_damage(snapshot: Path, modules: Path) -> list[Damage]:
    try:  # Normalize keeps no files, so its folder may be absent
        paths = [m.get("path", "") for m in json.loads(modules.read_text()) if not m["type"].endswith("Normalize")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [Damage("modules.json", "not readable JSON")]
    return [Damage(f"{p}/", "missing (modules.json names it)") for p in paths if p and not (snapshot / p).is_dir()]


def _blob_problem(link: Path) -> str | None:
    """A small blob named by its hash must match the name."""
    blob = link.resolve()
    name, size = blob.name, blob.stat().st_size
    if size > HASHED_UP_TO:
        return None
    if SHA256.match(name):
        expected = HubFile(link.name, size, sha256=name)
    elif COMMIT.match(name):
        expected = HubFile(link.name, size, git_sha1=name)
    else:
        return None
    return None if file_digest(blob, expected) == name else "not what its blob's name says (its hash differs)"


def new_digest(expected: HubFile) -> hashlib._Hash:
    """The hash the hub names a file by: sha256 for LFS files, git's blob sha1 for others."""
    if expected.sha256:
        return hashlib.sha256()
    digest = hashlib.sha1()
    digest.update(b"blob %d\0" % expected.size)
    return digest


def file_digest(path: Path, expected: HubFile) -> str:
    digest = new_digest(expected)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
