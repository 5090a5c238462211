"""Memory that CPU compute keeps after it is done with it, bounded so a worker's memory
reaches a plateau instead of creeping up with every new input shape.

- **Kernel caches.** torch's oneDNN kernels (the packed linear layers of `kernels.py`
  among them) are built for one input shape and kept in two caches of 1024 entries each:
  ideep's (`LRU_CACHE_CAPACITY`) and oneDNN's own (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`). Text
  comes in every length, so nearly every batch is a new shape. A forward pass meets only a
  few shapes (one per kind of layer), so 64 entries keep every hit that matters. Read when
  the libraries first build a kernel: set before torch is imported; a value set in the
  environment wins.
- **Freed memory back to the system.** Activations of every size are allocated and freed
  by the forward pass and the tokenizer's threads; glibc keeps what was freed in each
  thread's arena, fragmented, and the process's memory grows with the variety of sizes
  seen. `MemoryTrimmer` hands free pages back (`malloc_trim`) every `MEMORY_TRIM_INTERVAL`
  seconds (5 by default).

Measured in docs/BENCHMARKS.md ("Soak"): memory flat at the same speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

KERNEL_CACHE_ENTRIES = 64
KERNEL_CACHE_VARIABLES = ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")


def bound_kernel_caches(entries: int = KERNEL_CACHE_ENTRIES) -> None:
    for name in KERNEL_CACHE_VARIABLES:
        os.environ.setdefault(name, str(entries))


def glibc_trim() -> Callable[[], object] | None:
    """`malloc_trim(0)` where the C library is glibc; None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


class MemoryTrimmer:
    """A daemon thread that hands freed memory back to the system every `every` seconds."""

    def __init__(self, trim: Callable[[], object] | None = None, every: float = 5.0) -> None:
        self._trim = trim or glibc_trim()
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.trims = 0

    def start(self) -> MemoryTrimmer:
        if self._trim is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memory-trimmer", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._trim()
            self.trims += 1


def available_memory(cgroup: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes this process may still take: the system's available memory (`MemAvailable`),
    or what is left under the container's cgroup limit (v2 `memory.max`, v1
    `memory.limit_in_bytes`) where that is less; None where neither can be read."""
    available = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit, usage = (cgroup / limit_file).read_text().strip(), (cgroup / usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and usage.isdigit() and int(limit) < 2**60:
            left = max(0, int(limit) - int(usage))
            available = left if available is None else min(available, left)
    return available
