"""Every request budget holds at its bound and refuses one past it, in one line naming the
setting, before anything is decoded or computed: media bytes, pixels per image and per
request, audio samples per clip and per request, the sampling rate, and the numbers in a
response (MAX_OUTPUT_VALUES)."""

from __future__ import annotations

import asyncio
import base64
import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import start_worker
from embedding_worker.errors import InvalidRequest
from embedding_worker.media.audio import Audio
from embedding_worker.media.fetch import MediaLimits, prepare_media
from embedding_worker.media.images import Images

EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def png(width: int, height: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (width % 256, height % 256, 7)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def wav(frames: int, channels: int, rate: int) -> str:
    data = b"\0\0" * frames * channels
    header = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
              + b"data" + struct.pack("<I", len(data)))
    return "data:audio/wav;base64," + base64.b64encode(header + data).decode()


def outcome(kind, references: list[str], **limits) -> str:
    """"ok" when every header passes, else the refusal's line."""
    try:
        asyncio.run(prepare_media([(kind, dict(enumerate(references)))], MediaLimits(**limits)))
    except InvalidRequest as refused:
        assert "\n" not in refused.message
        return refused.message
    return "ok"


sides = st.integers(min_value=3, max_value=300)


@EXAMPLES
@given(st.lists(st.tuples(sides, sides), min_size=1, max_size=4))
def test_pixels_per_image_and_per_request_at_and_one_past_the_bound(sizes):
    pictures = [png(w, h) for w, h in sizes]
    largest, total = max(w * h for w, h in sizes), sum(w * h for w, h in sizes)
    assert outcome(Images(), pictures, max_pixels=largest, max_request_pixels=total) == "ok"
    over_one = outcome(Images(), pictures, max_pixels=largest - 1, max_request_pixels=total)
    assert over_one.startswith("input: item ") and over_one.endswith(f"the limit is {largest - 1} (MAX_IMAGE_PIXELS)")
    assert outcome(Images(), pictures, max_pixels=largest, max_request_pixels=total - 1) == (
        f"input: the images of this request hold {total:,} pixels (MAX_REQUEST_PIXELS); the limit is "
        f"{total - 1:,}; send fewer or smaller ones")


clips = st.lists(st.tuples(st.integers(480, 4800), st.integers(1, 8), st.sampled_from([8_000, 48_000, 96_000])),
                 min_size=1, max_size=3)


@EXAMPLES
@given(clips)
def test_audio_samples_per_clip_and_per_request_and_the_rate_at_and_one_past_the_bound(shapes):
    references = [wav(frames, channels, rate) for frames, channels, rate in shapes]
    largest = max(frames * channels for frames, channels, _ in shapes)
    total = sum(frames * channels for frames, channels, _ in shapes)
    fastest = max(rate for _, _, rate in shapes)
    bounds = {"max_audio_samples": largest, "max_request_audio_samples": total, "max_sample_rate": fastest}
    kind = Audio(48_000)
    assert outcome(kind, references, **bounds) == "ok"
    assert outcome(kind, references, **{**bounds, "max_audio_samples": largest - 1}).endswith(
        f"the limit is {largest - 1:,} (MAX_AUDIO_SAMPLES)")
    assert outcome(kind, references, **{**bounds, "max_request_audio_samples": total - 1}) == (
        f"input: the audio clips of this request hold {total:,} samples (MAX_REQUEST_AUDIO_SAMPLES); the limit is "
        f"{total - 1:,}; send fewer or smaller ones")
    assert outcome(kind, references, **{**bounds, "max_sample_rate": fastest - 1}).endswith(
        f"is sampled at {fastest} Hz; the limit is {fastest - 1} Hz (MAX_AUDIO_SAMPLE_RATE)")


@EXAMPLES
@given(st.lists(st.tuples(sides, sides), min_size=1, max_size=4))
def test_media_bytes_per_request_at_and_one_past_the_bound(sizes):
    pictures = [png(w, h) for w, h in sizes]
    total = sum(len(p.partition(",")[2]) * 3 // 4 for p in pictures)
    assert outcome(Images(), pictures, max_request_bytes=total) == "ok"
    refused = outcome(Images(), pictures, max_request_bytes=total - 1)
    assert refused.startswith("input: item ") and refused.endswith(
        f"the request's media pass {total - 1} bytes together (MAX_REQUEST_MEDIA_BYTES)")


@pytest.fixture(scope="module")
def bounded(tiny_embedder_path):
    running = start_worker(MODEL_NAMES=str(tiny_embedder_path), SERVED_MODEL_NAMES="tiny",
                           MAX_OUTPUT_VALUES=str(3 * 384))
    yield running
    running.close()


@pytest.mark.parametrize("count, dimensions, answered", [
    (3, None, True), (4, None, False), (9, 128, True), (10, 128, False)])
def test_output_values_at_and_one_past_the_bound(bounded, count, dimensions, answered):
    job = {"model": "tiny", "input": [f"text {i}" for i in range(count)]}
    if dimensions:
        job["dimensions"] = dimensions
    output = bounded.run(job)
    if answered:
        assert len(output["data"]) == count
    else:
        values = count * (dimensions or 384)
        assert output == {"error": f"input: this request's vectors hold {values:,} numbers; the limit is 1,152 "
                                   "(MAX_OUTPUT_VALUES); send fewer or shorter inputs, or fewer dimensions"}
