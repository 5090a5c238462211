"""Images for CLIP- and SigLIP-style models: references in (fetched safely by `fetch`),
decoded RGB pictures out. Decoding runs in a worker thread and refuses pictures of more
than MAX_IMAGE_PIXELS (decompression bombs) before decoding their pixels."""

from __future__ import annotations

import io
from functools import partial
from typing import Any

from embedding_worker.media.fetch import MediaError, MediaLimits, load_all

MIN_SIDE = 3  # pixels; smaller pictures carry nothing a vision tower can use


async def load_images(references: dict[int, str], limits: MediaLimits) -> dict[int, Any]:
    """Decoded RGB pictures by input index; raise `InvalidRequest` for the first that fails."""
    return await load_all(references, limits, "image", partial(decode, max_pixels=limits.max_pixels))


def decode(data: bytes, max_pixels: int):
    """RGB picture from encoded bytes (blocking: run it in a thread)."""
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError, ValueError):
        raise MediaError("is not an image Pillow can read") from None
    width, height = picture.size
    if width * height > max_pixels:
        raise MediaError(f"the image has {width}x{height} pixels; the limit is {max_pixels} (MAX_IMAGE_PIXELS)")
    if min(width, height) < MIN_SIDE:
        raise MediaError(f"the image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    try:
        return picture.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"the image could not be decoded: {' '.join(str(exc).split())[:120]}") from None


