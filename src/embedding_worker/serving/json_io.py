"""JSON in and out without stalling the event loop: a large body is parsed, and a large
answer built and encoded, in a thread, so health and every other request keep answering
(`/ping` within 100 ms while any accepted request works); a small one stays on the loop,
where a thread hop would cost more than the work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

LARGE_BYTES = 256 * 1024  # a body past this is parsed in a thread
LARGE_ITEMS = 64  # an answer of more entries than this is built and encoded in a thread
T = TypeVar("T")


async def loads(raw: bytes) -> Any:
    return await asyncio.to_thread(orjson.loads, raw) if len(raw) > LARGE_BYTES else orjson.loads(raw)


def is_large(body: Any) -> bool:
    """Whether an answer (a response model or its dict) holds more than LARGE_ITEMS entries,
    or is Cohere's (its `embeddings` by type)."""
    for name in ("data", "results", "embeddings"):
        entries = body.get(name) if isinstance(body, dict) else getattr(body, name, None)
        if entries is not None and (len(entries) > LARGE_ITEMS or name == "embeddings"):
            return True
    return False


async def off_loop_if(large: bool, work: Callable[[], T]) -> T:
    return await asyncio.to_thread(work) if large else work()
