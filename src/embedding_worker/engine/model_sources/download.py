"""Downloading a model into a Hugging Face cache, safe against cut transfers, killed workers
and other workers downloading the same model to the same (network) volume.

- Only files that are missing or damaged are fetched; a file whose blob another snapshot of
  the model already holds is linked, and one that a snapshot in another cache holds whole
  (a damaged read-only one, say) is copied, not fetched again.
- Each file is written to a part file of this process's own
  (`blobs/<hash>.part-<host>-<pid>@<process start>-…`), appended to from where it stopped
  when a transfer is cut (HTTP Range). Before it is renamed to its blob, the file on disk is
  read back and checked against the hub's size and hash (never the bytes as they were
  streamed: another writer's bytes could be in the file), so no reader ever sees half a
  file or a wrong one, and no lock is needed, so nothing depends on locks holding on a
  network filesystem. Large weights are hashed this once, at download (or copy); later
  start-ups check their size.
- The part file of a worker that died is taken over by renaming it and resumed, so a killed
  download is not started over. A writer is judged dead by its process identity on this host
  (its PID gone, or the PID now another process's: containers reuse PID 1), or by
  `STALE_AFTER` seconds without a write. A writer whose part file was taken over (it stalled
  past that) sees its file renamed at its next write and starts a part of its own again;
  a bad mix of bytes would fail the hash check in any case.
- The hub client's own `.incomplete` files are taken over the same way.
- A file that a snapshot in another cache holds (a read-only one, say) is copied to a part
  file and checked the same way before it is published.
- The disk is checked for room before anything is written.
- Progress is one log line per large file at 25, 50 and 75 %, and one line per model at the end.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from embedding_worker.engine.model_sources.cache_layout import (
    HubFile,
    RepoFiles,
    link_into_snapshot,
    private_name,
    repo_folder,
    write_file_list,
    write_ref,
)
from embedding_worker.engine.model_sources.hub import Hub, HubAccess, RetryBudget, Transient
from embedding_worker.engine.model_sources.snapshot_check import file_digest, file_problem, wanted_files
from embedding_worker.errors import ModelLoadError

log = logging.getLogger(__name__)

STALE_AFTER = 60.0  # seconds without a write after which a part file's writer counts as dead
LOGGED_FROM = 8 * 2**20  # bytes: files this large log their progress
CHUNK = 1 << 20
PARALLEL_FILES = 8
CHECKSUM_TRIES = 3
HOST = socket.gethostname()
PART = re.compile(r"\.part-(?P<host>.+)-(?P<pid>\d+)(?:@(?P<start>\d+))?-[0-9a-f]{12}$")


class TakenOver(Exception):
    """Another worker renamed this worker's part file to resume it."""


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""  # unknown, but alive
    return stat.rsplit(")", 1)[-1].split()[19]


def _part_tag() -> str:
    return f"part-{HOST}-{os.getpid()}@{_process_start(os.getpid()) or 0}"


def download(repo_id: str, revision: str | None, cache: Path, access: HubAccess, onnx: bool = False,
             donors: tuple[Path, ...] = ()) -> Path:
    """Fetch what `cache` lacks of the model's snapshot; return the snapshot folder.
    `donors`: other snapshots of the model, whose whole files are copied rather than fetched."""
    with Hub(access, repo_id, revision) as hub:
        listing = hub.repo_files()
        return ModelDownload(hub, cache, listing, onnx, donors).run()


