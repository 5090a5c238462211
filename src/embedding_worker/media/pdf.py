"""PDFs in, one RGB picture a page out, at the pixels a page-reading model takes.

A PDF's bytes arrive as an image's do (`fetch`: URL, `data:application/pdf;base64,...` URI,
bare base64; MAX_MEDIA_BYTES and MAX_REQUEST_MEDIA_BYTES). Its pages are rendered by pdfium
(pypdfium2) in a process of its own (`pdf_render.py`) whose memory is capped at
RENDER_MEMORY and whose time is capped at RENDER_SECONDS, so a compression bomb or a file
pdfium chokes on ends that process, and the request, in one line; the worker keeps serving.
Before any page is rendered that process checks the page count against the request's pages
left (MAX_PDF_PAGES), each asked page against the count, and each page's size in points
(at most the format's 14,400 a side); every page is then rendered to about the model's
pixels (at most RENDER_PIXELS), whatever its size in points, so pixels never grow with
what a file declares.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
from pathlib import Path
from typing import Any

from embedding_worker.media.fetch import MediaError

RENDER_SCRIPT = Path(__file__).with_name("pdf_render.py")
RENDER_MEMORY = 1536 * 2**20  # the address space of the rendering process
RENDER_SECONDS = 60.0  # for one PDF's pages
RENDER_PIXELS = 2_000_000  # the most pixels a page is rendered at (an A4 page at 144 dpi)
HEADER = struct.Struct("<III")


async def render(data: bytes, pages: list[int] | None, pixels: int, max_pages: int) -> list[tuple[int, Any]]:
    """(page number, RGB picture) for each asked page of the PDF in `data` (all, in order,
    where `pages` is None); raise `MediaError` with the reason."""
    asked = {"pages": pages, "max_pages": max_pages, "pixels": min(pixels, RENDER_PIXELS), "memory": RENDER_MEMORY}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-I", str(RENDER_SCRIPT), json.dumps(asked),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(data), RENDER_SECONDS)
    except TimeoutError:
        raise MediaError(f"the PDF's pages took more than {RENDER_SECONDS:g} s to render") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode == 3:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        raise MediaError(f"the PDF {lines[-1] if lines else 'could not be rendered'}")
    if process.returncode != 0:
        raise MediaError(f"the PDF could not be rendered within {RENDER_MEMORY >> 20} MB and {RENDER_SECONDS:g} s "
                         "(its content decodes larger, or pdfium failed on it)")
    return await asyncio.to_thread(_pictures, out)


def _pictures(out: bytes) -> list[tuple[int, Any]]:
    from PIL import Image

    found, at = [], 0
    while at < len(out):
        number, width, height = HEADER.unpack_from(out, at)
        at += HEADER.size
        found.append((number, Image.frombytes("RGB", (width, height), out[at:at + 3 * width * height])))
        at += 3 * width * height
    return found
