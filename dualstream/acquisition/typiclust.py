"""TypiClust (Hacohen et al. 2022): the most typical item of the largest uncovered clusters."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from dualstream.acquisition.base import PoolView, Selection, masked_utilities, register
from dualstream.acquisition.geometry import BLOCK_ELEMS, kmeans
from dualstream.streams.typicality import knn_distances


def cluster_typicality(embedding: np.ndarray, assign: np.ndarray, k: int = 20) -> np.ndarray:
    """``(N,)`` float64 typicality of every item within its own cluster.

    ``1 / (mean distance to the k_c nearest members of its cluster)`` with ``k_c = min(k, size // 2)``
    (at least 1), as in the authors' code; 0 for single-item clusters. kNN is blockwise per cluster:
    time ``O(sum_c size_c^2 D)`` (``~N^2 D / K`` for balanced clusters), memory ``O(N + block)``.

    Args:
        embedding: ``(N, D)`` points.
        assign: ``(N,)`` int cluster of each point.
    """
    typ = np.zeros(len(assign))
    order = np.argsort(assign, kind="stable")
    bounds = np.flatnonzero(np.diff(assign[order])) + 1
    with _single_thread():
        for members in np.split(order, bounds):
            size = len(members)
            if size < 2:
                continue
            k_c = min(k, max(1, size // 2))
            block = max(1, min(1024, BLOCK_ELEMS // size))
            dist = knn_distances(embedding[members], k_c, block).astype(np.float64)
            typ[members] = 1.0 / (dist.mean(axis=1) + 1e-8)
    return typ


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch single-threaded, then restore: the per-cluster kNN calls are small (``~N / K`` items),
    where the intra-op thread pool only adds synchronisation and, on an oversubscribed machine,
    busy-waiting that made them ~100x slower in our measurements."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@register("typiclust")
def typiclust_acquisition(
    view: PoolView,
    batch_size: int,
    rng: np.random.Generator,
    k: int = 20,
    max_clusters: int = 500,
    min_cluster_size: int = 5,
    fit_per_cluster: int = 50,
) -> Selection:
    """TypiClust: cover the data embedding's clusters with their most typical items.

    k-means over **all** items of ``view.embedding`` ``(N, D)`` into ``K = min(Q + B, max_clusters)``
    clusters (``Q`` queried; the cap keeps k-means ``O(N K D)``). As in the authors' code, which
    switches to MiniBatchKMeans beyond 50 clusters, big pools get an approximate k-means: Lloyd
    iterations on ``max(fit_per_cluster * K, 20000)`` random items, then one assignment of all
    items (``fit_per_cluster=0`` fits on 20000). Then ``B`` times: among
    clusters that still have candidates, take the one with the fewest queried-or-picked items, the
    largest first on ties, and pick its most typical candidate (:func:`cluster_typicality` with ``k``
    neighbours, computed over all members, queried ones included). Clusters of at most
    ``min_cluster_size`` items (the authors' code drops them) are used only when no other cluster has
    candidates left, so a batch can always be filled.

    Returns:
        ``(B,)`` indices in pick order; ``(N,)`` utilities = each candidate's within-cluster
        typicality (comparable within a cluster, not across clusters), NaN on queried items.
    """
    n = len(view)
    n_clusters = max(1, min(int(view.queried.sum()) + batch_size, int(max_clusters), n))
    _, assign = kmeans(view.embedding, n_clusters, rng, fit_sample=max(fit_per_cluster * n_clusters, 20_000))
    sizes = np.bincount(assign, minlength=n_clusters)
    counts = np.bincount(assign[view.queried], minlength=n_clusters)
    typ = cluster_typicality(view.embedding, assign, k)
    cand = view.candidates
    # Candidates grouped by cluster, most typical first within each (index breaks ties).
    ranked = cand[np.lexsort((cand, -typ[cand], assign[cand]))]
    left = np.bincount(assign[cand], minlength=n_clusters)
    start = np.concatenate([[0], np.cumsum(left)[:-1]])
    taken = np.zeros(n_clusters, dtype=np.int64)
    big = sizes > min_cluster_size
    picks: list[int] = []
    for _ in range(batch_size):
        has = taken < left
        eligible = np.flatnonzero(has & big)
        if len(eligible) == 0:
            eligible = np.flatnonzero(has)
        c = eligible[np.lexsort((eligible, -sizes[eligible], counts[eligible]))[0]]
        picks.append(int(ranked[start[c] + taken[c]]))
        taken[c] += 1
        counts[c] += 1
    return Selection(np.asarray(picks, dtype=np.int64), masked_utilities(typ, cand))
