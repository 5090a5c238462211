"""The Hugging Face cache layout, as `huggingface_hub` reads it offline.

    <cache>/models--org--name/
        refs/<branch or tag>          the commit the name points to
        snapshots/<commit>/<file>     a link to ../../blobs/<blob> (a copy where links fail)
        blobs/<sha256 or git sha1>    each file's content, named by its hash
        file-lists/<commit>.json      the hub's list of the commit's files (this worker's)

Everything here is written so that a reader never sees half of it: a blob only appears under
its name once complete and checked, a link or ref is replaced in one rename, and a ref is
written last, once every file of its snapshot is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

COMMIT = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1 = COMMIT
MAX_NAME = 1024  # characters of a file's path inside its repository


@dataclass(frozen=True)
class HubFile:
    """One file of a revision, as the hub lists it."""

    name: str  # path inside the repository
    size: int
    sha256: str | None = None  # files stored with LFS (weights, large tokenizers)
    git_sha1: str | None = None  # git's blob id: the other files

    @property
    def blob(self) -> str:
        return self.sha256 or self.git_sha1 or hashlib.sha1(self.name.encode()).hexdigest()


class UnsafeListing(ValueError):
    """A file list whose names or hashes cannot safely become paths in the cache."""


@dataclass(frozen=True)
class RepoFiles:
    """A revision's files: what a complete snapshot holds. Every name and hash becomes a
    path in the cache, so each is checked here, where a listing is made (from the hub or
    from a list on disk), as `huggingface_hub` checks them: a listing that names a file
    outside its snapshot, or a hash that is not one, raises `UnsafeListing`."""

    repo_id: str
    commit: str
    files: tuple[HubFile, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.commit, str) or not COMMIT.match(self.commit):
            raise UnsafeListing(f"its commit {str(self.commit)[:80]!r} is not a commit hash")
        for file in self.files:
            if problem := _name_problem(file.name):
                raise UnsafeListing(f"it names a file {str(file.name)[:80]!r}, which {problem}")
            if file.sha256 is not None and not (isinstance(file.sha256, str) and SHA256.match(file.sha256)):
                raise UnsafeListing(f"the sha256 of {file.name!r}, {str(file.sha256)[:80]!r}, is not a sha256 hash")
            if file.git_sha1 is not None and not (isinstance(file.git_sha1, str) and GIT_SHA1.match(file.git_sha1)):
                raise UnsafeListing(f"the blob id of {file.name!r}, {str(file.git_sha1)[:80]!r}, is not a git hash")
            if not isinstance(file.size, int) or file.size < 0:
                raise UnsafeListing(f"the size of {file.name!r}, {file.size!r}, is not a byte count")


def _name_problem(name: object) -> str | None:
    """Why `name` cannot be a path inside a snapshot, or None."""
    if not isinstance(name, str) or not name:
        return "is empty or not a string"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if "\\" in name or "\0" in name or any(ord(c) < 32 for c in name):
        return "holds a backslash or a control character"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is absolute"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "is not a plain relative path (an empty, '.' or '..' part)"
    return None


def repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def find_snapshot(cache: Path, repo_id: str, revision: str | None) -> Path | None:
    """The snapshot folder `revision` (a branch, tag or commit; None: main) points to, if any."""
    folder = repo_folder(cache, repo_id)
    revision = revision or "main"
    commit = revision if COMMIT.match(revision) else _read(folder / "refs" / revision)
    if commit is None:
        return None
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def is_writable(cache: Path) -> bool:
    """Whether files can be created in `cache` (or, if it does not exist, in its nearest parent)."""
    folder = cache
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        return False
    try:
        return not os.statvfs(folder).f_flag & os.ST_RDONLY  # a read-only mount; root ignores modes
    except OSError:
        return False


def private_name(path: Path, tag: str = "tmp") -> Path:
    """A sibling name no other process uses, for writing then renaming into `path`."""
    return path.with_name(f"{path.name}.{tag}-{uuid.uuid4().hex[:12]}")


def publish_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = private_name(path)
    temporary.write_text(text)
    os.replace(temporary, path)


def link_into_snapshot(snapshot: Path, name: str, blob: Path) -> None:
    """Point `snapshot/name` at `blob`, replacing what was there in one rename."""
    target = snapshot / name
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = private_name(target)
    try:
        os.symlink(os.path.relpath(blob, target.parent), temporary)
    except OSError:  # a filesystem without symbolic links: a copy instead
        shutil.copyfile(blob, temporary)
    os.replace(temporary, target)


def write_file_list(cache: Path, files: RepoFiles) -> None:
    body = {"repo_id": files.repo_id, "commit": files.commit, "files": [asdict(f) for f in files.files]}
    publish_text(repo_folder(cache, files.repo_id) / "file-lists" / f"{files.commit}.json", json.dumps(body))


def read_file_list(snapshot: Path) -> RepoFiles | None:
    """The hub's list of this snapshot's files, when this worker wrote one while downloading it."""
    path = snapshot.parents[1] / "file-lists" / f"{snapshot.name}.json"
    try:
        body = json.loads(path.read_text())
        return RepoFiles(body["repo_id"], body["commit"], tuple(HubFile(**f) for f in body["files"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_ref(cache: Path, repo_id: str, revision: str | None, commit: str) -> None:
    """Point `revision` at `commit` (a commit needs no ref): the last step of a download."""
    revision = revision or "main"
    if revision != commit:
        publish_text(repo_folder(cache, repo_id) / "refs" / revision, commit)


def lay_into_cache(
    folder: Path, repo_id: str, cache: Path, commit: str | None = None, ref: str = "main"
) -> Path:
    """Copy a model folder into `cache` in the hub client's layout; return the snapshot.

    `<cache>/models--org--name/snapshots/<commit>/...` plus `refs/<ref>`, so the model loads
    by its hub id offline. Without a commit, one is derived from the folder's contents.
    """
    if repo_id.count("/") != 1:
        raise ValueError(f"repo id must look like 'org/name', got {repo_id!r}")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a model folder (no config.json)")
    commit = commit or _content_hash(folder)
    snapshot = repo_folder(cache, repo_id) / "snapshots" / commit
    if not snapshot.is_dir():
        partial = private_name(snapshot, "partial")
        shutil.copytree(folder, partial, ignore=shutil.ignore_patterns(".git*", "__pycache__"))
        try:
            partial.rename(snapshot)
        except OSError:  # another process laid it first
            shutil.rmtree(partial, ignore_errors=True)
    write_ref(cache, repo_id, ref, commit)
    return snapshot


def _content_hash(folder: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
