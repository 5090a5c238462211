"""One corpus through one endpoint: rows packed into requests within the endpoint's payload
limit and the worker's budgets, `concurrency` requests in flight, every answer written as it
arrives (`store`), and a summary at the end.

A request the worker refuses (an empty text slipped through, a text past the limits) is split
in halves until the row at fault is alone, and that row is recorded as failed with the
worker's one line: one bad row never stops the corpus. 429 and 503 wait for `Retry-After`;
a lost connection, a timeout or a 5xx is retried `retries` times, then its rows are recorded
as failed. Through the Batch API, a batch of up to 5,000 requests is made, finalized and
read back (each request carries a `custom_id` that the worker returns with its output); a
request that did not complete there is sent again through the queue (`/run`).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from embedding_worker.corpus.source import Corpus, CorpusError, Row, check_unique_ids
from embedding_worker.corpus.store import Progress, Store, chunks_of, table_of
from embedding_worker.corpus.transports import (
    BATCH_CALL_BYTES,
    RUNSYNC_BYTES,
    BatchAPI,
    Busy,
    Expired,
    OpenAI,
    Queue,
    Refused,
    Transient,
)

BATCH_REQUESTS = 5_000  # RunPod's most requests a batch
BUSY_PATIENCE = 900.0  # seconds a request keeps waiting out 429 and 503


@dataclass(frozen=True)
class Options:
    model: str
    endpoint: str
    via: str  # queue, batch or openai
    api_key: str = ""
    concurrency: int = 8
    retries: int = 5
    rows_per_request: int = 128
    encoding_format: str = "float"
    dimensions: int | None = None
    input_type: str | None = None
    prompt_name: str | None = None
    embedding_types: tuple[str, ...] | None = None
    chunked: bool | None = None
    images: bool = False  # the value column holds image references

    def body(self, rows: list[Row]) -> dict[str, Any]:
        """The request for `rows`: the standard job's input, which is also OpenAI's body."""
        body: dict[str, Any] = {"model": self.model,
                                "input": [{"image": r.value} for r in rows] if self.images else [r.value for r in rows]}
        sparse = self.embedding_types is not None and "sparse" in self.embedding_types
        # base64 where it is smaller: a fifth of float JSON (sparse weights come as floats only)
        body["encoding_format"] = "base64" if self.encoding_format == "float" and not sparse else self.encoding_format
        for name in ("dimensions", "input_type", "prompt_name", "chunked"):
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        if self.embedding_types:
            body["embedding_types"] = list(self.embedding_types)
        return body


class Exhausted(Exception):
    """Retried as often as allowed."""


@dataclass
class Tally:
    rows: int = 0
    embedded: int = 0
    retries: int = 0
    failed: list[tuple[Any, str]] = field(default_factory=list)
    tokens: int = 0


class CorpusRun:
    def __init__(self, corpus: Corpus, output: Path, options: Options, progress_bar: bool = True) -> None:
        self.corpus, self.options, self.store = corpus, options, Store(output)
        self.tally = Tally()
        self.progress_bar = progress_bar
        self.bar = None

    def header(self, rows: int) -> dict[str, Any]:
        stat = self.corpus.path.stat()
        options = {k: v for k, v in asdict(self.options).items() if k not in ("api_key", "concurrency", "retries")}
        return {"corpus": str(self.corpus.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "rows": rows, "id_column": self.corpus.id_column, "column": self.corpus.column,
                "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}

    async def run(self) -> int:
        """Embed the corpus; the exit status (0: every row embedded, 1: some failed)."""
        started = time.perf_counter()
        progress = self.store.read()
        rows = check_unique_ids(self.corpus)  # before any request is sent
        header = self.header(rows)
        if progress.header is not None and progress.header != header:
            raise CorpusError(f"{self.store.log_path} is the checkpoint of another corpus or other options; "
                              "delete it (and the .parts folder beside it) or choose another OUTPUT")
        self.tally.rows, self.tally.failed, self.tally.tokens = rows, list(progress.failed), progress.tokens
        if progress.complete:
            self.summary(time.perf_counter() - started, resumed=True)
            return 1 if self.tally.failed else 0
        self.store.start(header, progress)
        from tqdm import tqdm

        self.bar = tqdm(total=rows, unit="row", file=sys.stderr, disable=not self.progress_bar, dynamic_ncols=True,
                        smoothing=0.1)
        headers = {"Authorization": f"Bearer {self.options.api_key}"} if self.options.api_key else {}
        limits = httpx.Limits(max_connections=self.options.concurrency + 4, max_keepalive_connections=self.options.concurrency + 4)
        try:
            async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(600.0, connect=30.0),
                                         limits=limits) as http:
                if self.options.via == "batch":
                    await self._batches(http, progress)
                else:
                    await self._requests(http, progress)
            embedded = self.store.finish(self.tally.failed)
        finally:
            self.bar.close()
            self.store.close()
        self.tally.embedded = embedded
        self.summary(time.perf_counter() - started)
        return 1 if self.tally.failed else 0

    def _transport(self, http: httpx.AsyncClient) -> OpenAI | Queue:
        base = self.options.endpoint.rstrip("/")
        if self.options.via == "openai":
            transport = OpenAI(base, http)
            if "/openai/" in base:  # RunPod's gateway: a /runsync underneath
                transport.limit = RUNSYNC_BYTES
            return transport
        return Queue(base, http)

    def _chunks(self, limit: int):
        """(number, rows) of every request, the same on every run over the same corpus and options."""
        return enumerate(chunks_of(self.corpus.rows(), self.options.rows_per_request, limit // 2))

    async def _requests(self, http: httpx.AsyncClient, progress: Progress) -> None:
        transport = self._transport(http)
        gate = asyncio.Semaphore(self.options.concurrency)
        tasks: set[asyncio.Task] = set()
        for number, chunk in self._chunks(transport.limit):
            if number in progress.done:
                self.bar.update(len(chunk))
                continue
            await gate.acquire()
            task = asyncio.create_task(self._chunk(transport, number, chunk, progress.jobs.get(number)))
            task.add_done_callback(lambda t: gate.release())
            tasks.add(task)
            for finished in [t for t in tasks if t.done()]:
                tasks.discard(finished)
                finished.result()  # a failure that stops the run (a wrong key, a missing model) surfaces now
        await asyncio.gather(*tasks)

    async def _chunk(self, transport: OpenAI | Queue, number: int, chunk: list[Row], job: str | None = None,
                     answer: dict | None = None) -> None:
        failed = [(row.id, row.problem) for row in chunk if row.problem]
        rows = [row for row in chunk if not row.problem]
        found: dict[int, dict] = {}
        tokens = 0
        if answer is None and job is not None and isinstance(transport, Queue):
            try:  # sent before a kill: its answer, not the request again
                answer = await transport.result(job)
            except (Expired, Refused, Transient, Busy):
                answer = None
        if answer is not None and rows:
            tokens += self._take(rows, answer, found)
        elif rows:
            async def sent(job_id: str) -> None:
                self.store.note({"sent": number, "job": job_id})

            tokens += await self._embed(transport, rows, found, failed, sent)
        kept = [row for row in rows if row.number in found]
        table = table_of([row.id for row in kept], [found[row.number] for row in kept], self.options.encoding_format,
                         list(self.options.embedding_types) if self.options.embedding_types else None) if kept else None
        self.store.write_chunk(number, table, failed, tokens)
        self.tally.failed += failed
        self.tally.tokens += tokens
        self.bar.update(len(chunk))
        self.bar.set_postfix(retries=self.tally.retries, failed=len(self.tally.failed), refresh=False)

    def _take(self, rows: list[Row], answer: dict, found: dict[int, dict]) -> int:
        data = answer.get("data") or []
        if len(data) != len(rows):
            raise Refused(f"the answer holds {len(data)} embeddings for {len(rows)} inputs")
        for entry in data:
            found[rows[entry["index"]].number] = entry
        return int((answer.get("usage") or {}).get("prompt_tokens", 0))

    async def _embed(self, transport: OpenAI | Queue, rows: list[Row], found: dict[int, dict],
                     failed: list[tuple[Any, str]], sent=None) -> int:
        """`rows` embedded into `found`; a refused request split until the row at fault is alone."""
        try:
            answer = await self._with_retries(lambda: transport.embed(self.options.body(rows), sent))
            return self._take(rows, answer, found)
        except Refused as exc:
            if len(rows) == 1:
                failed.append((rows[0].id, str(exc)))
                return 0
            middle = len(rows) // 2
            return (await self._embed(transport, rows[:middle], found, failed)
                    + await self._embed(transport, rows[middle:], found, failed))
        except Exhausted as exc:
            failed += [(row.id, str(exc)) for row in rows]
            return 0

    async def _with_retries(self, call):
        attempt, patience = 0, time.monotonic() + BUSY_PATIENCE
        while True:
            try:
                return await call()
            except Busy as exc:
                self.tally.retries += 1
                if time.monotonic() > patience:
                    raise Exhausted(f"still busy after {BUSY_PATIENCE:g} s: {exc}") from None
                await asyncio.sleep(min(exc.retry_after, 30.0) * random.uniform(1.0, 1.5))
            except (Transient, Expired) as exc:
                attempt += 1
                self.tally.retries += 1
                if attempt > self.options.retries:
                    raise Exhausted(f"not embedded after {attempt} tries: {exc}") from None
                await asyncio.sleep(min(0.5 * 2**attempt, 20.0) * random.uniform(0.5, 1.0))

    async def _batches(self, http: httpx.AsyncClient, progress: Progress) -> None:
        """Requests in batches of up to 5,000 through the Batch API, each read back once all
        its requests have ended; what did not complete there goes through the queue."""
        api, queue = BatchAPI(self.options.endpoint.rstrip("/"), http), Queue(self.options.endpoint.rstrip("/"), http)
        submitted = {chunk: batch for batch, chunks in progress.batches.items() for chunk in chunks}
        group: list[tuple[int, list[Row]]] = []
        for number, chunk in self._chunks(BATCH_CALL_BYTES):
            if number in progress.done:
                self.bar.update(len(chunk))
                continue
            group.append((number, chunk))
            if len(group) == BATCH_REQUESTS:
                await self._batch(api, queue, group, submitted)
                group = []
        if group:
            await self._batch(api, queue, group, submitted)

    async def _batch(self, api: BatchAPI, queue: Queue, group: list[tuple[int, list[Row]]],
                     submitted: dict[int, str]) -> None:
        chunks = dict(group)
        batch = submitted.get(group[0][0])
        if batch is None or any(submitted.get(number) != batch for number in chunks):
            batch = await self._submit(api, group)
        while True:
            summary = await self._with_retries(lambda: api.summary(batch))
            ended = summary.get("requestCompleted", 0) + summary.get("requestFailed", 0)
            if ended >= summary.get("requestTotal", 0) or summary.get("status") in ("CANCELLED", "FAILED"):
                break
            await asyncio.sleep(1.0)
        answers: dict[int, dict] = {}
        offset = 0
        while True:
            page = await self._with_retries(lambda offset=offset: api.results(batch, offset, 1000))
            for entry in page.get("requests", []):
                output = entry.get("output")
                output = output[0] if isinstance(output, list) and output else output
                custom = output.get("custom_id", "") if isinstance(output, dict) else ""
                if entry.get("status") == "COMPLETED" and custom.startswith("chunk-"):
                    answers[int(custom.removeprefix("chunk-"))] = output
            offset += len(page.get("requests", []))
            if not page.get("hasMore") or not page.get("requests"):
                break
        gate = asyncio.Semaphore(self.options.concurrency)

        async def one(number: int) -> None:
            async with gate:
                answer = answers.get(number)
                try:
                    await self._chunk(queue, number, chunks[number], answer=answer)
                except Refused:  # an answer that does not fit its request: send it again
                    await self._chunk(queue, number, chunks[number])

        await asyncio.gather(*(one(number) for number in chunks))

    async def _submit(self, api: BatchAPI, group: list[tuple[int, list[Row]]]) -> str:
        requests = [{"input": {**self.options.body([r for r in chunk if not r.problem]), "custom_id": f"chunk-{number}"}}
                    for number, chunk in group if any(not r.problem for r in chunk)]
        calls, size, current = [], 2, []
        for request in requests:
            length = len(httpx.Request("POST", "http://x", json=request).content) + 1
            if current and size + length > BATCH_CALL_BYTES * 0.95:
                calls.append(current)
                current, size = [], 2
            current.append(request)
            size += length
        calls.append(current)
        batch = await self._with_retries(lambda: api.create(calls[0]))
        for call in calls[1:]:
            await self._with_retries(lambda call=call: api.append(batch, call))
        await self._with_retries(lambda: api.finalize(batch))
        self.store.note({"batch": batch, "chunks": [number for number, _ in group]})
        return batch

    def summary(self, seconds: float, resumed: bool = False) -> None:
        tally = self.tally
        reasons = Counter(reason for _, reason in tally.failed)
        lines = [f"{'already complete: ' if resumed else ''}{tally.rows:,} rows, {tally.rows - len(tally.failed):,} "
                 f"embedded, {len(tally.failed):,} failed; {tally.tokens:,} tokens; {tally.retries:,} retries; "
                 f"{seconds:.1f} s ({tally.rows / max(seconds, 1e-9):,.0f} rows/s)"]
        for reason, count in reasons.most_common(5):
            lines.append(f"  {count:,} x {reason}")
        if tally.failed:
            lines.append(f"failed rows: {self.store.failed_path}")
        print("\n".join(lines), file=sys.stderr)


def default_via(endpoint: str) -> str:
    """`queue` for a RunPod endpoint URL (`.../v2/<id>`), `openai` for anything else."""
    parts = endpoint.rstrip("/").split("/")
    return "queue" if len(parts) >= 2 and parts[-2] == "v2" else "openai"


def openai_base(endpoint: str) -> str:
    """An OpenAI base URL: the endpoint itself where it ends in /v1, else its /v1."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1") else endpoint + "/v1"


__all__ = ["CorpusError", "CorpusRun", "Options", "default_via", "openai_base"]
