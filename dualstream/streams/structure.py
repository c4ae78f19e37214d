"""Structure of the frozen embedding: local outlier scores, k-means clusters, within-cluster typicality.

Everything here is a function of the embedding ``(N, D)`` alone (plus a few integer settings and a
fixed k-means seed), never of labels or of the task model, so a caller may compute
:func:`embedding_structure` once per embedding and cache it; the acquisition ``dualstream_v2``
recomputes it per call for now (``~1000`` items: milliseconds).

No ``N x N`` matrix is ever formed: kNN runs over blocks of queries (memory ``O(block N)``), and
beyond ``exact_max`` items the neighbours are searched within each item's k-means cluster only
(time ``~N^2 D / K`` instead of ``N^2 D``).

Helpers:
    :func:`knn_graph`: kNN distances and indices (:mod:`dualstream.streams.knn`).
    :func:`relative_density`: LOF-style ratio of an item's kNN distance to its neighbours'.
    :func:`robust_z`: median / MAD z-score.
    :func:`within_cluster_percentile`: rank percentile of a score inside each cluster.
    :func:`cluster_spread`: mean distance of each cluster's members to its centre.
    :func:`tight_clusters`: clusters of near-identical members (experimental artifact veto).
    :func:`embedding_structure`: all of the above for one embedding, as an :class:`EmbeddingStructure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dualstream.acquisition.geometry import BLOCK_ELEMS, kmeans
from dualstream.acquisition.typiclust import _single_thread, cluster_typicality
from dualstream.streams.knn import knn

MAD_TO_SD = 1.4826  # MAD of a normal distribution x this = its standard deviation


def knn_graph(embedding: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other items of every item: :func:`dualstream.streams.knn.knn` (exact below its
    size threshold, FAISS IVF above, recall logged).

    Args:
        embedding: ``(N, D)`` float.
        k: neighbours; clipped to ``N - 1``.
        block: query block of the torch fallback (memory ``block x N`` floats).

    Returns:
        ``(dist (N, k) float32 ascending per row, idx (N, k) int64)``; ``k = 0`` columns when ``N < 2``.
    """
    return knn(embedding, k, block=block)


