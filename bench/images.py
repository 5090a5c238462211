"""Images per second through the worker's service (decoding included), for a tiny CLIP
built on the spot: no real CLIP's weights can be had offline here, so this measures the
image path's overhead, not a real vision tower's speed."""

from __future__ import annotations

import asyncio
import base64
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, worker_for


def images(count: int = 256, per_request: int = 8, concurrency: int = 4) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_families  # the tests' model builders
    from PIL import Image

    from embedding_worker.api.schemas import EmbeddingRequest

    clip = tiny_families.clip(Path(tempfile.mkdtemp(prefix="bench-clip-")) / "model")
    rng = np.random.default_rng(0)

    def data_uri() -> str:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8), "RGB").save(buffer, format="JPEG")
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()

    uris = [data_uri() for _ in range(count)]
    worker = worker_for("torch", MODEL_NAMES=str(clip), SERVED_MODEL_NAMES="clip")
    service = worker.handler.service

    async def run() -> float:
        await worker.registry.start()
        requests = [EmbeddingRequest(model="clip", modality="image", input=uris[i:i + per_request])
                    for i in range(0, count, per_request)]
        await service.embed(requests[0])
        gate = asyncio.Semaphore(concurrency)

        async def one(request) -> None:
            async with gate:
                await service.embed(request)

        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in requests))
        elapsed = time.perf_counter() - started
        await worker.registry.stop()
        return elapsed

    elapsed = asyncio.run(run())
    return {"model": "tiny CLIP (2+2 layers, 32 px)", "images": count, "per_request": per_request,
            "concurrency": concurrency, "images_per_s": round(count / elapsed, 1),
            "input": "224 x 224 JPEG data URIs, decoded by the worker", "real_clip": "none available offline"}
