"""Model files: where each model comes from (`lookup`), the hub (`hub`), downloading into a
cache (`download`), checking a cached snapshot (`snapshot_check`), the cache's layout
(`cache_layout`)."""

from embedding_worker.engine.model_sources.lookup import ModelLocations, ModelSource, ResolvedModel, resolve_model

__all__ = ["ModelLocations", "ModelSource", "ResolvedModel", "resolve_model"]
