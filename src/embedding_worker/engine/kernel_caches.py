"""Bounds on what torch's CPU math libraries keep for each input shape they meet.

On a CPU, torch's oneDNN kernels (the packed linear layers of `cpu_kernels.py` among them)
are built for one input shape and kept in two caches of 1024 entries each: ideep's
(`LRU_CACHE_CAPACITY`) and oneDNN's own (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`). Text comes in
every length, so nearly every batch is a new shape, and a worker's memory grows with each
until the caches are full, hundreds of MiB later. A forward pass meets only a few shapes
(one per kind of layer), so a small cache keeps every hit that matters: measured in
docs/BENCHMARKS.md ("Soak"), memory stays flat at the same speed.

Read once, when the libraries first build a kernel: set before torch is imported. A value
set in the environment wins.
"""

from __future__ import annotations

import os

KERNEL_CACHE_ENTRIES = 64
KERNEL_CACHE_VARIABLES = ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")


def bound_kernel_caches(entries: int = KERNEL_CACHE_ENTRIES) -> None:
    for name in KERNEL_CACHE_VARIABLES:
        os.environ.setdefault(name, str(entries))
