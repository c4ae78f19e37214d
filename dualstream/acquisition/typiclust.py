"""TypiClust (Hacohen et al. 2022): the most typical item of the largest uncovered clusters.

Two regimes, switched by ``exact_below`` (pool size, default 50 000):

- small pools: k-means of :mod:`.geometry` and exact kNN within each cluster
  (``O(N^2 D / K)``), exactly as before the big-pool path existed;
- big pools: the same k-means (``O(fit_sample K D)`` per iteration, then one ``O(N K D)``
  assignment; FAISS' k-means was slower here, its OpenMP threads spin on a busy machine), and within-cluster typicality from one *global* approximate kNN of ``2k``
  neighbours (:func:`dualstream.streams.knn.neighbours`: the data stream's lists when it passed
  them in ``PoolView.extras``, else computed once per frozen embedding and memoised in-process), restricted to each item's own cluster (:func:`cluster_typicality_from_knn`).
  Per round: ``O(N K D + N k)``, memory ``O(N k)``. The cluster assignment itself is not memoised:
  ``K`` grows with the queried count every round.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from dualstream.acquisition.base import PoolView, Selection, masked_utilities, register
from dualstream.acquisition.geometry import BLOCK_ELEMS, kmeans
from dualstream.streams.knn import EXACT_BELOW, neighbours
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


def cluster_typicality_from_knn(dist: np.ndarray, idx: np.ndarray, assign: np.ndarray, k: int = 20) -> np.ndarray:
    """``(N,)`` float64 within-cluster typicality from global neighbours (the big-pool approximation).

    Same definition as :func:`cluster_typicality` (``k_c = min(k, size // 2)``, 0 for single-item
    clusters), but the ``k_c`` nearest same-cluster members are looked for only among each item's
    ``K'`` global neighbours ``dist``/``idx`` ``(N, K')``. When fewer than ``k_c`` are there, the missing
    ones are counted at the ``K'``-th global distance, a lower bound on their true distance (exact for
    items inside their cluster, optimistic for items on a cluster border, which are rarely the most
    typical). Time and memory ``O(N K')``.
    """
    if len(assign) == 0:
        return np.zeros(0)
    sizes = np.bincount(assign)
    k_c = np.minimum(k, np.maximum(1, sizes // 2))[assign]
    same = assign[idx] == assign[:, None]
    use = same & (np.cumsum(same, axis=1) <= k_c[:, None])
    found = use.sum(axis=1)
    total = np.where(use, dist, 0.0).sum(axis=1, dtype=np.float64) + (k_c - found) * dist[:, -1].astype(np.float64)
    typ = 1.0 / (total / k_c + 1e-8)
    typ[sizes[assign] < 2] = 0.0
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
    exact_below: int = EXACT_BELOW,
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

    From ``exact_below`` items on (see the module docstring), the within-cluster typicality comes
    from one memoised global kNN of ``2k`` neighbours (:func:`cluster_typicality_from_knn`); smaller pools keep the exact path.

    Returns:
        ``(B,)`` indices in pick order; ``(N,)`` utilities = each candidate's within-cluster
        typicality (comparable within a cluster, not across clusters), NaN on queried items.
    """
    n = len(view)
    n_clusters = max(1, min(int(view.queried.sum()) + batch_size, int(max_clusters), n))
    fit_sample = max(fit_per_cluster * n_clusters, 20_000)
    if n < exact_below:
        _, assign = kmeans(view.embedding, n_clusters, rng, fit_sample=fit_sample)
        typ = cluster_typicality(view.embedding, assign, k)
    else:
        _, assign = kmeans(view.embedding, n_clusters, rng, fit_sample=fit_sample)
        dist, idx = neighbours(view.embedding, 2 * k, view.extras, exact_below=exact_below)
        typ = cluster_typicality_from_knn(dist, idx, assign, k)
    sizes = np.bincount(assign, minlength=n_clusters)
    counts = np.bincount(assign[view.queried], minlength=n_clusters)
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
