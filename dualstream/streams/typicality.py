"""Typicality: how dense the embedding is around each item (TypiClust's 1 / mean kNN distance).

The neighbours come from :func:`dualstream.streams.knn.knn`: exact (FAISS flat, or a blockwise
``torch.cdist`` without faiss; ``O(N^2 D)``) below ``exact_below`` items, FAISS IVF above
(``O(N sqrt(N) D)``, recall estimated on a sample and logged). Memory is ``O(N k)``, never ``N x N``.
"""

from __future__ import annotations

import numpy as np

from dualstream.streams.knn import EXACT_BELOW, knn


def knn_distances(embedding: np.ndarray, k: int, block: int = 1024, **knn_kwargs) -> np.ndarray:
    """Euclidean distances from each item to its ``k`` nearest other items.

    Args:
        embedding: ``(N, D)`` float.
        k: neighbours; clipped to ``N - 1``.
        block: queries per block of the torch fallback (memory ``block x N`` floats).
        knn_kwargs: passed to :func:`~dualstream.streams.knn.knn` (``method``, ``exact_below``,
            ``nprobe``, ``threads``, ...).

    Returns:
        ``(N, k)`` float32, ascending per row.
    """
    dist, _ = knn(embedding, k, block=block, **knn_kwargs)
    return dist


def knn_typicality(embedding: np.ndarray, k: int = 20, block: int = 1024, *, exact_below: int = EXACT_BELOW, **knn_kwargs) -> np.ndarray:
    """``(N,)`` float64 typicality ``1 / (mean distance to k nearest neighbours)``; higher = more typical.

    An isolated item (an artifact, exotic tissue) has far neighbours and so low typicality;
    unlike mean pairwise distance this never rewards outliers. Exact below ``exact_below`` items;
    above, IVF neighbours (typicality Spearman >= 0.98 against exact in ``tests/test_knn.py``).
    """
    return typicality_from_distances(knn_distances(embedding, k, block, exact_below=exact_below, **knn_kwargs))


def typicality_from_distances(dist: np.ndarray) -> np.ndarray:
    """``(N,)`` float64 ``1 / (mean of each row + 1e-8)`` of ``(N, k)`` neighbour distances; all 1 when ``k = 0``."""
    dist = np.asarray(dist, dtype=np.float64)
    if dist.shape[1] == 0:
        return np.ones(len(dist))
    return 1.0 / (dist.mean(axis=1) + 1e-8)
