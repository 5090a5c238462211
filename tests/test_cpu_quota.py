"""Thread pools follow the container's CPU quota, not the host's core count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedding_worker.engine.cpu.quota import THREAD_VARIABLES, available_cpus, cpu_quota, limit_threads


def cgroup_v2(tmp_path: Path, cpu_max: str) -> Path:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def cgroup_v1(tmp_path: Path, quota: int, period: int = 100000) -> Path:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return tmp_path


@pytest.mark.parametrize("cpu_max, quota", [("max 100000", None), ("150000 100000", 1.5), ("400000 100000", 4.0)])
def test_cgroup_v2(tmp_path, cpu_max, quota):
    assert cpu_quota(cgroup_v2(tmp_path, cpu_max)) == quota


@pytest.mark.parametrize("raw, quota", [(-1, None), (50000, 0.5), (200000, 2.0)])
def test_cgroup_v1(tmp_path, raw, quota):
    assert cpu_quota(cgroup_v1(tmp_path, raw)) == quota


def test_no_cgroup_means_no_quota(tmp_path):
    assert cpu_quota(tmp_path) is None
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_a_fractional_quota_rounds_up_and_never_exceeds_the_usable_cores(tmp_path):
    assert available_cpus(cgroup_v2(tmp_path, "50000 100000")) == 1
    usable = len(os.sched_getaffinity(0))
    assert available_cpus(cgroup_v2(tmp_path, f"{(usable + 8) * 100000} 100000")) == usable


def test_thread_variables_are_set_unless_the_user_set_them(monkeypatch):
    for name in THREAD_VARIABLES:
        monkeypatch.setenv(name, "placeholder")  # restored after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    limit_threads(3)
    assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["OPENBLAS_NUM_THREADS"] == "3"
    assert os.environ["MKL_NUM_THREADS"] == "7"
