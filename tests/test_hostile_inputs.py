"""Hostile inputs: small requests that decode or compute large. Each gets a correct answer
or a one-line refusal, the worker serves on, and its peak memory over idle stays within a
stated bound, sampled from the worker's own process while the request runs.

The worker is the local endpoint as users start it, serving a tiny CLIP, a tiny CLAP and a
tiny BGE-M3 at BATCH_SIZES=4 with the default media budgets; every hostile file is built
here. The bounds: decodes in flight hold at most DECODE_MEMORY (512 MiB) together, or one
picture alone where it is larger (a WebP at MAX_IMAGE_PIXELS: about 540 MB), plus the model's
own preprocessing of a batch; before the budgets, the same inputs took 1.5 GB (the FLAC) and
about 8 GB (64 PNGs) (docs/BENCHMARKS.md, "Hostile inputs").
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

import tiny_families
from conftest import ROOT, start_local_endpoint
from process_watch import PeakMemory, assert_answer_or_one_line, settle

M3 = ROOT / "tests" / "data" / "hybrid" / "bge-m3"
REFUSAL_MB = 60  # a refusal decodes nothing
PEAK_MB = 400  # two PNGs of 40 million pixels being decoded at once, or a batch of long clips being featurised
WEBP_MB = 700  # one WebP of 38 million pixels: libwebp's buffer, its copy, the picture


def uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def picture(fmt: str, size: tuple[int, int], **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, fmt, **options)
    return buffer.getvalue()


def gif_frames(count: int, side: int) -> bytes:
    from PIL import Image

    frames = [Image.new("P", (side, side), i % 4) for i in range(count)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def silence(fmt: str, subtype: str, rate: int, channels: int, seconds: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", samplerate=rate, channels=channels, format=fmt, subtype=subtype) as clip:
        block = np.zeros((rate, channels), np.float32)
        for _ in range(seconds):
            clip.write(block)
    return buffer.getvalue()


def wav_claiming(frames: int, channels: int = 2, rate: int = 48_000) -> bytes:
    import struct

    size = frames * channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
            + b"data" + struct.pack("<I", size) + b"\0" * 4096)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    clip, clap = tiny_families.clip(root / "clip"), tiny_families.clap(root / "clap")
    server, base = start_local_endpoint(MODEL_NAMES=f"{clip};{clap};{M3}", SERVED_MODEL_NAMES="clip;clap;m3",
                                        BATCH_SIZES="4", MAX_OUTPUT_VALUES="1000000", MEMORY_TRIM_INTERVAL="0.2")
    yield server, base
    server.terminate()
    log = server.read_log()
    server.wait(30)
    assert "Traceback" not in log


def run(base: str, job: dict, timeout: float = 120) -> dict:
    return httpx.post(f"{base}/runsync", json={"input": job}, timeout=timeout).json()


def serves(base: str) -> bool:
    reply = run(base, {"model": "clip", "input": ["a cat", {"image": uri(picture("PNG", (40, 30)), "image/png")}]})
    return reply["status"] == "COMPLETED" and len(reply["output"]["data"]) == 2


PNG_6300 = picture("PNG", (6300, 6300), optimize=True)  # 39.7 million pixels, about 110 KB
CASES: dict[str, tuple[Callable[[], dict], str | int, float]] = {
    # name: (the job, the refusal's start or the number of vectors, the bound over idle in MB)
    "FLAC, 8 channels at 655 kHz, 60 s of silence": (
        lambda: {"model": "clap", "input": [{"audio": uri(silence("FLAC", "PCM_16", 655_350, 8, 60), "audio/flac")}]},
        "input: item 0: is sampled at 655350 Hz; the limit is 192000 Hz (MAX_AUDIO_SAMPLE_RATE)", REFUSAL_MB),
    "OGG, 8 channels at 48 kHz, 20 s: more samples than a clip may hold": (
        lambda: {"model": "clap", "input": [{"audio": uri(silence("OGG", "VORBIS", 48_000, 8, 20), "audio/ogg")}]},
        "input: item 0: the audio clip holds 7,680,000 samples (960,000 frames x 8 channels); the limit is "
        "5,760,000 (MAX_AUDIO_SAMPLES)", REFUSAL_MB),
    "WAV whose header claims 10 hours": (
        lambda: {"model": "clap", "input": [{"audio": uri(wav_claiming(48_000 * 36_000 // 2), "audio/wav")}]},
        "input: item 0: the audio clip is cut short: 4096 of its 3456000000 data bytes are there", REFUSAL_MB),
    "MP3, stereo at 48 kHz, 59 s, 18 of them: the request's samples": (
        lambda: {"model": "clap", "input": [{"audio": uri(silence("MP3", "MPEG_LAYER_III", 48_000, 2, 59),
                                                          "audio/mpeg")}] * 18},
        "input: the audio clips of this request hold 101,952,000 samples (MAX_REQUEST_AUDIO_SAMPLES); the limit is "
        "100,000,000", REFUSAL_MB),
    "MP3, stereo at 48 kHz, 59 s, 6 of them: decoded a batch at a time": (
        lambda: {"model": "clap", "input": [{"audio": uri(silence("MP3", "MPEG_LAYER_III", 48_000, 2, 59),
                                                          "audio/mpeg")}] * 6}, 6, PEAK_MB),
    "PNG of 6300 x 6300, 64 of them": (
        lambda: {"model": "clip", "input": [{"image": uri(PNG_6300, "image/png")}] * 64},
        "input: the images of this request hold 2,540,160,000 pixels (MAX_REQUEST_PIXELS); the limit is "
        "200,000,000", REFUSAL_MB),
    "PNG of 6300 x 6300, 5 of them: decoded two at a time, reduced at once": (
        lambda: {"model": "clip", "input": [{"image": uri(PNG_6300, "image/png")}] * 5}, 5, PEAK_MB),
    "JPEG of 6000 x 6000: decoded at an eighth of its size": (
        lambda: {"model": "clip", "input": [{"image": uri(picture("JPEG", (6000, 6000), quality=50), "image/jpeg")}] * 4},
        4, 80),
    "WebP of 16000 x 2400": (
        lambda: {"model": "clip", "input": [{"image": uri(picture("WEBP", (16000, 2400), lossless=True),
                                                          "image/webp")}]}, 1, WEBP_MB),
    "GIF of 20 frames of 3000 x 3000: the first frame only": (
        lambda: {"model": "clip", "input": [{"image": uri(gif_frames(20, 3000), "image/gif")}]}, 1, 150),
    "a media URL with port 99999": (
        lambda: {"model": "clip", "input": [{"image": "http://example.com:99999/cat.png"}]},
        "input: item 0: http://example.com:99999/cat.png is not a valid URL: Port out of range 0-65535", REFUSAL_MB),
    "a media URL with a broken IPv6 host": (
        lambda: {"model": "clip", "input": [{"image": "http://[::1/cat.png"}]},
        "input: item 0: http://[::1/cat.png is not a valid URL", REFUSAL_MB),
    "token vectors past MAX_OUTPUT_VALUES": (
        lambda: {"model": "m3", "input": [" ".join(["word"] * 200)] * 300, "embedding_types": ["multi_vector"]},
        "input: this request's token vectors hold", REFUSAL_MB),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_input_ends_in_an_answer_or_one_line_within_its_memory_bound(worker, case):
    server, base = worker
    make_job, expected, bound_mb = CASES[case]
    job = make_job()
    settle(server.pid)
    started = time.perf_counter()
    with PeakMemory(server.pid) as memory:
        reply = run(base, job)
    took = time.perf_counter() - started
    print(f"{case}: {memory.over_idle_mb:.0f} MB over idle, {took:.2f} s")
    assert_answer_or_one_line(reply, expected)
    assert memory.over_idle_mb < bound_mb, f"{memory.over_idle_mb:.0f} MB over idle"
    assert serves(base)


def test_a_picture_reduced_while_decoding_embeds_as_the_picture_resized_once(worker, tmp_path):
    """A picture much larger than the model's input is reduced to twice its side as it is
    decoded; its vector is CLIPModel's on the picture resized once, within rounding."""
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    server, base = worker
    y, x = np.mgrid[0:1500, 0:2000]
    pixels = np.stack([x * 255 // 2000, y * 255 // 1500, (x + y) * 255 // 3500], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    reply = run(base, {"model": "clip", "input": [{"image": uri(buffer.getvalue(), "image/png")}]})
    got = np.array(reply["output"]["data"][0]["embedding"])
    folder = Path(psutil.Process(server.pid).environ()["MODEL_NAMES"].split(";")[0])
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        expected = model.get_image_features(**processor(images=[Image.fromarray(pixels)], return_tensors="pt"))[0]
    expected = (expected / expected.norm()).numpy()
    assert float(got @ expected) > 0.999


def test_clap_usage_counts_real_tokens_not_the_padded_length(worker):
    from transformers import AutoTokenizer

    server, base = worker
    folder = Path(psutil.Process(server.pid).environ()["MODEL_NAMES"].split(";")[1])
    texts = ["the cat", "a dog"]
    reply = run(base, {"model": "clap", "input": texts})
    tokens = AutoTokenizer.from_pretrained(folder)(texts)["input_ids"]
    assert reply["output"]["usage"]["prompt_tokens"] == sum(len(ids) for ids in tokens) < 64


def test_multi_vector_base64_is_one_matrix_per_text_equal_to_the_floats(worker):
    server, base = worker
    texts = ["hybrid search in one call", "late interaction"]
    floats = run(base, {"model": "m3", "input": texts, "embedding_types": ["multi_vector"]})["output"]["data"]
    packed = run(base, {"model": "m3", "input": texts, "embedding_types": ["multi_vector"],
                        "encoding_format": "base64"})["output"]["data"]
    for as_floats, as_base64 in zip(floats, packed):
        matrix = as_base64["embeddings"]["multi_vector"]
        assert set(matrix) == {"shape", "base64"}
        decoded = np.frombuffer(base64.b64decode(matrix["base64"]), "<f4").reshape(matrix["shape"])
        assert np.array_equal(decoded, np.array(as_floats["embeddings"]["multi_vector"], np.float32))


def test_a_dense_only_request_to_a_three_output_model_computes_no_token_vectors():
    from embedding_worker.engine.kinds.hybrid import DENSE, MULTI_VECTOR, SPARSE, detect
    from embedding_worker.engine.kinds.hybrid.encoders import M3Encoder
    from embedding_worker.engine.kinds.hybrid.vectors import HybridText

    class Args:
        dtype, device = "float32", None

    encoder = M3Encoder(detect(M3), Args())
    texts = ["dense only", "a second text"]
    out = encoder.encode_core(encoder.encode_pre([HybridText(t, types=frozenset({DENSE})) for t in texts]))
    assert "colbert" not in out and "weights" not in out
    vectors = encoder.encode_post(out)
    assert all(v.dense is not None and v.multi_vector is None and v.sparse is None for v in vectors)
    every = encoder.encode_post(encoder.encode_core(encoder.encode_pre(texts)))
    for only, full in zip(vectors, every):
        assert np.array_equal(only.dense, full.dense)
        assert full.multi_vector is not None and full.sparse is not None
    mixed = encoder.encode_post(encoder.encode_core(encoder.encode_pre(
        [HybridText(texts[0], types=frozenset({SPARSE})), HybridText(texts[1], types=frozenset({MULTI_VECTOR}))])))
    assert mixed[0].multi_vector is None and mixed[0].sparse is not None
    assert mixed[1].sparse is None and np.array_equal(mixed[1].multi_vector, every[1].multi_vector)