class ModelDownload:
    def __init__(self, hub: Hub, cache: Path, listing: RepoFiles, onnx: bool, donors: tuple[Path, ...] = ()) -> None:
        self.hub, self.cache, self.listing, self.donors = hub, cache, listing, donors
        self.files = wanted_files(listing.files, onnx)
        self.folder = repo_folder(cache, hub.repo_id)
        self.snapshot = self.folder / "snapshots" / listing.commit
        self.blobs = self.folder / "blobs"

    def run(self) -> Path:
        started = time.perf_counter()
        missing = [f for f in self.files if file_problem(self.snapshot / f.name, f) is not None]
        try:
            for directory in (self.blobs, self.snapshot):
                directory.mkdir(parents=True, exist_ok=True)
            to_fetch = [f for f in missing if file_problem(self.blobs / f.blob, f) is not None
                        and not self._copy_from_donor(f)]
            if to_fetch:
                self._check_room(to_fetch)
                total = sum(f.size for f in to_fetch)
                log.info("model %r: downloading %d of %d files (%s) of revision %s into %s", self.hub.repo_id,
                         len(to_fetch), len(self.files), _size(total), self.listing.commit[:12], self.cache)
                with ThreadPoolExecutor(min(PARALLEL_FILES, len(to_fetch))) as pool:
                    for _ in pool.map(self._fetch, to_fetch):  # the first failure ends the download
                        pass
            for expected in missing:
                link_into_snapshot(self.snapshot, expected.name, self.blobs / expected.blob)
            write_file_list(self.cache, self.listing)
            write_ref(self.cache, self.hub.repo_id, self.hub.revision, self.listing.commit)
        except OSError as exc:
            raise self._disk_error(exc) from exc
        if to_fetch:
            log.info("model %r: downloaded %d files, %s, in %.1f s", self.hub.repo_id, len(to_fetch), _size(total),
                     time.perf_counter() - started)
        return self.snapshot

    def _copy_from_donor(self, expected: HubFile) -> bool:
        for donor in self.donors:
            if donor != self.snapshot and file_problem(donor / expected.name, expected) is None:
                blob = self.blobs / expected.blob
                part = private_name(blob, _part_tag())
                shutil.copyfile(donor / expected.name, part)
                if _on_disk_matches(part, expected):
                    os.replace(part, blob)
                    return True
                part.unlink(missing_ok=True)
        return False

    def _check_room(self, files: list[HubFile]) -> None:
        resumable = (p for f in files for p in self._parts_of(self.blobs / f.blob) if not _in_use(p))
        partial = sum(max(0, _size_of(p)) for p in resumable)
        needed = sum(f.size for f in files) - partial
        free = shutil.disk_usage(self.blobs).free
        if needed > free:
            raise self._no_room(needed, free)

    def _no_room(self, needed: int, free: int) -> ModelLoadError:
        return ModelLoadError(
            f"could not load model {self.hub.repo_id!r}: not enough disk space in {self.cache}: the download "
            f"needs {_size(needed)} more and {_size(free)} is free; give the container (or the network volume) "
            "more disk, or free some"
        )

    def _disk_error(self, exc: OSError) -> ModelLoadError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return self._no_room(sum(f.size for f in self.files), shutil.disk_usage(self.cache).free)
        return ModelLoadError(f"could not load model {self.hub.repo_id!r}: cannot write to {self.cache}: "
                              f"{exc.strerror or exc}")

    def _fetch(self, expected: HubFile) -> None:
        """Fetch one file to its blob, resuming, retrying and checking it."""
        blob = self.blobs / expected.blob
        budget = self.hub.access.budget(f"{self.hub.repo_id!r}: {expected.name}")
        part = self._take_over_part(blob, expected) or private_name(blob, _part_tag())
        bad_checksums = 0
        while file_problem(blob, expected) is not None:  # another worker may have finished it
            try:
                self._transfer(expected, part, budget)
                if _on_disk_matches(part, expected):
                    os.replace(part, blob)
                    break
            except Transient as failure:
                budget.wait_after(failure)
                continue
            except (TakenOver, FileNotFoundError):  # resumed by another worker: it may finish it
                part = private_name(blob, _part_tag())
                continue
            part.unlink(missing_ok=True)
            bad_checksums += 1
            if bad_checksums == CHECKSUM_TRIES:
                raise ModelLoadError(f"could not load model {self.hub.repo_id!r}: {expected.name} did not match "
                                     f"the hub's hash in {CHECKSUM_TRIES} downloads")
            budget.wait_after(Transient("a download that did not match the hub's hash"))
        part.unlink(missing_ok=True)
        for leftover in self._parts_of(blob):
            if not _in_use(leftover):
                leftover.unlink(missing_ok=True)

    def _transfer(self, expected: HubFile, part: Path, budget: RetryBudget) -> None:
        """Append the rest of the file to `part`; raise `TakenOver` if another worker takes the
        part file meanwhile."""
        have = _size_of(part)
        if have > expected.size or have < 0:
            have = 0
        if have == expected.size:
            return
        if have:
            log.info("model %r: %s resumes at %s of %s", self.hub.repo_id, expected.name, _size(have),
                     _size(expected.size))
        progress = _Progress(self.hub.repo_id, expected, have)
        with self.hub.stream(self.listing.commit, expected.name, have) as reply:
            if have and reply.status_code != 206:  # the range was not honoured: from the start
                have = 0
            with open(part, "ab" if have else "wb") as out:
                written = os.fstat(out.fileno())
                for chunk in reply.iter_bytes():  # as it arrives: a cut keeps every byte received
                    if have + len(chunk) > expected.size:
                        raise ModelLoadError(f"could not load model {self.hub.repo_id!r}: the hub sent more of "
                                             f"{expected.name} than the {expected.size:,} bytes it lists")
                    _require_still_ours(part, written)
                    out.write(chunk)
                    have += len(chunk)
                    budget.progressed()
                    progress.update(have)
        if have < expected.size:
            raise Transient(f"the transfer of {expected.name} ended at {have:,} of {expected.size:,} bytes")

    def _parts_of(self, blob: Path) -> list[Path]:
        return [p for p in blob.parent.glob(blob.name + ".*") if PART.search(p.name) or p.name.endswith(".incomplete")]

    def _take_over_part(self, blob: Path, expected: HubFile) -> Path | None:
        """Rename the largest part file a dead worker left (or a blob cut short, which some tools
        leave) to one of ours, to resume it; the hash check at the end catches a bad start."""
        mine = private_name(blob, _part_tag())
        cut_blob = [blob] if 0 <= _size_of(blob) < expected.size else []  # no one writes a blob in place
        for candidate in sorted(self._parts_of(blob) + cut_blob, key=_size_of, reverse=True):
            if candidate != blob and _in_use(candidate):
                continue
            try:
                os.rename(candidate, mine)
            except FileNotFoundError:  # another worker took it first
                continue
            return mine
        return None