def _lof_ratio(dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``(n,)`` float64 ``mean kNN distance / mean over the kNN of their mean kNN distance`` (1 without neighbours)."""
    if dist.shape[1] == 0:
        return np.ones(dist.shape[0])
    own = dist.astype(np.float64).mean(axis=1)
    # A floor relative to the typical scale keeps exact duplicates (distance 0) at ratio ~1, not 0/0.
    eps = 1e-6 * float(np.median(own)) + 1e-12
    return (own + eps) / (own[idx].mean(axis=1) + eps)


def relative_density(embedding: np.ndarray, k: int = 20, assign: np.ndarray | None = None, block: int = 1024) -> np.ndarray:
    """``(N,)`` float64 LOF-style relative density: ~1 inside any cluster, dense or sparse; ``>> 1`` for an isolated item.

    ``r_i = dbar_i / mean_{j in kNN(i)} dbar_j`` with ``dbar`` the mean distance to the ``k`` nearest
    other items (Breunig et al. 2000, Local Outlier Factor, without reachability distances): the
    density of an item is compared with that of its own neighbourhood, not with the pool's, so a
    coherent but sparse group of items scores like a dense one.

    Args:
        embedding: ``(N, D)`` float.
        k: neighbours.
        assign: optional ``(N,)`` cluster of each item: neighbours are then searched within its
            cluster only (an approximation for big pools: time ``~N^2 D / K``); ``None`` = exact.
    """
    x = np.asarray(embedding, dtype=np.float32)
    if assign is None:
        return _lof_ratio(*knn_graph(x, k, block))
    out = np.ones(len(x))
    order = np.argsort(assign, kind="stable")
    with _single_thread():  # many small kNN calls: see typiclust._single_thread
        for members in np.split(order, np.flatnonzero(np.diff(assign[order])) + 1):
            if len(members) > 1:
                sub = max(1, min(block, BLOCK_ELEMS // len(members)))
                out[members] = _lof_ratio(*knn_graph(x[members], k, sub))
    return out


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(N,)`` float64 ``(v - median) / (1.4826 MAD)``: a z-score that a few extreme items cannot inflate.

    When more than half of the values tie (MAD 0), the scale falls back to the mean absolute
    deviation (x 1.2533, its normal-consistency factor); all-equal values give z = 0.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v.copy()
    med = float(np.median(v))
    dev = np.abs(v - med)
    scale = MAD_TO_SD * float(np.median(dev))
    if not scale > 0:
        scale = 1.2533 * float(dev.mean())
    if not scale > 0:
        return np.zeros_like(v)
    return (v - med) / scale


def within_cluster_percentile(values: np.ndarray, assign: np.ndarray, min_size: int = 1) -> np.ndarray:
    """``(N,)`` float64 rank of each item's value among its cluster's members, scaled to ``(0, 1]``.

    Ties get the lowest rank of their group (conservative). Items of clusters with fewer than
    ``min_size`` members get 0: a handful of points alone in a cluster are not "typical" of anything,
    and without this rule an isolated item in its own cluster would be its cluster's most typical.
    """
    v = np.asarray(values, dtype=np.float64)
    assign = np.asarray(assign)
    out = np.zeros(len(v))
    order = np.lexsort((v, assign))  # by cluster, then by value
    bounds = np.flatnonzero(np.diff(assign[order])) + 1
    for members in np.split(order, bounds):
        size = len(members)
        if size == 0 or size < min_size:
            continue
        vals = v[members]
        ranks = np.searchsorted(vals, vals, side="left") + 1  # vals is sorted ascending
        out[members] = ranks / size
    return out


def cluster_spread(embedding: np.ndarray, assign: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(K,)`` float64 mean Euclidean distance of each cluster's members to its centre (0 for empty clusters)."""
    x = np.asarray(embedding, dtype=np.float64)
    d = np.linalg.norm(x - np.asarray(centres, dtype=np.float64)[assign], axis=1)
    k = len(centres)
    sizes = np.bincount(assign, minlength=k)
    return np.bincount(assign, weights=d, minlength=k) / np.maximum(sizes, 1)


def tight_clusters(spread: np.ndarray, sizes: np.ndarray, tight: float, max_share: float) -> np.ndarray:
    """``(K,)`` bool: clusters of near-identical members, tightest first, covering at most ``max_share`` of the items.

    A cluster is tight when its ``spread < tight x`` the median spread of the clusters with at least
    two members (a single item has spread 0 by construction and is left to the point veto). The
    tightest are taken while the items they hold stay within ``max_share x N``.
    """
    spread = np.asarray(spread, dtype=np.float64)
    sizes = np.asarray(sizes)
    out = np.zeros(len(spread), dtype=bool)
    real = sizes >= 2
    if max_share <= 0 or real.sum() < 2:
        return out
    ref = float(np.median(spread[real]))
    cand = np.flatnonzero(real & (spread < tight * ref))
    budget = max_share * float(sizes.sum())
    used = 0
    for c in cand[np.argsort(spread[cand], kind="stable")]:
        if used + sizes[c] > budget:
            break
        out[c] = True
        used += int(sizes[c])
    return out


def default_n_clusters(n: int, max_clusters: int = 500) -> int:
    """``min(max(10, N // 50), max_clusters, N)``: ~50 items per cluster, at least 10 clusters."""
    return max(1, min(max(10, n // 50), int(max_clusters), n))


def _structure_kmeans(x: np.ndarray, n_k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centres, assign)`` of the structure's k-means: fixed seed, Lloyd on a sample of ``50 n_k``
    (at least 20,000) items, so :func:`outlier_z` and :func:`embedding_structure` cluster alike."""
    return kmeans(x, n_k, np.random.default_rng(seed), fit_sample=max(50 * n_k, 20_000))


def outlier_z(embedding: np.ndarray, k: int = 20, max_clusters: int = 500, exact_max: int = 20_000, seed: int = 0) -> np.ndarray:
    """``(N,)`` float64 robust z of the log relative density (:func:`relative_density`): the
    ``outlier_z`` of :func:`embedding_structure`, equal to it, without the within-cluster typicality and
    spread a quality screen does not read. k-means (the same call) runs only above ``exact_max`` items,
    where the neighbours are searched within clusters. Time ``O(N^2 D)`` up to ``exact_max``, ``O(N K D + N^2 D / K)`` above.
    """
    x = np.asarray(embedding, dtype=np.float32)
    n = len(x)
    assign = None
    if n > exact_max:
        assign = _structure_kmeans(x, default_n_clusters(n, max_clusters), seed)[1]
    return robust_z(np.log(relative_density(x, k, assign=assign)))


@dataclass(frozen=True)
class EmbeddingStructure:
    """What :func:`embedding_structure` knows about one embedding ``(N, D)``; cacheable per embedding.

    Attributes:
        assign: ``(N,)`` int64 k-means cluster of each item.
        centres: ``(K, D)`` float32 cluster centres.
        sizes: ``(K,)`` int64 members per cluster.
        spread: ``(K,)`` float64 :func:`cluster_spread`.
        rel_density: ``(N,)`` float64 :func:`relative_density`.
        outlier_z: ``(N,)`` float64 :func:`robust_z` of ``log(rel_density)`` over the pool.
        cluster_typicality: ``(N,)`` float64 within-cluster typicality ``1 / mean kNN distance``
            (:func:`dualstream.acquisition.typiclust.cluster_typicality`).
        cluster_typicality_pct: ``(N,)`` float64 its :func:`within_cluster_percentile`.
    """

    assign: np.ndarray
    centres: np.ndarray
    sizes: np.ndarray
    spread: np.ndarray
    rel_density: np.ndarray
    outlier_z: np.ndarray
    cluster_typicality: np.ndarray
    cluster_typicality_pct: np.ndarray


def embedding_structure(
    embedding: np.ndarray,
    k: int = 20,
    n_clusters: int | None = None,
    max_clusters: int = 500,
    min_cluster_size: int = 5,
    exact_max: int = 20_000,
    seed: int = 0,
) -> EmbeddingStructure:
    """Local outlier scores and cluster structure of one frozen embedding.

    Args:
        embedding: ``(N, D)`` float.
        k: neighbours for the relative density and the within-cluster typicality.
        n_clusters: k-means clusters; ``None`` = :func:`default_n_clusters`.
        max_clusters: cap on the automatic cluster count.
        min_cluster_size: clusters with fewer members get within-cluster percentile 0.
        exact_max: up to this many items the relative density uses exact kNN over the whole pool;
            above it, kNN within each item's cluster (see :func:`relative_density`).
        seed: k-means seed; fixed so that the result depends on the embedding alone (cacheable).

    Time ``O(N^2 D)`` up to ``exact_max`` items (blockwise), ``O(N K D + N^2 D / K)`` above.
    """
    x = np.asarray(embedding, dtype=np.float32)
    n = len(x)
    n_k = default_n_clusters(n, max_clusters) if n_clusters is None else max(1, min(int(n_clusters), n))
    centres, assign = _structure_kmeans(x, n_k, seed)
    sizes = np.bincount(assign, minlength=n_k)
    rel = relative_density(x, k, assign=None if n <= exact_max else assign)
    typ = cluster_typicality(x, assign, k)
    return EmbeddingStructure(
        assign=assign,
        centres=centres,
        sizes=sizes,
        spread=cluster_spread(x, assign, centres),
        rel_density=rel,
        outlier_z=robust_z(np.log(rel)),
        cluster_typicality=typ,
        cluster_typicality_pct=within_cluster_percentile(typ, assign, min_cluster_size),
    )
