"""Renders a PDF's pages for `pdf.py`, in a process of its own (run as a script, importing
nothing of the worker): a PDF is a program of sorts, and what its pages decode to is known
only by decoding them, so this process's address space is capped first (RLIMIT_AS) and a
file that needs more ends this process, not the worker.

argv[1]: JSON {"pages": [0-based] or null, "max_pages", "pixels", "memory"}; stdin: the file.
Before rendering anything it checks the page count, the pages asked for and each page's size;
each page is then rendered to about `pixels` pixels, whatever its size in points, and written
to stdout as a 12-byte header (page, width, height: little-endian uint32) and its RGB bytes.
A refusal is one line on stderr and exit status 3.
"""

import json
import math
import resource
import struct
import sys

MAX_POINTS = 14_400  # the PDF format's largest page side (ISO 32000: 200 inches)
MAX_ASPECT = 200  # a page longer than this many times its width is not a page


def fail(reason: str) -> None:
    sys.stderr.write(reason + "\n")
    sys.exit(3)


def main() -> None:
    asked = json.loads(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (asked["memory"], asked["memory"]))
    import pypdfium2 as pdfium

    data = sys.stdin.buffer.read()
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        fail(f"could not be read ({' '.join(str(exc).split())[:120]})")
    count = len(document)
    if count == 0:
        fail("has no pages")
    pages = asked["pages"] if asked["pages"] is not None else list(range(count))
    past = [page for page in pages if page >= count]
    if past:
        fail(f"has {count} page{'s' if count != 1 else ''}; page {past[0]} is past its end (pages count from 0)")
    if len(pages) > asked["max_pages"]:
        fail(f"has {len(pages):,} pages to embed; this request may embed {asked['max_pages']} more (MAX_PDF_PAGES): "
             "send pages to choose them, or split the request")
    sizes = {}
    for number in dict.fromkeys(pages):
        width, height = document[number].get_size()
        if not (math.isfinite(width) and math.isfinite(height)) or min(width, height) <= 0:
            fail(f"page {number} has no size")
        if max(width, height) > MAX_POINTS:
            fail(f"page {number} is {width:,.0f} x {height:,.0f} points; a PDF page is at most {MAX_POINTS:,} a side")
        if max(width, height) / min(width, height) > MAX_ASPECT:
            fail(f"page {number} is {width:,.0f} x {height:,.0f} points, more than {MAX_ASPECT} times as long as wide")
        sizes[number] = (width, height)
    out = sys.stdout.buffer
    for number in pages:
        width, height = sizes[number]
        scale = math.sqrt(asked["pixels"] / (width * height))
        try:
            picture = document[number].render(scale=scale, rev_byteorder=True).to_pil().convert("RGB")
        except MemoryError:
            fail(f"page {number} needs more than {asked['memory'] >> 20} MB to render")
        except pdfium.PdfiumError as exc:
            fail(f"page {number} could not be rendered ({' '.join(str(exc).split())[:120]})")
        out.write(struct.pack("<III", number, *picture.size))
        out.write(picture.tobytes())
    out.flush()


if __name__ == "__main__":
    main()
