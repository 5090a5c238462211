"""Infinity's engine around a model replica built by this worker (the sparse and
multi-vector encoders, LLM rerankers), so that it runs through Infinity's queue, batching
and pipeline threads like any other model: admission, deadlines, health and the full-batch
queue apply unchanged.

This is the one place that builds Infinity's `AsyncEmbeddingEngine` by hand: it sets the
fields its constructor sets (infinity-emb 0.0.78) with our replica instead of the one its
`select_model` would pick; an upgrade of Infinity re-checks this file.
"""

from __future__ import annotations

from typing import Any


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
