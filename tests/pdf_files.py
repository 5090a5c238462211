"""PDFs written byte by byte for the tests: well-formed pages, and the hostile ones a PDF
reader meets (a declared page count far past its pages, a page of 100,000 points a side, a
compression bomb, a broken cross-reference table)."""

from __future__ import annotations

import io
import struct
import zlib


def assemble(objects: list[bytes], xref: bool = True) -> bytes:
    """A PDF of `objects` (object 1 is the catalog), with a correct cross-reference table,
    or one whose offsets all point nowhere (`xref=False`)."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    start = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % (offset if xref else 999_999_999))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, start))
    return out.getvalue()


def _stream(data: bytes, compressed: bool = False) -> bytes:
    if compressed:
        return b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream"
    return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def pages_pdf(count: int = 1, size: tuple[float, float] = (612, 792), declared: int | None = None,
              content: bytes | None = None, compressed: bool = False, xref: bool = True) -> bytes:
    """`count` pages of `size` points, each drawing a filled rectangle of its own grey (or
    `content`), with /Count `declared` (default: the true count)."""
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(count)).encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count if declared is None else declared)]
    for i in range(count):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %g %g] /Contents %d 0 R >>"
                       % (size[0], size[1], 4 + 2 * i))
        draw = content if content is not None else b"%.2f g 50 50 %d %d re f" % (0.2 + 0.2 * (i % 4), 100 + 40 * i, 200)
        objects.append(_stream(draw, compressed))
    return assemble(objects, xref)


def compression_bomb(decoded_bytes: int) -> bytes:
    """One page whose content stream inflates from about a thousandth of `decoded_bytes`
    to `decoded_bytes` of drawing operators (a valid zlib stream, checksum included: after a
    full flush each repeat of the same block compresses to the same bytes)."""
    chunk = b"0 0 m " * (2**20 // 6)
    squeeze = zlib.compressobj(9)
    first = squeeze.compress(chunk) + squeeze.flush(zlib.Z_FULL_FLUSH)
    block = squeeze.compress(chunk) + squeeze.flush(zlib.Z_FULL_FLUSH)
    repeats = max(decoded_bytes // len(chunk), 2)
    checksum = 1
    for _ in range(repeats):
        checksum = zlib.adler32(chunk, checksum)
    body = first + block * (repeats - 1) + b"\x03\x00" + struct.pack(">I", checksum)
    return pages_pdf(content=body, compressed=True)
