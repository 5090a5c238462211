"""The one place that touches Infinity's private engine attributes (infinity-emb 0.0.78); an
upgrade of Infinity re-checks this file.

- `replicas`: Infinity keeps the loaded models on `_model_replicas`, and exposes no public
  way to reach them; the worker needs them to fit tokenizers, pack CPU weights, guard the
  pipeline stages (health), self-test and describe a model.
- `batch_handler`: the started engine's batch handler, whose queue the worker replaces with
  its full-batch queue (`batching.py`), and whose usage count it replaces for models whose
  texts it tokenizes once (`token_inputs.tokenize_on_arrival`, its `_get_prios_usage`).
- `model_workers`: its pipeline workers, whose post-processing wait the worker takes out.
- `replace_hand_off_queue`: the queue between its batching thread and pre-processing, whose
  emptiness the worker waits for (`batching.HandOffQueue`) instead of a blind sleep.
- `replace_result_queue`: the queue its post-processing puts results in, delivered on the
  serving loop directly (`result_delivery.py`).
- `engine_with`: an engine around a replica this worker builds (the sparse and multi-vector
  encoders, LLM rerankers), so that it runs through Infinity's queue, batching and pipeline
  threads like any other model: admission, deadlines, health and the full-batch queue apply
  unchanged. It sets the fields `AsyncEmbeddingEngine.__init__` sets, with our replica in
  place of the one its `select_model` would pick.
"""

from __future__ import annotations

from typing import Any


def replicas(engine: Any) -> list[Any]:
    """The engine's loaded models (one per device), or [] for an engine that has none."""
    return list(getattr(engine, "_model_replicas", None) or [])


def batch_handler(engine: Any) -> Any:
    """The started engine's batch handler (None before `astart`)."""
    return getattr(engine, "_batch_handler", None)


def model_workers(engine: Any) -> list[Any]:
    """The started engine's pipeline workers (each runs one replica's three stages)."""
    return list(getattr(batch_handler(engine), "model_worker", None) or [])


def replace_hand_off_queue(engine: Any, make: Any) -> None:
    """Put `make(maxsize)` in place of the queue through which the started engine's batching
    thread hands batches to its pre-processing thread(s) (still empty: before any request)."""
    _replace_queue(engine, "_publish_to_model_queue", "_input_q", make)


def replace_result_queue(engine: Any, make: Any) -> None:
    """Put `make(maxsize)` in place of the queue the started engine's post-processing puts each
    batch's results in (before any request)."""
    _replace_queue(engine, "_result_queue", "_output_q", make)


def _replace_queue(engine: Any, handler_attribute: str, worker_attribute: str, make: Any) -> None:
    """One queue shared by the batch handler and every pipeline worker, replaced in both."""
    handler = batch_handler(engine)
    queue = make(getattr(handler, handler_attribute).maxsize)
    setattr(handler, handler_attribute, queue)
    for worker in model_workers(engine):
        setattr(worker, worker_attribute, queue)


def replace_usage_count(engine: Any, count: Any) -> Any:
    """Have the started engine count a request's usage (and its items' batch order) with
    `count(items) -> (lengths, usage)`, awaited; return the engine's own."""
    handler = batch_handler(engine)
    own = handler._get_prios_usage
    handler._get_prios_usage = count
    return own


def engine_with(replica: Any, engine_args: Any) -> Any:
    """An `AsyncEmbeddingEngine` whose one replica is `replica`."""
    from infinity_emb import AsyncEmbeddingEngine

    class CustomEngine(AsyncEmbeddingEngine):
        def __init__(self) -> None:
            self._engine_args = engine_args
            self.running = False
            self._running_sepamore = None
            self._model_replicas = [replica]
            self._min_inference_t = self._max_inference_t = 4e-3

    return CustomEngine()
