"""Images and audio clips per second through the worker's service (decoding, resampling and
batching included), for a tiny CLIP and a tiny CLAP built on the spot: no real model's
weights can be had offline here, so these measure the media path's overhead, not a real
vision or audio tower's speed."""

from __future__ import annotations

import asyncio
import base64
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import ROOT, timed_requests, worker_for


def _tiny(builder: str) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_families  # the tests' model builders

    return getattr(tiny_families, builder)(Path(tempfile.mkdtemp(prefix=f"bench-{builder}-")) / "model")


def _per_second(model: Path, modality: str, uris: list[str], per_request: int, concurrency: int) -> float:
    from embedding_worker.api.schemas import EmbeddingRequest

    worker = worker_for("torch", MODEL_NAMES=str(model), SERVED_MODEL_NAMES="media")
    service = worker.handler.service

    async def run() -> float:
        await worker.registry.start()
        requests = [EmbeddingRequest(model="media", modality=modality, input=uris[i:i + per_request])
                    for i in range(0, len(uris), per_request)]
        elapsed = await timed_requests(service, requests, concurrency)
        await worker.registry.stop()
        return elapsed

    return round(len(uris) / asyncio.run(run()), 1)


def images(count: int = 256, per_request: int = 8, concurrency: int = 4) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)

    def data_uri() -> str:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8), "RGB").save(buffer, format="JPEG")
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()

    rate = _per_second(_tiny("clip"), "image", [data_uri() for _ in range(count)], per_request, concurrency)
    return {"model": "tiny CLIP (2+2 layers, 32 px)", "images": count, "per_request": per_request,
            "concurrency": concurrency, "images_per_s": rate,
            "input": "224 x 224 JPEG data URIs, decoded by the worker", "real_clip": "none available offline"}


def audio(count: int = 64, per_request: int = 4, concurrency: int = 4, seconds: float = 5.0) -> dict:
    """5-second mono clips: half 44.1 kHz MP3 (decoded and resampled to 48 kHz), half 48 kHz WAV."""
    import soundfile

    rng = np.random.default_rng(0)

    def data_uri(i: int) -> str:
        rate, fmt, mime = (44_100, "MP3", "audio/mpeg") if i % 2 else (48_000, "WAV", "audio/wav")
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * np.arange(int(seconds * rate)) / rate)
        buffer = io.BytesIO()
        soundfile.write(buffer, wave.astype(np.float32), rate, format=fmt)
        return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode()

    rate = _per_second(_tiny("clap"), "audio", [data_uri(i) for i in range(count)], per_request, concurrency)
    return {"model": "tiny CLAP (2-layer text, 2-stage HTSAT, 16 mels, 1 s window)", "clips": count,
            "per_request": per_request, "concurrency": concurrency, "clips_per_s": rate,
            "input": f"{seconds:g} s clips as data URIs, half 44.1 kHz MP3 (resampled), half 48 kHz WAV",
            "real_clap": "none available offline"}
