"""RunPod's Batch API on the local endpoint, so a backfill can be tried before deploying.

As RunPod documents it (docs.runpod.io, "Batch jobs"), under `/v2/{id}/batch`:
- `POST /batch`: a new batch, DRAFT, from a JSON array of `{"input"}` requests (`[]`: empty);
  `POST /batch/{b}/requests` (`{"requests": [...]}`) appends while DRAFT; `DELETE
  /batch/{b}/requests/{r}` removes one; `PUT /batch/{b}` renames it;
- `POST /batch/{b}/finalize` locks it and starts its requests; the batch stays FINALIZED
  while they run (no RUNNING or COMPLETED status): every request has ended when
  `requestCompleted + requestFailed == requestTotal`; `POST /batch/{b}/cancel` cancels the
  queued ones and lets running ones finish (CANCELLED);
- `GET /batch/{b}`: the counts; `GET /batch/{b}/requests?offset&limit`: the requests, in the
  order they were added, each with its `output` or `error` (`total`, `offset`, `limit`,
  `hasMore`); `GET /batch`: the batches, newest first;
- limits: 10 MiB a call, 5,000 requests a batch, 10 active batches (DRAFT or FINALIZED with
  requests left), 50,000 queued requests.

Each request runs as a `/run` job of the local endpoint (`job_store.py`: the worker's
concurrency, its `/status/{id}`), so its result is kept as a `/run` result is
(LOCAL_RESULT_TTL, LOCAL_MAX_RESULT_BYTES): read results as they finish; one dropped before
it was read is listed with status EXPIRED and no output.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from embedding_worker.serving import json_io
from embedding_worker.serving.http_api import FastJSON, json_body
from embedding_worker.serving.job_store import FINAL, JobStore, LocalJob, with_result

MAX_CALL_BYTES = 10 * 2**20
MAX_REQUESTS = 5_000  # a batch
MAX_ACTIVE = 10  # batches an endpoint has open or running
MAX_QUEUED = 50_000  # requests of an endpoint's finalized batches not yet ended
PAGE, MAX_PAGE = 50, 1_000


@dataclass
class Child:
    id: str
    input: Any
    job: LocalJob | None = None


@dataclass
class Batch:
    id: str
    endpoint: str
    name: str | None
    created_ms: int
    status: str = "DRAFT"
    children: list[Child] = field(default_factory=list)

    def count(self, *statuses: str) -> int:
        return sum(1 for child in self.children if child.job is not None and child.job.status in statuses)

    @property
    def active(self) -> bool:
        return self.status == "DRAFT" or (self.status == "FINALIZED" and self.count(*FINAL) < len(self.children))

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "endpointId": self.endpoint, "name": self.name, "status": self.status,
                "requestTotal": len(self.children), "requestInProgress": self.count("IN_PROGRESS"),
                "requestCompleted": self.count("COMPLETED"), "requestFailed": self.count("FAILED", "CANCELLED"),
                "createdAt": self.created_ms}


def batch_router(jobs: Any, dependencies: list[Any]) -> APIRouter:
    """The Batch API's routes under `/v2/{endpoint_id}`; `jobs()`: the endpoint's JobStore."""
    batches: dict[str, Batch] = {}
    router = APIRouter(prefix="/v2/{endpoint_id}/batch", dependencies=dependencies)

    def find(endpoint_id: str, batch_id: str) -> Batch:
        batch = batches.get(batch_id)
        if batch is None or batch.endpoint != endpoint_id:
            raise HTTPException(404, f"batch {batch_id!r} does not exist")
        return batch

    def queued(endpoint_id: str) -> int:
        return sum(len(b.children) - b.count(*FINAL) for b in batches.values()
                   if b.endpoint == endpoint_id and b.status == "FINALIZED")

    async def requests_of(request: Request, wrapped: bool) -> list[dict[str, Any]]:
        body = await json_body(request, MAX_CALL_BYTES)
        if wrapped and isinstance(body, dict):
            body = body.get("requests")
        elif not wrapped and isinstance(body, dict) and "requests" in body:  # the earlier documented shape
            body = body["requests"]
        if not isinstance(body, list):
            shape = '{"requests": [{"input": ...}, ...]}' if wrapped else '[{"input": ...}, ...]'
            raise HTTPException(400, f"the body must be {shape}")
        for position, item in enumerate(body):
            if not isinstance(item, dict) or "input" not in item:
                raise HTTPException(400, f'requests[{position}] must be an object with an "input" field')
        return body

    def add(batch: Batch, items: list[dict[str, Any]]) -> None:
        if len(batch.children) + len(items) > MAX_REQUESTS:
            raise HTTPException(400, f"a batch holds at most {MAX_REQUESTS:,} requests; this one would hold "
                                     f"{len(batch.children) + len(items):,}")
        batch.children += [Child(f"{batch.id}-{uuid.uuid4().hex[:12]}", item["input"]) for item in items]

    @router.post("")
    async def create(endpoint_id: str, request: Request) -> Response:
        items = await requests_of(request, wrapped=False)
        if sum(1 for b in batches.values() if b.endpoint == endpoint_id and b.active) >= MAX_ACTIVE:
            raise HTTPException(429, f"this endpoint has {MAX_ACTIVE} active batches, the most it may have; "
                                     "finalize and finish, or cancel, one first")
        batch = Batch(f"batch-{uuid.uuid4().hex}", endpoint_id, request.query_params.get("name"),
                      int(time.time() * 1000))
        add(batch, items)
        batches[batch.id] = batch
        return FastJSON({"id": batch.id, "status": batch.status})

    @router.post("/{batch_id}/requests")
    async def append(endpoint_id: str, batch_id: str, request: Request) -> Response:
        batch = find(endpoint_id, batch_id)
        items = await requests_of(request, wrapped=True)
        if batch.status != "DRAFT":
            raise HTTPException(409, f"batch {batch_id!r} is {batch.status}; requests are added to a DRAFT batch")
        add(batch, items)
        return FastJSON({"id": batch.id, "status": batch.status, "requestTotal": len(batch.children)})

    @router.delete("/{batch_id}/requests/{request_id}")
    async def remove(endpoint_id: str, batch_id: str, request_id: str) -> Response:
        batch = find(endpoint_id, batch_id)
        if batch.status != "DRAFT":
            raise HTTPException(409, f"batch {batch_id!r} is {batch.status}; requests are removed from a DRAFT batch")
        kept = [child for child in batch.children if child.id != request_id]
        if len(kept) == len(batch.children):
            raise HTTPException(404, f"request {request_id!r} is not in batch {batch_id!r}")
        batch.children = kept
        return FastJSON({"id": batch.id, "status": batch.status, "requestTotal": len(batch.children)})

    @router.put("/{batch_id}")
    async def rename(endpoint_id: str, batch_id: str, request: Request) -> Response:
        batch = find(endpoint_id, batch_id)
        body = await json_body(request, MAX_CALL_BYTES)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise HTTPException(400, 'the body must be {"name": "..."}')
        batch.name = body["name"]
        return FastJSON(batch.summary())

    @router.post("/{batch_id}/finalize")
    async def finalize(endpoint_id: str, batch_id: str) -> Response:
        batch = find(endpoint_id, batch_id)
        if batch.status != "DRAFT":
            raise HTTPException(409, f"batch {batch_id!r} is {batch.status}; only a DRAFT batch is finalized")
        if queued(endpoint_id) + len(batch.children) > MAX_QUEUED:
            raise HTTPException(429, f"this endpoint would have more than {MAX_QUEUED:,} queued batch requests; "
                                     "finalize it once others have finished")
        batch.status = "FINALIZED"
        store: JobStore = jobs()
        for child in batch.children:
            child.job = store.submit(child.input)
            child.input = None
        return FastJSON({"id": batch.id, "status": batch.status})

    @router.post("/{batch_id}/cancel")
    async def cancel(endpoint_id: str, batch_id: str) -> Response:
        batch = find(endpoint_id, batch_id)
        if batch.status in ("DRAFT", "FINALIZED"):
            for child in batch.children:
                if child.job is not None and child.job.status == "IN_QUEUE":
                    jobs().cancel(child.job.id)
            batch.status = "CANCELLED"
        return FastJSON({"id": batch.id, "status": batch.status})

    @router.get("/{batch_id}")
    async def summary(endpoint_id: str, batch_id: str) -> Response:
        return FastJSON(find(endpoint_id, batch_id).summary())

    @router.get("")
    async def listing(endpoint_id: str) -> Response:
        found = sorted((b for b in batches.values() if b.endpoint == endpoint_id), key=lambda b: -b.created_ms)
        return FastJSON({"batches": [b.summary() for b in found]})

    @router.get("/{batch_id}/requests")
    async def results(endpoint_id: str, batch_id: str, offset: int = 0, limit: int = PAGE) -> Response:
        batch = find(endpoint_id, batch_id)
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise HTTPException(400, f"offset must be 0 or more and limit 1 to {MAX_PAGE}")
        store: JobStore = jobs()
        # what each entry shows is read here, on the loop; a large page is put together in a thread
        page = [(child, _status(child, store), child.job.result_json if child.job else b"")
                for child in batch.children[offset:offset + limit]]
        head = orjson.dumps({"total": len(batch.children), "offset": offset, "limit": limit,
                             "hasMore": offset + limit < len(batch.children)})

        def body() -> bytes:
            return b'{"requests":[' + b",".join(_result(*entry) for entry in page) + b"]," + head[1:]

        return Response(await json_io.off_loop_if(len(page) > json_io.LARGE_ITEMS, body),
                        media_type="application/json")

    return router


def _status(child: Child, store: JobStore) -> str:
    """DRAFT before the batch is finalized; EXPIRED once its kept result has been dropped."""
    job = child.job
    if job is None:
        return "DRAFT"
    return "EXPIRED" if job.status in FINAL and store.get(job.id) is None else job.status


def _result(child: Child, status: str, result_json: bytes) -> bytes:
    """One request's entry; a finished one's stored result spliced in unparsed."""
    head: dict[str, Any] = {"id": child.id, "status": status}
    job = child.job
    if status in ("DRAFT", "EXPIRED") or job is None:
        return orjson.dumps(head)
    if job.started is not None:
        head["startedAt"] = _iso(job.started)
    if job.finished is not None:
        head["completedAt"] = _iso(job.finished)
    return with_result(head, result_json if status in FINAL else b"")


def _iso(monotonic: float) -> str:
    """A monotonic instant as RunPod writes times: ISO 8601, UTC."""
    return datetime.fromtimestamp(time.time() - (time.monotonic() - monotonic), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
