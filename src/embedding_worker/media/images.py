"""Images for CLIP- and SigLIP-style models: encoded bytes in (fetched safely by `fetch`),
RGB pictures no larger than the model needs out.

A picture's size comes from its header: more than MAX_IMAGE_PIXELS is refused before its
pixels are decoded (decompression bombs), and so is a request whose pictures add up to more
than MAX_REQUEST_PIXELS. A picture much larger than the model's input is reduced as it is
decoded: JPEG decodes straight at 1/2, 1/4 or 1/8 scale (Pillow's draft mode), and any
picture is then box-reduced and resampled so that its short side is twice the model's input
side (the model's processor resizes it the rest of the way, as it would have). Smaller
pictures reach the processor exactly as sent. Only the first frame of an animation is read.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from embedding_worker.media.fetch import MediaError, MediaLimits, Probe

MIN_SIDE = 3  # pixels; smaller pictures carry nothing a vision tower can use
REDUCE_FROM = 2  # pictures whose short side is past this many times the model's input side are reduced
# What decoding holds at its peak, per pixel (measured): Pillow decodes most formats straight
# into the picture (RGBA at most); WebP's decoder hands over a copy of its own buffer.
BYTES_PER_PIXEL = {"WEBP": 14}


@dataclass(frozen=True)
class Images:
    """The image `MediaKind` for a model whose input side is `side` pixels (None: unknown,
    pictures are not reduced)."""

    side: int | None = None
    name: str = "image"
    budget: str = "pixels (MAX_REQUEST_PIXELS)"

    def request_limit(self, limits: MediaLimits) -> int:
        return limits.max_request_pixels

    def probe(self, data: bytes, limits: MediaLimits) -> Probe:
        picture = _open(data, limits)
        pixels = picture.size[0] * picture.size[1]
        return Probe(pixels, pixels * BYTES_PER_PIXEL.get(picture.format, 4))

    def decode(self, data: bytes, limits: MediaLimits) -> Any:
        return decode(data, limits.max_pixels, self.side)


def _open(data: bytes, limits: MediaLimits):
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise MediaError("is not an image Pillow can read") from None
    width, height = picture.size
    if width * height > limits.max_pixels:
        raise MediaError(f"the image has {width}x{height} pixels; the limit is {limits.max_pixels} (MAX_IMAGE_PIXELS)")
    if min(width, height) < MIN_SIDE:
        raise MediaError(f"the image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    return picture


def decode(data: bytes, max_pixels: int, side: int | None = None):
    """RGB picture from encoded bytes, reduced as the module says (blocking: run it in a thread)."""
    from PIL import Image

    picture = _open(data, MediaLimits(max_pixels=max_pixels))
    try:
        width, height = picture.size
        if side and min(width, height) > REDUCE_FROM * side:
            scale = REDUCE_FROM * side / min(width, height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            picture.draft("RGB", size)  # JPEG: decode at the smallest scale still at least `size`
            if picture.mode not in ("RGB", "RGBA", "L", "LA"):
                picture = picture.convert("RGB")
            picture = picture.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        return picture.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise MediaError(f"the image could not be decoded: {' '.join(str(exc).split())[:120]}") from None
