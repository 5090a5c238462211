"""CPU memory reaches a plateau: torch's kernel caches are bounded before torch is imported,
and freed memory is handed back to the system every few seconds. The plateau itself is
measured by the benchmark's soak (docs/BENCHMARKS.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from conftest import ROOT
from embedding_worker.engine.cpu.memory import MemoryTrimmer, glibc_trim


def test_freed_memory_is_handed_back_periodically():
    calls = threading.Semaphore(0)
    trimmer = MemoryTrimmer(trim=calls.release, every=0.01).start()  # MEMORY_TRIM_INTERVAL
    try:
        assert all(calls.acquire(timeout=5) for _ in range(3))
    finally:
        trimmer.stop()
    assert trimmer.trims >= 3


def test_glibc_trim_runs_here():
    trim = glibc_trim()
    assert trim is not None  # this machine's C library is glibc
    assert trim() in (0, 1)


def test_the_worker_process_bounds_the_kernel_caches_and_trims(hub_cache):
    """As the entry points build it: the caches bounded before torch is imported, the trimmer running."""
    code = ("import os, sys; sys.path.insert(0, 'src');"
            "from embedding_worker.serving.worker import start_worker;"
            "w = start_worker(); print(os.environ['LRU_CACHE_CAPACITY'], os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'],"
            " w.trimmer._thread.is_alive())")
    env = {k: v for k, v in os.environ.items() if k not in ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, "MODEL_NAMES": "sentence-transformers/all-MiniLM-L6-v2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["64", "64", "True"]
