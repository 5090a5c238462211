"""The engines: hardware, model sources, loading, the registry and its health."""
