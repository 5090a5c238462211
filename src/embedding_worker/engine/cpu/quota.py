"""How many CPUs this container may really use: its cgroup quota, not the host's cores.

Thread pools sized by the host's core count (torch, OpenMP, MKL, CTranslate2 read these
variables) oversubscribe a container limited to a few CPUs and run slower.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cpu_quota(cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup (v2 `cpu.max`, or v1 CFS quota); None when unlimited."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    usable = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup)
    return max(1, min(usable, math.ceil(quota))) if quota else usable


def limit_threads(cpus: int) -> None:
    """Size the math libraries' thread pools; must run before they are imported."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(cpus))  # an explicit setting wins
