"""What the worker has done, in Prometheus' text format at `GET /metrics` (both endpoint
types, and the local endpoint), with `prometheus-client`:

- `embedding_worker_requests_total{route,model,status}`: requests and jobs ended, `status`
  `ok` or the error's HTTP status;
- `embedding_worker_request_seconds{route}`: their time in the worker, end to end;
- `embedding_worker_queue_wait_seconds{model}`: how long each item waited for its batch
  (waiting), and `embedding_worker_forward_seconds{model}`: each batch's forward pass
  (computing), with `embedding_worker_batch_size{model}`;
- `embedding_worker_items_total{model}`, `embedding_worker_tokens_total{model}`;
- `embedding_worker_model_healthy{model}`: 1, or 0 once its engine has failed;
- `embedding_worker_requests_in_progress`: HTTP requests being answered (load balancer).

The metrics live in a registry of their own, made on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 330)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class Metrics:
    registry: object
    requests: object
    request_seconds: object
    queue_wait: object
    forward_seconds: object
    batch_size: object
    items: object
    tokens: object
    healthy: object
    in_progress: object
    health_sources: list[Callable[[], dict[str, str]]] = field(default_factory=list)

    def request_ended(self, route: str, model: str, status: str, seconds: float, items: int, tokens: int) -> None:
        self.requests.labels(route, model, status).inc()
        self.request_seconds.labels(route).observe(seconds)
        if status == "ok" and model != "-":
            self.items.labels(model).inc(items)
            self.tokens.labels(model).inc(tokens)

    def for_model(self, model: str) -> ModelObserver:
        return ModelObserver(self, model)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        for source in self.health_sources:
            for model, state in source().items():
                self.healthy.labels(model).set(1 if state == "ok" else 0)
        return generate_latest(self.registry)


@cache
def metrics() -> Metrics:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    prefix = "embedding_worker_"
    return Metrics(
        registry=registry,
        requests=Counter(prefix + "requests", "Requests and jobs ended", ["route", "model", "status"],
                         registry=registry),
        request_seconds=Histogram(prefix + "request_seconds", "Time in the worker, end to end", ["route"],
                                  buckets=LATENCY_BUCKETS, registry=registry),
        queue_wait=Histogram(prefix + "queue_wait_seconds", "Time an item waited for its batch", ["model"],
                             buckets=LATENCY_BUCKETS, registry=registry),
        forward_seconds=Histogram(prefix + "forward_seconds", "Forward pass of one batch", ["model"],
                                  buckets=LATENCY_BUCKETS, registry=registry),
        batch_size=Histogram(prefix + "batch_size", "Items per forward pass", ["model"], buckets=BATCH_BUCKETS,
                             registry=registry),
        items=Counter(prefix + "items", "Texts, documents, images and clips computed", ["model"], registry=registry),
        tokens=Counter(prefix + "tokens", "Tokens counted in usage", ["model"], registry=registry),
        healthy=Gauge(prefix + "model_healthy", "1 while the model's engine serves, 0 once it has failed", ["model"],
                      registry=registry),
        in_progress=Gauge(prefix + "requests_in_progress", "HTTP requests being answered", registry=registry),
    )


def metrics_response():
    """The metrics as an HTTP response (FastAPI's)."""
    from fastapi.responses import Response
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(metrics().render(), media_type=CONTENT_TYPE_LATEST)


@dataclass(frozen=True)
class ModelObserver:
    """One model's batch queue reporting to the metrics (`engine.batching.BatchObserver`)."""

    metrics: Metrics
    model: str

    def batches_formed(self, waits: list[float], sizes: list[int]) -> None:
        wait = self.metrics.queue_wait.labels(self.model)
        for seconds in waits:
            wait.observe(seconds)
        batch = self.metrics.batch_size.labels(self.model)
        for size in sizes:
            batch.observe(size)

    def forward_done(self, seconds: float) -> None:
        self.metrics.forward_seconds.labels(self.model).observe(seconds)
