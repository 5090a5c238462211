"""Media references in, bytes out, safely: what images and audio share.

A reference is an `http(s)://` URL, a `data:<kind>/...;base64,...` URI, or bare base64.
A worker that fetches URLs for its clients must not become a way into their network, so:
- only `http` and `https`; any other scheme (`file:`, `ftp:` ...) is refused, and so is a
  URL that does not parse (a port past 65535, a broken IPv6 host);
- the host's addresses are resolved first, and loopback, private, link-local (cloud
  metadata), shared, multicast and reserved ones are refused unless ALLOW_PRIVATE_URLS;
  the request then goes to the checked address (with the host's name for the Host header
  and TLS), so a second DNS answer cannot swap it; every redirect is checked the same way,
  and at most MAX_REDIRECTS are followed;
- each image or audio clip has MEDIA_FETCH_TIMEOUT seconds in all and at most
  MAX_MEDIA_BYTES, and all of a request's media MAX_REQUEST_MEDIA_BYTES together, counted
  as the bytes arrive.

What a request's media will cost once decoded is known from their headers alone: `MediaBatch`
reads every header first and checks the request's budget (pixels, or audio samples) before
anything is decoded, then decodes them a batch at a time, as the model takes them, on
DECODE_THREADS threads shared by every request. Each decode first reserves what its header
says it will hold (`Probe.memory`) from DECODE_MEMORY, worker-wide, and waits while that
would not fit, so however many requests arrive at once, the pictures and clips being decoded
hold at most DECODE_MEMORY (or one item alone, if larger). Every failure is an
`InvalidRequest` naming the input's index and the reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple, Protocol
from urllib.parse import urljoin, urlsplit

from embedding_worker.errors import InvalidRequest

MAX_REDIRECTS = 3
DECODE_THREADS = 2  # pictures or clips decoded at once, across all requests
DECODE_MEMORY = 512 * 2**20  # bytes that decodes in flight may hold together, across all requests


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int = 10 * 2**20  # MAX_MEDIA_BYTES: per image or audio clip
    max_request_bytes: int = 64 * 2**20  # MAX_REQUEST_MEDIA_BYTES
    fetch_timeout: float = 10.0  # MEDIA_FETCH_TIMEOUT
    allow_private_urls: bool = False  # ALLOW_PRIVATE_URLS
    max_pixels: int = 40_000_000  # MAX_IMAGE_PIXELS: per image
    max_request_pixels: int = 200_000_000  # MAX_REQUEST_PIXELS
    max_audio_seconds: float = 60.0  # MAX_AUDIO_SECONDS: per clip
    max_audio_samples: int = 5_760_000  # MAX_AUDIO_SAMPLES: frames x channels per clip
    max_request_audio_samples: int = 100_000_000  # MAX_REQUEST_AUDIO_SAMPLES
    max_sample_rate: int = 192_000  # MAX_AUDIO_SAMPLE_RATE
    max_pdf_pages: int = 32  # MAX_PDF_PAGES: per request


class MediaError(Exception):
    """Why one image or clip could not be used (the caller adds which input it was)."""


class Probe(NamedTuple):
    """What one picture or clip will cost, read from its header."""

    units: int  # pixels or samples: what the request's budget counts
    memory: int  # bytes its decoding may hold at its peak


class MediaKind(Protocol):
    """How one kind of media is checked and decoded (`images`, `audio`); both blocking."""

    name: str  # "image" or "audio": the data URI's type, the Accept header
    budget: str  # what a request's total is counted in, and its setting

    def probe(self, data: bytes, limits: MediaLimits) -> Probe:
        """What decoding costs, from the header alone; raise `MediaError`."""

    def decode(self, data: bytes, limits: MediaLimits) -> Any:
        """What the model takes; raise `MediaError`."""

    def request_limit(self, limits: MediaLimits) -> int: ...


@cache
def _decoder() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="media-decode")


async def _in_decoder(work: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_decoder(), work, *args)


class _DecodeMemory:
    """Bytes reserved by decodes in flight on one event loop, at most `limit` together."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0
        self.changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, memory: int) -> AsyncIterator[None]:
        memory = min(memory, self.limit)  # one larger than the whole runs alone
        async with self.changed:
            await self.changed.wait_for(lambda: self.held + memory <= self.limit)
            self.held += memory
        try:
            yield
        finally:
            async with self.changed:
                self.held -= memory
                self.changed.notify_all()


