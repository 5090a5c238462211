"""A corpus embedded through a deployed (or local) endpoint, resumable: `source` reads the
corpus a slice at a time, `transports` speaks to each endpoint type (RunPod's queue, its Batch
API, OpenAI's embeddings route), `store` writes results as they arrive with a checkpoint beside
the output, `client` packs rows into requests and keeps them in flight. An HTTP client only:
it imports nothing of the engine."""
