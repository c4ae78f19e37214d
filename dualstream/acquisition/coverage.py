"""Coverage strategies: Core-Set (k-center greedy) and ProbCover (greedy max coverage of delta-balls).

Both cover the pool with the queried set; neither uses the task model's uncertainty. Distances are
blockwise (:mod:`.geometry`), never ``N x N``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import scipy.sparse

from dualstream.acquisition.base import PoolView, Selection, register
from dualstream.acquisition.extras import require_extra
from dualstream.acquisition.geometry import (
    as_points,
    gather_neighbours,
    kth_neighbour_distance,
    nearest,
    radius_graph,
    sq_dist_to,
    sq_norms,
)
from dualstream.errors import ConfigError
from dualstream.streams import knn as knn_mod
from dualstream.streams.knn import EXACT_BELOW, LRU, fingerprint

SPACES = ("data", "task")


def coreset_space(view: PoolView, space: str) -> np.ndarray:
    """``(N, D)`` points of ``space``: ``data`` = ``view.embedding``, ``task`` = ``view.extras["task_embedding"]``."""
    if space == "data":
        return view.embedding
    if space == "task":
        return require_extra(
            view, "task_embedding", "coreset", "the task stream must supply task embeddings, or set acquisition.params.space=data", ndim=2
        )
    raise ConfigError(f"acquisition.params.space='{space}' is not a coreset space; choose one of {list(SPACES)}")


@register("coreset")
def coreset_acquisition(view: PoolView, batch_size: int, rng: np.random.Generator, space: str = "data") -> Selection:
    """Core-Set (Sener & Savarese 2018), the k-center greedy 2-approximation.

    Centres start as the queried items; each pick is the candidate farthest from its nearest centre,
    which then becomes a centre. One ``(N,)`` min-distance vector is updated per pick: memory
    ``O(N)`` beyond the points, time ``O(N Q D)`` for the initial distances to the ``Q`` queried
    items plus ``O(N B D)`` for the picks. Deviation: no robust (outlier-budget MIP) variant.

    If nothing is queried yet, the candidate nearest the candidates' mean is the first pick and the
    first centre (k-center needs a centre to start from; the mean's neighbour is the most central,
    deterministic choice).

    Args:
        view: ``space="data"`` uses ``view.embedding`` ``(N, D)``; ``"task"`` uses
            ``view.extras["task_embedding"]`` ``(N, D')``.

    Returns:
        ``(B,)`` indices in pick order; ``(N,)`` utilities = each candidate's distance to its nearest
        centre before selection (to the seed pick when nothing was queried), NaN on queried items.
    """
    x = as_points(coreset_space(view, space))
    xn = sq_norms(x)
    cand = view.candidates
    queried = np.flatnonzero(view.queried)
    picks: list[int] = []
    if len(queried):
        min_d2, _ = nearest(x, x[queried])
    else:
        mean = x[cand].mean(0, dtype=np.float64)
        seed = int(cand[np.argmin(sq_dist_to(x[cand], xn[cand], mean))])
        picks.append(seed)
        min_d2 = sq_dist_to(x, xn, x[seed])
    utilities = np.full(len(view), np.nan)
    utilities[cand] = np.sqrt(min_d2[cand])
    avail = min_d2.copy()
    avail[~view.available] = -np.inf
    avail[picks] = -np.inf
    while len(picks) < batch_size:
        p = int(np.argmax(avail))
        picks.append(p)
        np.minimum(avail, sq_dist_to(x, xn, x[p]), out=avail)
        avail[p] = -np.inf
    return Selection(np.asarray(picks, dtype=np.int64), utilities)


def auto_delta(embedding: np.ndarray, k: int, rng: np.random.Generator, n_sample: int = 2000) -> float:
    """Default ProbCover radius: median distance to the ``k``-th nearest neighbour, over a sample of items.

    Deviation: the paper picks the largest delta whose balls stay >= 95% pure w.r.t. k-means
    pseudo-labels; the median k-NN radius needs no extra clustering and gives each ball about ``k``
    neighbours. Estimated from ``min(n_sample, N)`` random items (``O(S N D)``, not ``O(N^2 D)``).
    """
    return float(np.median(kth_neighbour_distance(embedding, k, rng, n_sample)))


_GRAPHS = LRU(2)


def ball_graph(
    x: np.ndarray,
    radius: float,
    max_edges: int,
    exact_below: int = EXACT_BELOW,
    nprobe: int = 6,
    ball_k: int = 50,
    extras: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, indices)`` of the ``radius``-ball graph of ``x`` ``(N, D)``, memoised in-process.

    The graph depends only on the frozen embedding and the radius, so it is built once and reused
    every round (two-entry LRU keyed by :func:`~dualstream.streams.knn.fingerprint`). Below
    ``exact_below`` items: the exact :func:`radius_graph` (``O(N^2 D / 2)``). From there on: the
    *kNN-truncated* ball graph (:func:`knn_ball_graph`): each item's ball holds only those of its
    ``ball_k`` nearest neighbours (one memoised approximate :func:`~dualstream.streams.knn.knn`,
    ``O(N^1.5 D)``) that lie within ``radius``, made symmetric by union. Every edge is a true edge;
    balls of more than ``ball_k`` items (dense regions) are truncated to their nearest members.
    ``extras``: a ``PoolView.extras`` that may hold the data stream's neighbour lists
    (:func:`~dualstream.streams.knn.neighbours`), used instead of a new search.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    approx = n >= exact_below
    key = (fingerprint(x), float(radius), int(max_edges), approx, (nprobe, ball_k) if approx else None)

    def make() -> tuple[np.ndarray, np.ndarray]:
        if not approx:
            return radius_graph(x, radius, max_edges=max_edges)
        dist, idx = knn_mod.neighbours(x, int(ball_k), extras, exact_below=exact_below, nprobe=int(nprobe))
        return knn_ball_graph(dist, idx, radius, max_edges)

    return _GRAPHS.get_or_make(key, make)


def knn_ball_graph(dist: np.ndarray, idx: np.ndarray, radius: float, max_edges: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric ball graph from neighbour lists: ``j`` in ball(``i``) iff ``j`` is among ``i``'s
    neighbours (or ``i`` among ``j``'s) at distance ``<= radius``; every item in its own ball.

    Args:
        dist, idx: ``(N, K)`` float distances and int neighbour indices (self excluded).
        radius: ball radius.
        max_edges: refuse (``ConfigError``) a graph with more directed edges.

    Returns:
        CSR ``(indptr (N+1,) int64, indices (E,) int32)``. Time and memory ``O(N K)``, never ``N x N``.
    """
    n = len(idx)
    keep = np.asarray(dist) <= float(radius)
    per_row = keep.sum(axis=1)
    if 2 * int(per_row.sum()) + n > max_edges:
        raise ConfigError(
            f"delta={radius:.4g} makes a ball graph with more than {max_edges} edges; "
            "lower acquisition.params.delta (or k) or raise acquisition.params.max_edges"
        )
    indptr = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64)
    one_way = scipy.sparse.csr_matrix(
        (np.ones(int(indptr[-1]), dtype=np.int8), np.asarray(idx)[keep].astype(np.int32), indptr), shape=(n, n)
    )
    # union of both directions plus self-loops; duplicate pairs are summed, their count is irrelevant
    graph = (one_way + one_way.T + scipy.sparse.identity(n, dtype=np.int8, format="csr")).tocsr()
    graph.sum_duplicates()
    return graph.indptr.astype(np.int64), graph.indices.astype(np.int32, copy=False)


