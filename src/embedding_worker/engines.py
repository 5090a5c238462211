"""The engine registry: one Infinity engine per configured model.

It loads the models (at start-up, outside any event loop), starts the engines inside the
event loop that serves jobs (Infinity binds to the loop it starts in), resolves the model
a request names, bounds every engine call with a timeout, and stops the engines so the
process can exit (Infinity's worker threads are not daemons).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from embedding_worker.errors import EngineFailure, ModelLoadError, ModelNotFound, UnsupportedTask
from embedding_worker.model_sources import ModelLocations, resolve_model
from embedding_worker.onnx_support import ensure_onnx, fix_infinity_onnx_lookup, pooling_method
from embedding_worker.settings import Backend, ModelSpec

if TYPE_CHECKING:
    from infinity_emb import AsyncEmbeddingEngine, AsyncEngineArray

log = logging.getLogger(__name__)
ResultT = TypeVar("ResultT")


@dataclass
class DeployedModel:
    spec: ModelSpec
    engine: AsyncEmbeddingEngine
    created: int  # Unix time the model was loaded
    embedding_dimension: int | None = None  # None until known (embedders only)
    max_input_tokens: int | None = None  # longer inputs are truncated to this

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(self.engine.capabilities)

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            can_do = ", ".join(sorted(self.capabilities)) or "nothing"
            raise UnsupportedTask(
                f"model: {self.name!r} cannot {capability}; it supports: {can_do}"
            )


class EngineRegistry:
    def __init__(self, models: list[DeployedModel], timeout: float) -> None:
        from infinity_emb import AsyncEngineArray

        self._models = {model.name: model for model in models}
        self._array: AsyncEngineArray = AsyncEngineArray([m.engine for m in models])
        self._timeout = timeout
        self._start_lock: asyncio.Lock | None = None
        self._started = False

    @classmethod
    def load(
        cls,
        specs: list[ModelSpec],
        locations: ModelLocations,
        timeout: float,
        onnx_quantized: bool = False,
    ) -> EngineRegistry:
        """Find and load every model; raise `ModelLoadError` naming the first that fails."""
        return cls([_load(spec, locations, onnx_quantized) for spec in specs], timeout)

    @property
    def models(self) -> list[DeployedModel]:
        return list(self._models.values())

    def resolve(self, name: str) -> DeployedModel:
        # Never Infinity's own lookup: with one engine it answers for any name.
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(
                f"model: {name!r} is not deployed; deployed: {', '.join(self._models)}"
            )
        return model

    async def start(self) -> None:
        """Start the engines in the running loop; safe to call from every job."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self._array.astart()
                self._started = True

    async def stop(self) -> None:
        await self._array.astop()
        self._started = False

    def stop_outside_loop(self) -> None:
        """Stop the engines after the serving loop has ended (e.g. after `--test_input`)."""
        if self._started:
            asyncio.run(self.stop())

    async def call(self, model: DeployedModel, work: Awaitable[ResultT]) -> ResultT:
        """Await an engine call, bounded: a dead Infinity worker thread never answers."""
        try:
            return await asyncio.wait_for(work, timeout=self._timeout)
        except TimeoutError:
            raise EngineFailure(
                f"model {model.name!r} did not answer within {self._timeout:g} s"
            ) from None


def _load(spec: ModelSpec, locations: ModelLocations, onnx_quantized: bool) -> DeployedModel:
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    started = time.perf_counter()
    onnx = spec.backend is Backend.optimum
    found = resolve_model(spec.source, spec.revision, locations, onnx=onnx)
    path = found.path
    try:
        if onnx:
            fix_infinity_onnx_lookup()
            path = ensure_onnx(path, locations.download_cache.parent, quantized=onnx_quantized)
        engine = AsyncEmbeddingEngine.from_args(
            EngineArgs(
                model_name_or_path=str(path),
                pooling_method=pooling_method(path),
                onnx_do_not_prefer_quantized=not onnx_quantized,
                served_model_name=spec.name,
                batch_size=spec.batch_size,
                engine=spec.backend.value,
                dtype=spec.dtype,
                lengths_via_tokenize=True,  # usage counts tokens, not characters
                model_warmup=False,  # a warm-up costs seconds of cold start and buys nothing here
            )
        )
    except Exception as exc:  # noqa: BLE001 - any load failure ends start-up with one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model {spec.source!r}: {reason}") from exc
    log.info(
        "model %r: %s (%s); serving as %r (%s, %s, batch size %d); loaded in %.1f s",
        spec.source,
        found.source.value,
        path,
        spec.name,
        spec.backend.value,
        spec.dtype,
        spec.batch_size,
        time.perf_counter() - started,
    )
    dimension, max_tokens = _describe(engine)
    return DeployedModel(
        spec=spec,
        engine=engine,
        created=int(time.time()),
        embedding_dimension=dimension,
        max_input_tokens=max_tokens,
    )


def _describe(engine: AsyncEmbeddingEngine) -> tuple[int | None, int | None]:
    """Embedding dimension and input token limit, where the loaded model tells them.

    Infinity keeps the loaded model on a private attribute, so read it defensively; an
    embedder's dimension is otherwise learnt from its first vectors.
    """
    replicas = getattr(engine, "_model_replicas", None) or [None]
    model = replicas[0]
    dimension = None
    if "embed" in engine.capabilities:
        get_dimension = getattr(model, "get_sentence_embedding_dimension", None)
        dimension = get_dimension() if callable(get_dimension) else None
    max_tokens = getattr(model, "max_seq_length", None) or getattr(
        getattr(model, "_infinity_tokenizer", None), "model_max_length", None
    )
    if not isinstance(max_tokens, int) or max_tokens > 1_000_000:  # "no limit" sentinels
        max_tokens = None
    return dimension, max_tokens