_RESERVED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _DecodeMemory] = weakref.WeakKeyDictionary()


def _decode_memory() -> _DecodeMemory:
    loop = asyncio.get_running_loop()
    if loop not in _RESERVED:
        _RESERVED[loop] = _DecodeMemory(DECODE_MEMORY)
    return _RESERVED[loop]


class MediaBatch:
    """A request's media of one kind: fetched and checked by `prepare`, decoded by `batches`."""

    def __init__(self, kind: MediaKind, limits: MediaLimits, data: dict[int, bytes], memory: dict[int, int]) -> None:
        self.kind, self.limits, self.data, self.memory = kind, limits, data, memory

    @classmethod
    async def prepare(cls, references: dict[int, str], limits: MediaLimits, kind: MediaKind,
                      tally: RequestBytes) -> MediaBatch:
        data = await fetch_all(references, limits, kind.name, tally)
        probes = await _each(data, lambda blob: _in_decoder(kind.probe, blob, limits))
        total, limit = sum(probe.units for probe in probes.values()), kind.request_limit(limits)
        if total > limit:
            raise InvalidRequest(f"input: the {_noun(kind.name)}s of this request hold {total:,} {kind.budget}; "
                                 f"the limit is {limit:,}; send fewer or smaller ones")
        return cls(kind, limits, data, {index: probe.memory for index, probe in probes.items()})

    async def batches(self, size: int) -> AsyncIterator[dict[int, Any]]:
        """The decoded media, `size` at a time, by input index; each batch's bytes are let go
        as it is decoded."""
        indices = list(self.data)
        for start in range(0, len(indices), size):
            chunk = {i: (self.data.pop(i), self.memory[i]) for i in indices[start:start + size]}
            yield await _each(chunk, self._decode)

    async def _decode(self, item: tuple[bytes, int]) -> Any:
        data, memory = item
        async with _decode_memory().reserve(memory):
            return await _in_decoder(self.kind.decode, data, self.limits)


async def prepare_media(references: list[tuple[MediaKind, dict[int, str]]], limits: MediaLimits,
                        tally: RequestBytes | None = None) -> list[MediaBatch]:
    """Each kind's references (by input index) fetched, and every header read and checked;
    raise `InvalidRequest` for the first that fails, or when a request's total passes its
    budget. Nothing is decoded yet. `tally`: the request's bytes so far (other media's)."""
    tally = tally or RequestBytes(limits.max_request_bytes)
    return [await MediaBatch.prepare(found, limits, kind, tally) for kind, found in references if found]


async def fetch_all(references: dict[int, str], limits: MediaLimits, kind: str, tally: RequestBytes) -> dict[int, bytes]:
    """The bytes of each reference of `kind` (by input index), within the media budgets."""
    import httpx

    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        return await _each(references, lambda ref: _bytes_of(client, ref.strip(), limits, kind, tally))


class RequestBytes:
    """Bytes of media one request has brought in so far, against MAX_REQUEST_MEDIA_BYTES."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0

    def add(self, count: int) -> None:
        self.count += count
        if self.count > self.limit:
            raise MediaError(f"the request's media pass {self.limit} bytes together (MAX_REQUEST_MEDIA_BYTES)")


async def _each(items: dict[int, Any], work: Callable[[Any], Any]) -> dict[int, Any]:
    """`work` on every item at once, by input index; the first `MediaError` (in input order)
    becomes the request's `InvalidRequest`."""
    done = await asyncio.gather(*(work(item) for item in items.values()), return_exceptions=True)
    for index, result in zip(items, done):
        if isinstance(result, MediaError):
            raise InvalidRequest(f"input: item {index}: {result}")
        if isinstance(result, BaseException):
            raise result
    return dict(zip(items, done))


def media_type(kind: str) -> str:
    """What a data URI of `kind` starts with and what a fetch accepts: `image/`, `audio/`,
    `application/pdf`."""
    return "application/pdf" if kind == "pdf" else f"{kind}/"


