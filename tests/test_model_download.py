"""Model files survive a flaky hub, cut transfers, workers killed mid-download, caches left
half-written, and workers sharing a volume; what cannot be survived ends in one line that
says what to do. Every fault is played by a stand-in hub on loopback (`stand_in_hub.py`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from stand_in_hub import Fault, StandInHub
from embedding_worker.engine.model_sources import ModelLocations, ModelSource, resolve_model
from embedding_worker.engine.model_sources.cache_layout import find_snapshot, repo_folder
from embedding_worker.engine.model_sources.hub import HubAccess
from embedding_worker.errors import ModelLoadError

REPO = "stand-in/bert-embedder"
WEIGHTS = "model.safetensors"


@pytest.fixture
def places(tmp_path: Path) -> ModelLocations:
    """An image cache, a RunPod volume and a container cache, all empty."""
    baked, volume, hf_cache = tmp_path / "baked", tmp_path / "runpod-volume", tmp_path / "hf"
    for folder in (baked, volume, hf_cache):
        folder.mkdir()
    return ModelLocations(baked, volume / "huggingface-cache" / "hub", hf_cache)


@pytest.fixture(autouse=True)
def log_lines(caplog: pytest.LogCaptureFixture):
    """The worker's info lines, captured even where an in-process worker stopped their propagation."""
    logger = logging.getLogger("embedding_worker")
    propagate, logger.propagate = logger.propagate, True
    caplog.set_level(logging.INFO, logger="embedding_worker")
    yield caplog
    logger.propagate = propagate


@pytest.fixture
def hub(tiny_embedder_path: Path):
    with StandInHub({REPO: tiny_embedder_path}) as running:
        yield running


def access(hub: StandInHub, timeout: float = 20.0, offline: bool = False, token: bool = False) -> HubAccess:
    return HubAccess(hub.url, offline=offline, timeout=timeout, token_set=token, backoff=0.05)


def assert_same_files(snapshot: Path, source: Path) -> None:
    """Every file the model needs is in the snapshot, byte for byte (documents are not fetched)."""
    for path in source.rglob("*"):
        if path.is_file() and not path.name.endswith(".md"):
            name = path.relative_to(source)
            assert (snapshot / name).read_bytes() == path.read_bytes(), name


def weights_gets(hub: StandInHub) -> list:
    return [r for r in hub.served(f"/resolve/{hub.commit}/{WEIGHTS}") if r.method == "GET"]


def hub_client_download(hub: StandInHub, cache: Path) -> Path:
    """The model as `huggingface_hub.snapshot_download` lays it (as RunPod's cache and other tools do)."""
    code = ("import sys; from huggingface_hub import snapshot_download; "
            "print(snapshot_download(sys.argv[1], cache_dir=sys.argv[2]))")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, "-c", code, REPO, str(cache)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return Path(done.stdout.strip().splitlines()[-1])


# Transient faults are retried


def test_a_hub_that_answers_503_twice_then_serves(hub, places, tiny_embedder_path, caplog):
    hub.add_fault(Fault("/api/models/", status=503, times=2))
    found = resolve_model(REPO, None, places, access=access(hub))
    assert found.source is ModelSource.downloaded
    assert found.path.parents[2] == places.runpod_cache  # the volume is mounted: the next start finds it there
    assert_same_files(found.path, tiny_embedder_path)
    assert len(hub.served("/api/models/")) == 3
    assert caplog.text.count("HTTP 503; retrying in") == 2


def test_429_and_5xx_on_a_file_are_retried_honouring_retry_after(hub, places, tiny_embedder_path):
    hub.add_fault(Fault(WEIGHTS, status=429, retry_after="1"))
    hub.add_fault(Fault("tokenizer.json", status=502, times=2))
    found = resolve_model(REPO, None, places, access=access(hub))
    assert_same_files(found.path, tiny_embedder_path)
    first, second = weights_gets(hub)[:2]
    assert second.at - first.at >= 0.95  # Retry-After: 1, not the 0.05 s backoff


