"""The one place that touches Infinity's private engine attributes (infinity-emb 0.0.78); an
upgrade of Infinity re-checks this file.

- `replicas`: Infinity keeps the loaded models on `_model_replicas`, and exposes no public
  way to reach them; the worker needs them to fit tokenizers, pack CPU weights, guard the
  pipeline stages (health), self-test and describe a model.
- `batch_handler`: the started engine's batch handler, whose queue the worker replaces with
  its full-batch queue (`batching.py`).
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