async def _bytes_of(client, reference: str, limits: MediaLimits, kind: str, tally: RequestBytes) -> bytes:
    if reference.startswith("data:"):
        header, _, payload = reference.partition(",")
        if not header.startswith(f"data:{media_type(kind)}") or ";base64" not in header:
            shown = "application/pdf" if kind == "pdf" else f"{kind}/<type>"
            raise MediaError(f"a data URI must be data:{shown};base64,<data>")
        return _base64(payload, limits.max_bytes, kind, tally)
    try:
        scheme = urlsplit(reference).scheme.lower() if "://" in reference[:12] else ""
    except ValueError as exc:
        raise MediaError(f"{_short(reference)} is not a valid URL: {exc}") from None
    if scheme in ("http", "https"):
        try:
            async with asyncio.timeout(limits.fetch_timeout):
                return await _fetch(client, reference, limits, kind, tally)
        except TimeoutError:
            raise MediaError(f"fetching {_short(reference)} took more than {limits.fetch_timeout:g} s "
                             "(MEDIA_FETCH_TIMEOUT)") from None
    if scheme or reference.split(":", 1)[0].lower() in ("file", "ftp", "gopher", "data", "javascript"):
        raise MediaError(f"the {scheme or reference.split(':', 1)[0]!r} scheme is not allowed; send an http(s) URL, "
                         f"a data:{media_type(kind).rstrip('/')} URI or base64")
    return _base64(reference, limits.max_bytes, kind, tally)


def _base64(payload: str, max_bytes: int, kind: str, tally: RequestBytes) -> bytes:
    if len(payload) * 3 // 4 > max_bytes:
        raise MediaError(f"the {_noun(kind)} has more than {max_bytes} bytes (MAX_MEDIA_BYTES)")
    tally.add(len(payload) * 3 // 4)
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(f"is neither an http(s) URL nor a data:{media_type(kind).rstrip('/')} URI, and not valid "
                         "base64") from None


def _noun(kind: str) -> str:
    return {"audio": "audio clip", "pdf": "PDF"}.get(kind, kind)


async def _fetch(client, url: str, limits: MediaLimits, kind: str, tally: RequestBytes) -> bytes:
    import httpx

    for _ in range(MAX_REDIRECTS + 1):
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise MediaError(f"{_short(url)} is not a valid URL: {exc}") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise MediaError(f"{_short(url)} is not an http(s) URL")
        address = await _checked_address(parts.hostname, port or (443 if parts.scheme == "https" else 80),
                                         limits.allow_private_urls)
        host = f"[{address}]" if ":" in address else address
        netloc = host + (f":{port}" if port else "")
        pinned = parts._replace(netloc=netloc).geturl()
        accept = media_type(kind) + ("*" if media_type(kind).endswith("/") else "")
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": accept}
        try:
            async with client.stream("GET", pinned, headers=headers,
                                     extensions={"sni_hostname": parts.hostname}) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    continue
                if response.status_code != 200:
                    raise MediaError(f"fetching {_short(url)} answered HTTP {response.status_code}")
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > limits.max_bytes:
                    raise MediaError(f"the {_noun(kind)} has {int(length)} bytes; the limit is {limits.max_bytes} "
                                     "(MAX_MEDIA_BYTES)")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    tally.add(len(chunk))
                    if len(body) > limits.max_bytes:
                        raise MediaError(f"the {_noun(kind)} has more than {limits.max_bytes} bytes (MAX_MEDIA_BYTES)")
                return bytes(body)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise MediaError(f"fetching {_short(url)} failed: {type(exc).__name__}") from None
    raise MediaError(f"more than {MAX_REDIRECTS} redirects")


async def _checked_address(host: str, port: int, allow_private: bool) -> str:
    """One address of `host` after every one of them is checked against the refused ranges."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise MediaError(f"the host {host!r} could not be resolved") from None
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        for address in addresses:
            if refused_address(address):
                raise MediaError(f"the host {host!r} resolves to a private or local address ({address}); "
                                 "such URLs are refused unless ALLOW_PRIVATE_URLS=true")
    return addresses[0]


def refused_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip.sixtofour):
        ip = ip.ipv4_mapped or ip.sixtofour
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED))


_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, not covered by is_private


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."
