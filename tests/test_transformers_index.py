"""transformers' index of its model classes comes from a file after the first start: the
same index transformers builds, no scan of its source files, and a file that is missing,
stale or corrupt only costs the scan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from conftest import ROOT


SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, "src")
    from embedding_worker.engine.transformers_index import cached_index
    with cached_index():
        import transformers
        from transformers import BertModel, ModernBertModel
    from transformers.utils import import_utils
    scans = import_utils.create_import_structure_from_path.cache_info().misses
    assert BertModel.__name__ == "BertModel" and ModernBertModel.__module__.endswith("modeling_modernbert")
    wrapper = import_utils.define_import_structure
    package = transformers.__file__.rsplit("/", 1)[0]
    calls = [(package + "/models", "models"), (package + "/models/__init__.py", None)]
    same = all(wrapper(*call) == wrapper.__wrapped__(*call) for call in calls)
    print(json.dumps({"scans": scans, "same": same}))
    """
)


def run(cache: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env_with(cache), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def env_with(cache: Path) -> dict:
    return {**os.environ, "XDG_CACHE_HOME": str(cache)}


def index_file(cache: Path) -> Path:
    (found,) = (cache / "embedding-worker").glob("transformers-*.json")
    return found


def test_second_start_reads_the_index_instead_of_scanning(tmp_path):
    first = run(tmp_path)
    assert first["scans"] > 100 and first["same"]  # every model folder read, then kept
    written = index_file(tmp_path)
    stamp = written.stat().st_mtime_ns

    second = run(tmp_path)
    assert second["scans"] == 0 and second["same"]  # not one source file read
    assert written.stat().st_mtime_ns == stamp  # nothing new to keep


@pytest.mark.parametrize("damage", ["corrupt", "stale", "not an index"])
def test_a_damaged_index_costs_only_the_scan(tmp_path, damage):
    run(tmp_path)
    written = index_file(tmp_path)
    entries = orjson.loads(written.read_bytes())
    if damage == "corrupt":
        written.write_bytes(written.read_bytes()[: len(written.read_bytes()) // 2])
    elif damage == "stale":
        for entry in entries.values():
            entry["stamp"] -= 1
            entry["structure"] = [[[], {"models.fake.modeling_fake": ["FakeModel"]}]]
        written.write_bytes(orjson.dumps(entries))
    else:
        written.write_bytes(b"[1, 2, 3]")

    again = run(tmp_path)
    assert again["scans"] > 100 and again["same"]
    assert run(tmp_path)["scans"] == 0  # and the file is whole again