@register("probcover")
def probcover_acquisition(
    view: PoolView,
    batch_size: int,
    rng: np.random.Generator,
    delta: float | str = "auto",
    k: int = 10,
    delta_sample: int = 2000,
    max_edges: int | None = None,
    exact_below: int = EXACT_BELOW,
    nprobe: int = 6,
    ball_k: int = 50,
) -> Selection:
    """ProbCover (Yehuda et al. 2022): greedy maximum coverage of ``delta``-balls in the data embedding.

    Builds the sparse symmetric ball graph of ``view.embedding`` ``(N, D)`` blockwise (every item
    in its own ball). Items within ``delta`` of a queried item are covered. Each pick is the
    candidate whose ball holds the most not-yet-covered items; its ball then becomes covered and the
    counts of every ball holding a newly covered item are decremented (the paper's "remove incoming
    edges"). Once no candidate covers anything new, the batch is filled with random candidates.

    Args:
        delta: ball radius, or ``"auto"`` = :func:`auto_delta` (median distance to the ``k``-th
            nearest neighbour over ``delta_sample`` random items).
        max_edges: refuse (``ConfigError``) a radius whose graph has more directed edges (~13 bytes
            each at the peak); default ``max(2e7, 50 N)`` (2e7 is a mean ball of 200 items on a 1e5 pool).
        exact_below, nprobe, ball_k: pools from ``exact_below`` items on get the kNN-truncated ball
            graph (:func:`ball_graph`: balls hold at most the ``ball_k`` nearest neighbours, IVF
            search with ``nprobe``) and an ``"auto"`` radius read off the same neighbour lists (median
            ``k``-th neighbour distance over all items; an approximate neighbour is never nearer, so
            the radius can only come out slightly larger); smaller pools are unchanged.

    Cost: the ball graph is built once per embedding and radius (:func:`ball_graph`, memoised):
    ``O(N^2 D / 2)`` exact below ``exact_below`` items, one ``O(N^1.5 D)`` kNN above; memory
    ``O(N + E)``, ``E`` = N x mean ball size, never ``N x N``. Per round: ``O(E)`` for the counts
    plus the greedy picks. Deviations: radius rule (see :func:`auto_delta`); no top-5
    randomisation; truncated balls on big pools.

    Returns:
        ``(B,)`` indices in pick order; ``(N,)`` utilities = number of uncovered items each
        candidate's ball covers at the start of the round, NaN on queried items.
    """
    x = view.embedding
    n = len(view)
    big = n >= exact_below
    if max_edges is None:
        max_edges = max(20_000_000, 50 * n)
    if delta == "auto" and big:  # once per embedding: a per-round radius would rebuild the graph
        if int(k) > int(ball_k):
            raise ConfigError(f"acquisition.params.k={k} must be <= acquisition.params.ball_k={ball_k} (the neighbours kept per ball)")
        dist, _ = knn_mod.neighbours(x, int(ball_k), view.extras, exact_below=exact_below, nprobe=int(nprobe))
        radius = float(np.median(dist[:, int(k) - 1]))
    elif delta == "auto":
        radius = auto_delta(x, k, rng, delta_sample)
    else:
        try:
            radius = float(delta)
        except (TypeError, ValueError):
            raise ConfigError(f"acquisition.params.delta must be a number or 'auto', got {delta!r}") from None
        if not radius >= 0:
            raise ConfigError(f"acquisition.params.delta must be >= 0, got {delta!r}")
    indptr, indices = ball_graph(x, radius, int(max_edges), exact_below, nprobe, ball_k, view.extras)
    covered = np.zeros(n, dtype=bool)
    covered[gather_neighbours(indptr, indices, np.flatnonzero(view.queried))] = True
    # counts[i] = uncovered items in ball(i); every row holds at least itself, so no empty segment.
    counts = np.add.reduceat((~covered[indices]).astype(np.int64), indptr[:-1]).astype(np.float64)
    cand = view.candidates
    utilities = np.full(n, np.nan)
    utilities[cand] = counts[cand]
    counts[~view.available] = -np.inf
    picks: list[int] = []
    while len(picks) < batch_size:
        p = int(np.argmax(counts))
        if counts[p] <= 0:
            break
        picks.append(p)
        ball = gather_neighbours(indptr, indices, [p])
        new = ball[~covered[ball]]
        covered[new] = True
        np.subtract.at(counts, gather_neighbours(indptr, indices, new), 1.0)
        counts[p] = -np.inf
    if len(picks) < batch_size:  # everything coverable is covered: fill at random
        rest = np.setdiff1d(cand, picks)
        picks += rng.choice(rest, size=batch_size - len(picks), replace=False).tolist()
    return Selection(np.asarray(picks, dtype=np.int64), utilities)
