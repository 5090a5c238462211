"""RunPod serverless worker serving embeddings and reranking with the Infinity engine."""
