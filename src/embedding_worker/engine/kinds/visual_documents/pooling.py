"""Fewer vectors a page: `pool_factor` merges a document's token vectors into about
`tokens / pool_factor` by hierarchical clustering, each merged vector the normalised mean of
its cluster, as colpali-engine's `HierarchicalTokenPooler` does (Ward linkage over the
rows of the cosine-distance matrix, cut into at most that many clusters)."""

from __future__ import annotations

import numpy as np


def pool(vectors: np.ndarray, pool_factor: int) -> np.ndarray:
    """`vectors` (tokens x dimensions, unit rows) merged into at most tokens // pool_factor
    (at least one); blocking: run it off the event loop."""
    from scipy.cluster.hierarchy import fcluster, linkage

    clusters = max(len(vectors) // pool_factor, 1)
    if len(vectors) <= 1 or clusters >= len(vectors):
        return vectors
    distances = 1.0 - (vectors @ vectors.T).astype(np.float32)
    labels = fcluster(linkage(distances, metric="euclidean", method="ward"), t=clusters, criterion="maxclust")
    merged = np.stack([vectors[labels == label].mean(axis=0) for label in np.unique(labels)])
    return (merged / np.linalg.norm(merged, axis=1, keepdims=True)).astype(np.float32)
