"""Typicality: how dense the embedding is around each item (TypiClust's 1 / mean kNN distance).

Distances are computed in blocks of queries against the whole pool, so memory is
``O(block * N)``, never ``N x N``; time is ``O(N^2 D)``, fine up to ~1e5 items on a CPU.
"""

from __future__ import annotations

import numpy as np
import torch


def knn_distances(embedding: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """Euclidean distances from each item to its ``k`` nearest other items.

    Args:
        embedding: ``(N, D)`` float.
        k: neighbours; clipped to ``N - 1``.
        block: queries per block (memory ``block x N`` floats).

    Returns:
        ``(N, k)`` float32, ascending per row.
    """
    x = torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32))
    n = x.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), dtype=np.float32)
    out = torch.empty(n, k)
    for start in range(0, n, block):
        stop = min(start + block, n)
        d = torch.cdist(x[start:stop], x)
        d[torch.arange(stop - start), torch.arange(start, stop)] = float("inf")  # exclude self
        out[start:stop] = torch.topk(d, k, dim=1, largest=False).values
    return out.numpy()


def knn_typicality(embedding: np.ndarray, k: int = 20, block: int = 1024) -> np.ndarray:
    """``(N,)`` float64 typicality ``1 / (mean distance to k nearest neighbours)``; higher = more typical.

    An isolated item (an artifact, exotic tissue) has far neighbours and so low typicality;
    unlike mean pairwise distance this never rewards outliers.
    """
    dist = knn_distances(embedding, k, block).astype(np.float64)
    if dist.shape[1] == 0:
        return np.ones(len(embedding))
    return 1.0 / (dist.mean(axis=1) + 1e-8)
