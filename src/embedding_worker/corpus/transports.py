"""Each endpoint type, spoken over HTTP (httpx), with one failure vocabulary:
- `Refused`: the worker answered this request with an error (an empty text, a text past the
  limits): retrying it unchanged cannot help; the client splits it to find the row at fault;
- `Busy`: 429 or 503, retried after `Retry-After`;
- `Transient`: the connection, a timeout, a 5xx: retried a bounded number of times.

`Queue` is RunPod's queue endpoint (`/run`, then `/status/{id}`), `OpenAI` an OpenAI-compatible
`/v1/embeddings` (a load-balancing endpoint's root, RunPod's `/openai/v1` gateway, any `.../v1`),
`BatchAPI` RunPod's Batch API (`/batch`). Payload limits are RunPod's, each way: 10 MB through
`/run`, 20 MB through `/runsync` (and the `/openai/v1` gateway), 30 MB on a load-balancing
endpoint, 10 MiB a Batch API call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

QUEUE_BYTES, RUNSYNC_BYTES, LOAD_BALANCER_BYTES, BATCH_CALL_BYTES = 10_000_000, 20_000_000, 30_000_000, 10 * 2**20
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


class Refused(Exception):
    """The worker refused the request; the message is its one line."""


class Busy(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Transient(Exception):
    """The request may succeed if sent again."""


class Expired(Exception):
    """A queued job's result is gone (its /status answers 404): send the request again."""


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        error = body.get("error", body.get("message", body.get("detail")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)
    return str(body)[:300]


def raise_for(response: httpx.Response) -> None:
    """The failure vocabulary for an HTTP answer that is not 2xx."""
    if response.status_code < 300:
        return
    message = f"HTTP {response.status_code}: {_error_text(response)}"
    if response.status_code in (429, 503):
        after = response.headers.get("retry-after", "")
        raise Busy(message, float(after) if after.replace(".", "", 1).isdigit() else 1.0)
    if response.status_code >= 500 or response.status_code in (408, 425):
        raise Transient(message)
    if response.status_code in (401, 403, 404):
        raise PermissionError(message)  # not a row's fault, and no retry helps: the run stops
    raise Refused(_error_text(response))


@dataclass
class Endpoint:
    url: str
    client: httpx.AsyncClient

    async def post(self, path: str, body: Any) -> Any:
        try:
            response = await self.client.post(self.url + path, content=orjson.dumps(body),
                                              headers={"Content-Type": "application/json"})
        except httpx.TransportError as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None
        raise_for(response)
        return orjson.loads(response.content)

    async def get(self, path: str, params: dict | None = None) -> Any:
        try:
            response = await self.client.get(self.url + path, params=params)
        except httpx.TransportError as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 404 and "/status/" in path:
            raise Expired(_error_text(response))
        raise_for(response)
        return orjson.loads(response.content)


class OpenAI(Endpoint):
    """`POST {url}/embeddings`: the answer in the same call."""

    limit = LOAD_BALANCER_BYTES

    async def embed(self, body: dict[str, Any], sent: Callable[[str], Awaitable[None]] | None = None) -> dict:
        return await self.post("/embeddings", body)


class Queue(Endpoint):
    """`POST {url}/run`, then `GET {url}/status/{id}` until the job ends."""

    limit = QUEUE_BYTES

    async def embed(self, body: dict[str, Any], sent: Callable[[str], Awaitable[None]] | None = None) -> dict:
        job = await self.post("/run", {"input": body})
        if sent is not None:
            await sent(job["id"])  # recorded before waiting: a resumed run asks for it instead of sending again
        return await self.result(job["id"])

    async def result(self, job_id: str) -> dict:
        wait, failures = 0.05, 0
        while True:
            try:
                status = await self.get(f"/status/{job_id}")
            except (Transient, Busy):  # asking again is safe: the job runs on either way
                failures += 1
                if failures > 20:
                    raise
                await asyncio.sleep(min(2.0 * failures, 30.0))
                continue
            if status.get("status") == "COMPLETED":
                output = status.get("output")
                return output[0] if isinstance(output, list) and output else output
            if status.get("status") in FINAL:
                raise Refused(str(status.get("error") or status.get("status")))
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, 2.0)


class BatchAPI(Endpoint):
    """RunPod's Batch API: a batch made of requests, finalized, polled, its results paged."""

    async def create(self, requests: list[dict[str, Any]]) -> str:
        return (await self.post("/batch", requests))["id"]

    async def append(self, batch_id: str, requests: list[dict[str, Any]]) -> None:
        await self.post(f"/batch/{batch_id}/requests", {"requests": requests})

    async def finalize(self, batch_id: str) -> None:
        await self.post(f"/batch/{batch_id}/finalize", {})

    async def summary(self, batch_id: str) -> dict[str, Any]:
        return await self.get(f"/batch/{batch_id}")

    async def results(self, batch_id: str, offset: int, limit: int = 100) -> dict[str, Any]:
        return await self.get(f"/batch/{batch_id}/requests", {"offset": offset, "limit": limit})
