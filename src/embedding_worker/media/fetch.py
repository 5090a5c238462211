"""Media references in, bytes out, safely: what images and audio share.

A reference is an `http(s)://` URL, a `data:<kind>/...;base64,...` URI, or bare base64.
A worker that fetches URLs for its clients must not become a way into their network, so:
- only `http` and `https`; any other scheme (`file:`, `ftp:` ...) is refused;
- the host's addresses are resolved first, and loopback, private, link-local (cloud
  metadata), shared, multicast and reserved ones are refused unless ALLOW_PRIVATE_URLS;
  the request then goes to the checked address (with the host's name for the Host header
  and TLS), so a second DNS answer cannot swap it; every redirect is checked the same way,
  and at most MAX_REDIRECTS are followed;
- each image or audio clip has IMAGE_FETCH_TIMEOUT seconds in all and at most
  MAX_IMAGE_BYTES (the same limits for both kinds).
Every failure is an `InvalidRequest` naming the input's index and the reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from embedding_worker.errors import InvalidRequest

MAX_REDIRECTS = 3


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int = 10 * 2**20  # MAX_IMAGE_BYTES: per image or audio clip
    max_pixels: int = 40_000_000  # MAX_IMAGE_PIXELS
    fetch_timeout: float = 10.0  # IMAGE_FETCH_TIMEOUT
    allow_private_urls: bool = False  # ALLOW_PRIVATE_URLS
    max_audio_seconds: float = 60.0  # MAX_AUDIO_SECONDS


class MediaError(Exception):
    """Why one image or clip could not be used (the caller adds which input it was)."""


async def load_all(references: dict[int, str], limits: MediaLimits, kind: str,
                   decode: Callable[[bytes], Any]) -> dict[int, Any]:
    """Each reference fetched and decoded (`decode` runs in a worker thread), by input index;
    raise `InvalidRequest` for the first that fails."""
    import httpx

    async def load(client, reference: str) -> Any:
        data = await _bytes_of(client, reference.strip(), limits, kind)
        return await asyncio.to_thread(decode, data)

    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        loaded = await asyncio.gather(*(load(client, ref) for ref in references.values()), return_exceptions=True)
    for index, result in zip(references, loaded):
        if isinstance(result, MediaError):
            raise InvalidRequest(f"input: item {index}: {result}")
        if isinstance(result, BaseException):
            raise result
    return dict(zip(references, loaded))


async def _bytes_of(client, reference: str, limits: MediaLimits, kind: str) -> bytes:
    if reference.startswith("data:"):
        header, _, payload = reference.partition(",")
        if not header.startswith(f"data:{kind}/") or ";base64" not in header:
            raise MediaError(f"a data URI must be data:{kind}/<type>;base64,<data>")
        return _base64(payload, limits.max_bytes, kind)
    scheme = urlsplit(reference).scheme.lower() if "://" in reference[:12] else ""
    if scheme in ("http", "https"):
        try:
            async with asyncio.timeout(limits.fetch_timeout):
                return await _fetch(client, reference, limits, kind)
        except TimeoutError:
            raise MediaError(f"fetching {_short(reference)} took more than {limits.fetch_timeout:g} s "
                             "(IMAGE_FETCH_TIMEOUT)") from None
    if scheme or reference.split(":", 1)[0].lower() in ("file", "ftp", "gopher", "data", "javascript"):
        raise MediaError(f"the {scheme or reference.split(':', 1)[0]!r} scheme is not allowed; send an http(s) URL, "
                         f"a data:{kind} URI or base64")
    return _base64(reference, limits.max_bytes, kind)


def _base64(payload: str, max_bytes: int, kind: str) -> bytes:
    if len(payload) * 3 // 4 > max_bytes:
        raise MediaError(f"the {_noun(kind)} has more than {max_bytes} bytes (MAX_IMAGE_BYTES)")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(f"is neither an http(s) URL nor a data:{kind} URI, and not valid base64") from None


def _noun(kind: str) -> str:
    return "audio clip" if kind == "audio" else kind


async def _fetch(client, url: str, limits: MediaLimits, kind: str) -> bytes:
    import httpx

    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise MediaError(f"{_short(url)} is not an http(s) URL")
        address = await _checked_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                         limits.allow_private_urls)
        host = f"[{address}]" if ":" in address else address
        netloc = host + (f":{parts.port}" if parts.port else "")
        pinned = parts._replace(netloc=netloc).geturl()
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": f"{kind}/*"}
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
                                     "(MAX_IMAGE_BYTES)")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limits.max_bytes:
                        raise MediaError(f"the {_noun(kind)} has more than {limits.max_bytes} bytes (MAX_IMAGE_BYTES)")
                return bytes(body)
        except httpx.HTTPError as exc:
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
