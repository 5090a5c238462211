"""The RunPod job handler: job input -> typed request -> service -> job output.

`answer` does the work and returns a typed `Answer`; calling the handler (what
`runpod.serverless.start` does) turns that into the job's output. This is the one place
where a `WorkerError` becomes the job's error output (`{"error": "<one line>"}`, which
RunPod reports as a FAILED job).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from embedding_worker.errors import InternalError, UnsupportedTask, WorkerError
from embedding_worker.api.job_input import Job, normalize_job_input
from embedding_worker.api.routes import Route
from embedding_worker.api.schemas import ClassifyRequest, RequestLimits
from embedding_worker.service import EmbeddingService
from embedding_worker.serving import json_io
from embedding_worker.serving.metrics import metrics

log = logging.getLogger(__name__)
MAX_CUSTOM_ID = 256


class JobOutput(dict):
    """A response body whose repr is one short line.

    runpod's `run_job` formats every output into f-string debug messages, which are
    evaluated whatever the log level: for embeddings that is milliseconds per request
    (46 ms for 256 vectors). Serialisation to JSON is unaffected.
    """

    def __repr__(self) -> str:
        items = self.get("data") or self.get("results") or []
        return f"<{self.get('object', 'response')} of {len(items)} from {self.get('model', '?')!r}>"

    __str__ = __repr__


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any] | None = None
    error: WorkerError | None = None
    openai: bool = False

    def to_job_output(self) -> dict[str, Any] | list[dict[str, Any]]:
        if self.error is not None:
            if getattr(self.error, "refresh_worker", False):  # runpod: stop this worker after the job
                return {"error": self.error.message, "refresh_worker": True}
            return {"error": self.error.message}
        body = JobOutput(self.body)
        # RunPod's /openai/v1 gateway unwraps a one-element list; standard jobs get the body.
        return [body] if self.openai else body


class JobHandler:
    def __init__(
        self, service: EmbeddingService, max_concurrency: int, limits: RequestLimits | None = None
    ) -> None:
        self.service = service
        self.max_concurrency = max_concurrency
        self.limits = limits or RequestLimits()

    async def __call__(self, job: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        """The job's output; a standard job's `custom_id` (a string of at most 256 characters,
        as OpenAI's Batch API has it) comes back in its output, so that a client of RunPod's
        Batch API, whose results do not say which request they answer, can match them."""
        job_input = job.get("input") if isinstance(job, dict) else None
        job_id = job.get("id") if isinstance(job, dict) else None
        custom_id = job_input.get("custom_id") if isinstance(job_input, dict) else None
        if custom_id is not None and (not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID):
            return {"error": f"custom_id: must be a string of 1 to {MAX_CUSTOM_ID} characters"}
        output = (await self.answer(job_input, job_id)).to_job_output()
        if custom_id is not None and isinstance(output, dict) and "error" not in output:
            output["custom_id"] = custom_id
        return output

    async def answer(self, job_input: Any, job_id: str | None = None) -> Answer:
        """The job's answer; one log line when it ends: id, route, model, items, time and,
        if it failed, why."""
        started = time.perf_counter()
        openai, parsed, route = False, None, None
        try:
            parsed = normalize_job_input(job_input, self.limits)
            openai = parsed.openai
            route, body = await self._run(parsed)
            answer = Answer(body=body, openai=openai)
        except WorkerError as err:
            answer = Answer(error=err, openai=openai)
        except Exception as exc:  # noqa: BLE001 - a bug must fail the job, not the worker
            log.exception("job %s failed unexpectedly", job_id or "-")
            answer = Answer(error=InternalError(f"internal error: {type(exc).__name__}: {exc}"), openai=openai)
        request = getattr(parsed, "request", None)
        items = _items(request)
        label = _label(route or (parsed.route if parsed else None))
        model = _short(getattr(request, "model", "-"))
        seconds = time.perf_counter() - started
        log.info("job %s: %s, model %s, %d items, %.0f ms%s", _short(str(job_id or "-")), label, model,
                 len(items), 1000 * seconds,
                 f"; failed: {_short(answer.error.message, 300)}" if answer.error is not None else "",
                 extra={"job_id": job_id})
        tokens = (answer.body or {}).get("usage", {}).get("prompt_tokens", 0) if answer.error is None else 0
        metrics().request_ended(label, model if answer.error is None else "-",
                                "ok" if answer.error is None else str(answer.error.status_code), seconds,
                                len(items), tokens)
        return answer

    async def _run(self, job: Job) -> tuple[Route, dict[str, Any]]:
        """The job's route, resolved (a standard job to a classifier classifies), and its body."""
        request, route = job.request, job.route
        if route is Route.texts:
            if self.service.is_classifier(request.model):
                if request.has_media:
                    raise UnsupportedTask(f"input: model {request.model!r} classifies text; images can only be embedded")
                route = Route.classify
                request = ClassifyRequest.model_construct(model=request.model, input=request.input)
            else:
                route = Route.embeddings
        if route is not Route.models:
            await self.service.price(request)  # every route, before any work
        if route is Route.embeddings:
            response = await self.service.embed(request)
        elif route is Route.rerank:
            response = await self.service.rerank(request, document_objects=job.document_objects)
        elif route is Route.tokenize:
            response = await self.service.tokenize(request)
        elif route is Route.classify:
            response = await self.service.classify(request)
        elif route is Route.cohere_embed:
            response = await self.service.cohere_embed(request)
        else:
            response = self.service.list_models()
        dump = partial(response.model_dump, mode="json", exclude_none=True)
        return route, await json_io.off_loop_if(json_io.is_large(response), dump)

    def concurrency_modifier(self, current_concurrency: int) -> int:
        """How many jobs to take at once: RUNPOD_MAX_CONCURRENCY while the engines have room,
        proportionally fewer as the fullest model's backlog nears its limit (its queue, or
        REQUEST_TIMEOUT of work), so RunPod routes work to other workers instead of this one
        failing it; more again as the backlog drains."""
        headroom = 1.0 - self.service.registry.fullness()
        return max(1, min(self.max_concurrency, math.floor(self.max_concurrency * headroom)))


def _items(request: Any) -> list:
    """What a request's log line counts: its documents, inputs, or Cohere's texts, images or inputs."""
    for name in ("docs", "input", "texts", "images", "inputs"):
        if (found := getattr(request, name, None)) is not None:
            return found
    return []


def _label(route: Route | None) -> str:
    """The route a job took, named alike for every job kind (a standard job that failed before
    its model was known counts as embeddings, what such jobs are)."""
    if route is None:
        return "invalid input"
    return Route.embeddings.value if route is Route.texts else route.value


def _short(text: str, limit: int = 100) -> str:
    """What a log line holds of a client's text: a bounded part (a body can hold megabytes)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