def test_a_cut_transfer_resumes_where_it_stopped(hub, places, tiny_embedder_path, caplog):
    size = (tiny_embedder_path / WEIGHTS).stat().st_size
    hub.add_fault(Fault(WEIGHTS, cut_after=size // 2))
    found = resolve_model(REPO, None, places, access=access(hub))
    assert_same_files(found.path, tiny_embedder_path)
    ranges = [r.range for r in weights_gets(hub)]
    assert ranges == [None, f"bytes={size // 2}-"]
    assert f"{WEIGHTS} resumes at" in caplog.text


def test_a_stalled_transfer_is_retried_and_resumed(hub, places, tiny_embedder_path):
    hub.add_fault(Fault(WEIGHTS, stall=8.0))
    started = time.monotonic()
    found = resolve_model(REPO, None, places, access=access(hub, timeout=4.0))  # reads time out after 1 s
    assert time.monotonic() - started < 6.0  # not waiting the stall out
    assert_same_files(found.path, tiny_embedder_path)
    assert weights_gets(hub)[1].range is not None


def test_a_hub_that_keeps_failing_ends_in_one_line_within_the_budget(hub, places):
    hub.add_fault(Fault("/api/models/", status=503, times=1000))
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as failed:
        resolve_model(REPO, None, places, access=access(hub, timeout=1.5))
    assert time.monotonic() - started < 4
    message = str(failed.value)
    assert message.startswith(f"could not load model '{REPO}'") and "\n" not in message
    assert "HTTP 503" in message and "MODEL_DOWNLOAD_TIMEOUT" in message


def test_a_retry_after_beyond_the_budget_fails_at_once(hub, places):
    hub.add_fault(Fault("/api/models/", status=429, retry_after="3600"))
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="asked to wait 3600 s"):
        resolve_model(REPO, None, places, access=access(hub, timeout=60))
    assert time.monotonic() - started < 2


# A cached snapshot is checked before it is loaded


def test_a_snapshot_cut_short_by_a_killed_worker_is_repaired_in_place(hub, places, tiny_embedder_path, caplog):
    first = resolve_model(REPO, None, places, access=access(hub))
    with open(first.path / WEIGHTS, "r+b") as weights:  # the blob behind the link, cut short
        weights.truncate(1000)
    hub.requests.clear()
    found = resolve_model(REPO, None, places, access=access(hub))
    assert found.path == first.path
    assert_same_files(found.path, tiny_embedder_path)
    assert [r.path.rsplit("/", 1)[-1] for r in hub.served("/resolve/")] == [WEIGHTS]  # only the bad file
    assert [r.range for r in weights_gets(hub)] == ["bytes=1000-"]  # from where the cut file ends
    assert "is damaged: model.safetensors is cut short (1,000 of" in caplog.text


def test_a_hub_client_cache_with_a_cut_weights_file_is_repaired(hub, places, tiny_embedder_path):
    """A snapshot laid by huggingface_hub (no file list of ours): the hub's list is asked for."""
    snapshot = hub_client_download(hub, places.hf_cache)
    os.truncate(snapshot / WEIGHTS, 5000)
    hub.requests.clear()
    found = resolve_model(REPO, None, places, access=access(hub))
    assert_same_files(found.path, tiny_embedder_path)
    assert [r.path.rsplit("/", 1)[-1] for r in hub.served("/resolve/")] == [WEIGHTS]


def test_a_missing_tokenizer_file_is_found_by_the_hubs_list(hub, places, tiny_embedder_path):
    """Nothing in the files themselves shows it: only the hub's list of the snapshot does."""
    snapshot = hub_client_download(hub, places.hf_cache)
    (snapshot / "tokenizer.json").unlink()
    found = resolve_model(REPO, None, places, access=access(hub))
    assert_same_files(found.path, tiny_embedder_path)


def test_weights_that_never_arrived_are_resumed_from_the_hub_clients_incomplete_file(
        hub, places, tiny_embedder_path, caplog):
    """What huggingface_hub leaves when killed mid-file: `blobs/<sha256>.incomplete`, no link.
    No volume is mounted: the container's cache is where downloads go, and it is repaired."""
    places = ModelLocations(places.baked_cache, places.hf_cache.parent / "absent" / "huggingface-cache" / "hub",
                            places.hf_cache)
    snapshot = hub_client_download(hub, places.hf_cache)
    blob = (snapshot / WEIGHTS).resolve()
    (snapshot / WEIGHTS).unlink()
    incomplete = blob.with_name(blob.name + ".incomplete")
    blob.rename(incomplete)
    os.truncate(incomplete, 4096)
    os.utime(incomplete, (time.time() - 600, time.time() - 600))  # its writer is long gone
    (repo_folder(places.hf_cache, REPO) / "file-lists").mkdir()  # no list of ours: ask the hub
    hub.requests.clear()
    found = resolve_model(REPO, None, places, access=access(hub))
    assert found.path == snapshot
    assert_same_files(found.path, tiny_embedder_path)
    assert [r.range for r in weights_gets(hub)] == ["bytes=4096-"]
    assert not incomplete.exists()


def test_a_damaged_read_only_cache_is_passed_over_for_a_writable_one(hub, places, tiny_embedder_path, caplog):
    baked = hub_client_download(hub, places.baked_cache)
    os.truncate(baked.resolve() / WEIGHTS, 100)
    before = (baked / WEIGHTS).stat().st_size
    found = resolve_model(REPO, None, places, access=access(hub))
    assert found.source is ModelSource.downloaded and found.path.is_relative_to(places.runpod_cache)
    assert_same_files(found.path, tiny_embedder_path)
    assert (baked / WEIGHTS).stat().st_size == before  # the image's files are not touched
    assert "(baked into the image) is damaged" in caplog.text and "passing it over" in caplog.text


@pytest.mark.parametrize("damage", ["cut short", "never arrived"])
def test_a_damaged_snapshot_offline_fails_in_one_line_naming_the_file_and_the_fix(
        hub, places, tiny_embedder_path, damage):
    snapshot = hub_client_download(hub, places.hf_cache)
    if damage == "cut short":
        os.truncate(snapshot / WEIGHTS, 200_000)
    else:
        blob = (snapshot / WEIGHTS).resolve()
        (snapshot / WEIGHTS).unlink()
        blob.rename(blob.with_name(blob.name + ".incomplete"))
    hub.requests.clear()
    with pytest.raises(ModelLoadError) as failed:
        resolve_model(REPO, None, places, access=access(hub, offline=True))
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"could not load model '{REPO}': its snapshot in {places.hf_cache} is damaged: ")
    expected = ("model.safetensors is cut short (200,000 of" if damage == "cut short"
                else "the weights file is missing: the snapshot holds none (a download was cut short: blobs/")
    assert expected in message
    assert "unset HF_HUB_OFFLINE" in message and str(repo_folder(places.hf_cache, REPO)) in message
    assert hub.requests == []  # offline: the hub is not asked


