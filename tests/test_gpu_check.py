"""The GPU check reports whatever happens: a phase that fails is recorded as failed, the
phases after it still run, and the report is on disk. Run here on the CPU with tiny models,
as its dry run does."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_a_failed_phase_is_recorded_and_the_rest_still_run(tmp_path):
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--sizes", "small", "--rounds", "1",
                           "--scale", "0.05", "--tokenizer", str(tmp_path / "no-tokenizer"), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["phases"]["imports"].startswith("done") and report["phases"]["models"].startswith("failed")
    assert report["phases"]["images"].startswith("done")  # it needs no tokenizer: it ran all the same
    assert report["phases"]["long_inputs"].startswith("done"), report["phases"]["long_inputs"]
    for row in report["long_inputs"].values():
        assert row["finite"] and row["min_centred_cosine"] >= row["gate"] and row["tokens"] > 4 * 1000
    assert "start_up" not in report["phases"]  # nothing to start without models
    assert report["images"]["negative_control_fails_gate"] and report["images"]["min_centred_cosine"] >= 0.99
    assert any(failure.startswith("models: ") for failure in report["failures"])
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "- models: failed after" in markdown and "## Images" in markdown and "FAILED: models:" in markdown
    assert all(not row.get("error") for row in report["imports"].values())