def _require_still_ours(part: Path, written: os.stat_result) -> None:
    try:
        now = part.stat()
    except FileNotFoundError:
        raise TakenOver(part.name) from None
    if (now.st_ino, now.st_dev) != (written.st_ino, written.st_dev):
        raise TakenOver(part.name)


def _on_disk_matches(path: Path, expected: HubFile) -> bool:
    """Whether the file as it is on disk has the hub's size and hash (a file the hub lists
    without a hash: its size)."""
    if _size_of(path) != expected.size:
        return False
    return not (expected.sha256 or expected.git_sha1) or file_digest(path, expected) == expected.blob


def _in_use(part: Path) -> bool:
    """Whether a live worker may still be writing `part`: not when its writer's process is
    gone from this host (or its PID is another process's now), nor when no one has written
    to it for `STALE_AFTER` seconds."""
    try:
        if time.time() - part.stat().st_mtime >= STALE_AFTER:
            return False
    except FileNotFoundError:
        return True  # someone renamed it: in use by them
    owner = PART.search(part.name)
    if owner and owner["host"] == HOST:
        started = _process_start(int(owner["pid"]))
        if started is None:
            return False
        return owner["start"] is None or started == "" or started == owner["start"]
    return True


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _size(count: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} PB"


class _Progress:
    """One line at 25, 50 and 75 % of a large file, and one when it is done."""

    def __init__(self, repo_id: str, expected: HubFile, start: int) -> None:
        self.repo_id, self.expected = repo_id, expected
        self.quiet = expected.size < LOGGED_FROM
        self.steps = [s for s in (0.25, 0.5, 0.75, 1.0) if s * expected.size > start]
        self.start, self.started = start, time.monotonic()

    def update(self, have: int) -> None:
        if self.quiet or not self.steps or have < self.steps[0] * self.expected.size:
            return
        while self.steps and have >= self.steps[0] * self.expected.size:
            step = self.steps.pop(0)
        rate = (have - self.start) / max(1e-6, time.monotonic() - self.started)
        done = "done" if step == 1.0 else f"{step:.0%}"
        log.info("model %r: %s %s (%s of %s, %s/s)", self.repo_id, self.expected.name, done, _size(have),
                 _size(self.expected.size), _size(rate))