def test_a_whole_snapshot_loads_without_asking_the_hub_again(hub, places):
    resolve_model(REPO, None, places, access=access(hub))
    hub.requests.clear()
    found = resolve_model(REPO, None, places, access=access(hub))
    assert found.source is ModelSource.runpod_cache
    assert hub.requests == []  # the hub's file list was kept beside the snapshot


# What cannot be retried: one line, at once


def test_a_gated_model_names_hf_token(tiny_embedder_path, places):
    with StandInHub({REPO: tiny_embedder_path}, gated={REPO: "hf_right"}) as gated:
        for token_set in (False, True):
            started = time.monotonic()
            with pytest.raises(ModelLoadError) as failed:
                resolve_model(REPO, None, places, access=access(gated, token=token_set))
            assert time.monotonic() - started < 2
            message = str(failed.value)
            assert message.startswith(f"could not load model '{REPO}': it is gated")
            assert "HF_TOKEN" in message and f"{gated.url}/{REPO}" in message
            assert ("HF_TOKEN's token has no access" in message) is token_set


def test_a_gated_model_downloads_with_its_token(tiny_embedder_path, tmp_path):
    with StandInHub({REPO: tiny_embedder_path}, gated={REPO: "hf_right"}) as gated:
        env = {**os.environ, "HF_ENDPOINT": gated.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_right"}
        code = ("import sys; from pathlib import Path; sys.path.insert(0, 'src');"
                "from embedding_worker.engine.model_sources.download import download;"
                "from embedding_worker.engine.model_sources.hub import HubAccess;"
                "print(download(sys.argv[1], None, Path(sys.argv[2]), HubAccess.from_environment(30)))")
        done = subprocess.run([sys.executable, "-c", code, REPO, str(tmp_path / "cache")], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert_same_files(Path(done.stdout.strip()), tiny_embedder_path)
        assert {r.authorization for r in gated.requests} == {"Bearer hf_right"}


def test_an_unknown_repo_or_revision_names_both(hub, places):
    with pytest.raises(ModelLoadError) as failed:
        resolve_model("nobody/nothing", None, places, access=access(hub))
    assert "'nobody/nothing'" in str(failed.value) and "'main'" in str(failed.value)
    assert "HF_TOKEN" in str(failed.value)  # the hub answers 401 for a repo it does not show
    with pytest.raises(ModelLoadError) as failed:
        resolve_model(REPO, "v9.9", places, access=access(hub))
    assert str(failed.value) == (f"could not load model '{REPO}': it has no revision 'v9.9' on the hub (404): "
                                 "check MODEL_REVISIONS")
    hub.add_fault(Fault("/api/models/", status=404))
    with pytest.raises(ModelLoadError, match=f"the hub has no model '{REPO}' at revision 'main' .404.: check "
                                             "MODEL_NAMES and MODEL_REVISIONS"):
        resolve_model(REPO, None, places, access=access(hub))


def test_a_full_disk_names_the_folder_and_the_bytes(hub, places):
    hub.add_fault(Fault(WEIGHTS, listed_size=10**15))
    with pytest.raises(ModelLoadError) as failed:
        resolve_model(REPO, None, places, access=access(hub))
    message = str(failed.value)
    assert f"not enough disk space in {places.runpod_cache}: the download needs 1.0 PB more and " in message
    assert " is free" in message
    assert hub.served("/resolve/") == []  # nothing written


# Workers killed mid-download, and workers sharing a volume


def download_in_a_process(hub: StandInHub, cache: Path, stale_after: float = 60.0) -> subprocess.Popen:
    code = ("import logging, sys; from pathlib import Path; sys.path.insert(0, 'src');"
            "logging.basicConfig(level=logging.INFO);"
            "from embedding_worker.engine.model_sources import download as module;"
            f"module.STALE_AFTER = {stale_after};"
            "from embedding_worker.engine.model_sources.download import download;"
            "from embedding_worker.engine.model_sources.hub import HubAccess;"
            "print(download(sys.argv[1], None, Path(sys.argv[2]), HubAccess.from_environment(60)))")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
    return subprocess.Popen([sys.executable, "-c", code, REPO, str(cache)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stalled_part(blobs: Path, at_least: int, idle: float) -> Path | None:
    """A part file of `at_least` bytes, unwritten for `idle` seconds. Other files' parts come
    and go meanwhile (published between the listing and their stat): they are skipped."""
    for part in blobs.glob("*.part-*") if blobs.is_dir() else []:
        try:
            found = part.stat()
        except FileNotFoundError:
            continue
        if found.st_size >= at_least and time.time() - found.st_mtime > idle:
            return part
    return None


def test_a_worker_killed_mid_download_is_resumed_by_the_next(hub, places, tiny_embedder_path):
    size = (tiny_embedder_path / WEIGHTS).stat().st_size
    hub.add_fault(Fault(WEIGHTS, rate=size / 4))  # four seconds for the weights
    blobs = repo_folder(places.download_cache, REPO) / "blobs"
    killed = download_in_a_process(hub, places.download_cache)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (part := _stalled_part(blobs, size // 4 + 1, 0.0)) is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    written = part.stat().st_size
    assert find_snapshot(places.download_cache, REPO, None) is None  # no ref: nothing half-done is published
    found = resolve_model(REPO, None, places, access=access(hub))
    assert_same_files(found.path, tiny_embedder_path)
    resumed_from = int(weights_gets(hub)[-1].range.removeprefix("bytes=").rstrip("-"))
    assert resumed_from >= written
    assert list(blobs.glob("*.part-*")) == []


def test_two_workers_downloading_to_one_volume_both_serve_the_right_vectors(tmp_path, embedder_path):
    """Two cold starts at once, the same model, the same network volume, a slow hub."""
    from sentence_transformers import SentenceTransformer

    volume = tmp_path / "runpod-volume"
    volume.mkdir()
    size = (embedder_path / WEIGHTS).stat().st_size
    repo = "stand-in/all-MiniLM-L6-v2"
    with StandInHub({repo: embedder_path}) as slow_hub:
        slow_hub.add_fault(Fault(WEIGHTS, rate=size / 3, times=2))  # both transfers overlap
        env = {**os.environ, "MODEL_NAMES": repo, "RUNPOD_VOLUME_DIR": str(volume), "HF_ENDPOINT": slow_hub.url,
               "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(tmp_path / "home/hub"),
               "BAKED_HF_CACHE": str(tmp_path / "none")}
        job = json.dumps({"input": {"model": repo, "input": ["Hello, world!", "A second sentence."]}})
        workers = [subprocess.Popen([sys.executable, "src/handler.py", "--test_input", job], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [worker.communicate(timeout=300) for worker in workers]
    expected = SentenceTransformer(str(embedder_path), device="cpu").encode(
        ["Hello, world!", "A second sentence."], normalize_embeddings=True)
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-2000:]
        assert f"model '{repo}': downloaded from the hub ({volume}/huggingface-cache/hub/models--" in stderr
        body = json.loads(next(line for line in stdout.splitlines() if line.startswith("{")))
        vectors = np.array([item["embedding"] for item in body["data"]])
        assert np.abs(vectors - expected).max() <= 1e-5
    snapshot = find_snapshot(volume / "huggingface-cache" / "hub", repo, None)
    assert hashlib.sha256((snapshot / WEIGHTS).read_bytes()).digest() == hashlib.sha256(
        (embedder_path / WEIGHTS).read_bytes()).digest()
    assert not list((snapshot.parents[1] / "blobs").glob("*.part-*"))


def test_the_worker_exits_in_one_line_when_the_model_is_gated(tiny_embedder_path, tmp_path):
    with StandInHub({REPO: tiny_embedder_path}, gated={REPO: "hf_right"}) as gated:
        env = {**os.environ, "MODEL_NAMES": REPO, "HF_ENDPOINT": gated.url, "HF_HUB_OFFLINE": "0",
               "RUNPOD_VOLUME_DIR": str(tmp_path / "none"), "HF_HOME": str(tmp_path / "home"),
               "HF_HUB_CACHE": str(tmp_path / "home/hub"), "BAKED_HF_CACHE": str(tmp_path / "none")}
        env.pop("HF_TOKEN", None)
        job = json.dumps({"input": {"model": REPO, "input": "Hello"}})
        started = time.monotonic()
        done = subprocess.run([sys.executable, "src/handler.py", "--test_input", job], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: could not load model '{REPO}': it is gated (401) and no HF_TOKEN is set: accept its "
                      f"terms at {gated.url}/{REPO} and set HF_TOKEN to a token of that account"]


def test_documents_are_not_fetched_and_the_file_list_is_kept(places, tiny_embedder_path, tmp_path):
    folder = tmp_path / "repo"
    shutil.copytree(tiny_embedder_path, folder)
    (folder / "README.md").write_text("# a model card")
    (folder / "tf_model.h5").write_bytes(b"other framework")
    with StandInHub({REPO: folder}) as hub:
        found = resolve_model(REPO, None, places, access=access(hub))
        assert not (found.path / "README.md").exists() and not (found.path / "tf_model.h5").exists()
        assert not any(r.path.endswith((".md", ".h5")) for r in hub.requests)
    assert_same_files(found.path, tiny_embedder_path)
    listed = json.loads((repo_folder(places.runpod_cache, REPO) / "file-lists" / f"{hub.commit}.json").read_text())
    assert {f["name"] for f in listed["files"]} >= {WEIGHTS, "config.json", "modules.json", "README.md"}


def test_a_downloaded_snapshot_is_one_the_hub_client_reads_offline(hub, places, tiny_embedder_path):
    from huggingface_hub import hf_hub_download, scan_cache_dir

    found = resolve_model(REPO, None, places, access=access(hub))
    path = hf_hub_download(REPO, "config.json", cache_dir=places.runpod_cache, local_files_only=True)
    assert Path(path).read_bytes() == (tiny_embedder_path / "config.json").read_bytes()
    assert (found.path / WEIGHTS).is_symlink()  # a link into blobs/, as the hub client lays it
    scanned = scan_cache_dir(places.runpod_cache)
    assert scanned.warnings == [] and [r.repo_id for r in scanned.repos] == [REPO]


def test_a_baked_model_is_checked_offline_against_the_hubs_list(hub, places, tiny_embedder_path):
    """bake_models.py downloads as the worker does and keeps the hub's file list in the image, so
    a start-up offline still finds a file whose bytes changed at the same size."""
    env = {**os.environ, "MODEL_NAMES": REPO, "BAKED_HF_CACHE": str(places.baked_cache), "HF_ENDPOINT": hub.url,
           "HF_HUB_OFFLINE": "0"}
    done = subprocess.run([sys.executable, "builder/bake_models.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = resolve_model(REPO, None, places, access=access(hub, offline=True))
    assert found.source is ModelSource.baked
    tokenizer = (found.path / "tokenizer.json").resolve()
    tokenizer.write_bytes(tokenizer.read_bytes().replace(b"[CLS]", b"[XYZ]"))
    with pytest.raises(ModelLoadError, match="tokenizer.json is not what the hub holds"):
        resolve_model(REPO, None, places, access=access(hub, offline=True))


# Hostile listings and shared downloads


@pytest.mark.parametrize("sibling, problem", [
    ({"rfilename": "../../../../escaped.txt", "size": 5, "blobId": "0" * 40},
     "it names a file '../../../../escaped.txt', which is not a plain relative path (an empty, '.' or '..' part)"),
    ({"rfilename": "/tmp/escaped.txt", "size": 5, "blobId": "0" * 40},
     "it names a file '/tmp/escaped.txt', which is absolute"),
    ({"rfilename": "1_Pooling/../../escaped.txt", "size": 5, "blobId": "0" * 40},
     "it names a file '1_Pooling/../../escaped.txt', which is not a plain relative path (an empty, '.' or '..' part)"),
    ({"rfilename": "escaped.bin", "size": 5, "lfs": {"sha256": "../../../escaped", "size": 5}},
     "the sha256 of 'escaped.bin', '../../../escaped', is not a sha256 hash"),
    ({"rfilename": "escaped.txt", "size": 5, "blobId": "../../escaped"},
     "the blob id of 'escaped.txt', '../../escaped', is not a git hash"),
])
def test_a_file_list_naming_paths_outside_the_cache_fails_in_one_line_and_writes_nothing_outside(
        hub, places, tmp_path, sibling, problem):
    hub.extra_siblings.append(sibling)
    with pytest.raises(ModelLoadError) as failed:
        resolve_model(REPO, None, places, access=access(hub))
    assert str(failed.value) == f"could not load model '{REPO}': the hub's file list is refused: {problem}"
    assert not list(tmp_path.parent.rglob("escaped*")) and not Path("/tmp/escaped.txt").exists()
    assert not any("/resolve/" in r.path for r in hub.requests)  # not a byte fetched


def test_a_writer_stalled_past_the_stale_time_is_taken_over_and_the_published_file_is_the_hubs(
        hub, places, tiny_embedder_path):
    """Two workers, one cache: the first stalls mid-file past STALE_AFTER (here 2 s); the
    second takes its part file over and resumes it; only then does the first's transfer go on
    (the hub holds it until the second's request has come, however slowly the second starts),
    and the first sees its file renamed at its next write and ends with the published file.
    Both blobs are the hub's bytes."""
    size = (tiny_embedder_path / WEIGHTS).stat().st_size
    release = threading.Event()
    hub.add_fault(Fault(WEIGHTS, stall=120.0, release=release))  # the first transfer: half, then held
    blobs = repo_folder(places.download_cache, REPO) / "blobs"
    first = download_in_a_process(hub, places.download_cache, stale_after=2.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _stalled_part(blobs, size // 2, 2.5):
        time.sleep(0.05)
    second = download_in_a_process(hub, places.download_cache, stale_after=2.0)
    while time.monotonic() < deadline + 60 and len(weights_gets(hub)) < 2 and second.poll() is None:
        time.sleep(0.05)
    release.set()
    results = [worker.communicate(timeout=120) for worker in (second, first)]
    for worker, (_, stderr) in zip((second, first), results):
        assert worker.returncode == 0, stderr[-2000:]
    ranges = [r.range for r in weights_gets(hub)]
    assert ranges[0] is None and ranges[1] == f"bytes={size // 2}-"  # the second resumed the first's part
    snapshot = find_snapshot(places.download_cache, REPO, None)
    assert (snapshot / WEIGHTS).read_bytes() == (tiny_embedder_path / WEIGHTS).read_bytes()
    assert not list(blobs.glob("*.part-*"))


def test_a_part_file_of_a_dead_writer_whose_pid_is_alive_again_is_resumed(hub, places, tiny_embedder_path):
    """In a container the worker is PID 1 in every life: a part file left by an earlier PID 1
    (another start time) is its dead writer's, not a live one's, however fresh it is."""
    from embedding_worker.engine.model_sources.download import HOST, _in_use, _process_start

    listing = {f["rfilename"]: f for f in hub.files(REPO)}
    blob = repo_folder(places.download_cache, REPO) / "blobs" / listing[WEIGHTS]["lfs"]["sha256"]
    blob.parent.mkdir(parents=True)
    stale = blob.with_name(f"{blob.name}.part-{HOST}-1@1-0123456789ab")
    stale.write_bytes((tiny_embedder_path / WEIGHTS).read_bytes()[:4096])
    live = blob.with_name(f"{blob.name}.part-{HOST}-{os.getpid()}@{_process_start(os.getpid())}-0123456789ab")
    live.write_bytes(b"")
    assert not _in_use(stale) and _in_use(live)
    os.utime(live, (time.time() - 600, time.time() - 600))
    assert not _in_use(live)  # no write for STALE_AFTER: dead whoever it is
    live.unlink()
    found = resolve_model(REPO, None, places, access=access(hub))
    assert_same_files(found.path, tiny_embedder_path)
    assert [r.range for r in weights_gets(hub)] == ["bytes=4096-"]


def test_large_weights_copied_from_a_read_only_cache_are_hashed_before_they_are_published(
        hub, places, tiny_embedder_path, monkeypatch):
    """A baked snapshot, damaged (its tokenizer cut), whose weights have the right size but not
    the right bytes; weights are too large to be hashed at start-up (HASHED_UP_TO, here 0), so
    only the copy's check can tell: the weights are fetched from the hub instead."""
    from embedding_worker.engine.model_sources import snapshot_check

    baked = hub_client_download(hub, places.baked_cache)
    weights = baked.resolve() / WEIGHTS
    data = bytearray(weights.resolve().read_bytes())
    data[-1] ^= 0xFF
    weights.resolve().write_bytes(bytes(data))
    os.truncate((baked / "tokenizer.json").resolve(), 10)
    monkeypatch.setattr(snapshot_check, "HASHED_UP_TO", 0)
    hub.requests.clear()
    found = resolve_model(REPO, None, places, access=access(hub))
    assert (found.path / WEIGHTS).read_bytes() == (tiny_embedder_path / WEIGHTS).read_bytes()
    assert len(weights_gets(hub)) == 1


def test_a_hub_that_cannot_be_reached_is_given_up_in_seconds_naming_where_models_come_from(
        places, monkeypatch, log_lines):
    """Connection refused is not a flaky hub: given up after UNREACHABLE_FOR (here 2 s), not
    MODEL_DOWNLOAD_TIMEOUT (300 s), in one line naming the variables that decide where models
    come from; the first line said what was downloaded from where, and why."""
    from conftest import free_port
    from embedding_worker.engine.model_sources import hub as hub_module

    monkeypatch.setattr(hub_module, "UNREACHABLE_FOR", 2.0)
    nowhere = HubAccess(f"http://127.0.0.1:{free_port()}", offline=False, timeout=300.0, backoff=0.2)
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as failed:
        resolve_model(REPO, None, places, access=nowhere)
    assert time.monotonic() - started < 10
    message = str(failed.value)
    assert message.startswith(f"could not load model '{REPO}': the hub could not be reached for 2 s (ConnectError")
    assert all(variable in message for variable in ("HF_HUB_OFFLINE=1", "HF_HOME", "HF_ENDPOINT")) and "\n" not in message
    first = next(r.getMessage() for r in log_lines.records if "downloading it from" in r.getMessage())
    assert f"not in the image ({places.baked_cache})" in first and str(places.hf_cache) in first
    assert "(retry 1)" in log_lines.text and "attempt" not in log_lines.text
