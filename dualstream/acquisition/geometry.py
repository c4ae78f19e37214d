"""Blockwise Euclidean geometry shared by the acquisition zoo; never an ``N x N`` matrix.

Every helper streams over blocks of rows (and, where both sides are the pool, blocks of columns),
so peak memory is ``O(N + BLOCK_ELEMS)`` floats whatever the pool size. Squared distances use
``||a||^2 - 2 a.b + ||b||^2`` in float32 (absolute error ~1e-6 x squared norm), clamped at 0.
Plain numpy: block matmuls go to BLAS (multithreaded); the per-pick matrix-vector products of the
greedy loops use a single-threaded einsum (see :func:`sq_dist_to`).

Helpers:
    :func:`nearest`: nearest row of a (small or large) set for every point, ``O(N M D)`` time.
    :func:`sq_dist_to`: squared distances of all points to one point, ``O(N D)``.
    :func:`kmeans`: k-means++ seeding + Lloyd with blockwise assignment, ``O(N K D)`` per iteration.
    :func:`radius_graph`: sparse symmetric delta-ball graph (CSR), ``O(N^2 D / 2)`` time, ``O(N + E)`` memory.
    :func:`kth_neighbour_distance`: distance to the k-th neighbour for a sample of points.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from dualstream.errors import ConfigError

BLOCK_ELEMS = 1 << 22  # floats per distance block: 16 MiB in float32


def as_points(x: np.ndarray) -> np.ndarray:
    """``(N, D)`` float32 C-contiguous view or copy of ``x`` (a 1-D ``(N,)`` input becomes ``(N, 1)``)."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    return arr[:, None] if arr.ndim == 1 else arr


def sq_norms(x: np.ndarray) -> np.ndarray:
    """``(N,)`` float32 squared row norms of ``(N, D)`` float32 ``x``."""
    return np.einsum("ij,ij->i", x, x)


def sq_dist_to(x: np.ndarray, x_norms: np.ndarray, point: np.ndarray) -> np.ndarray:
    """``(N,)`` float64 squared distances from every row of float32 ``x`` ``(N, D)`` to ``point`` ``(D,)``.

    ``x_norms`` are :func:`sq_norms` of ``x`` (passed in so that greedy loops compute them once).
    The product is a single-threaded einsum, not BLAS: greedy loops call this once per pick, and a
    memory-bound matrix-vector product gains little from threads but, on a busy machine, can wait a
    whole scheduler slice for the second thread.
    """
    point = np.asarray(point, dtype=np.float32).reshape(-1)
    d2 = np.einsum("ij,j->i", x, point).astype(np.float64)
    d2 *= -2.0
    d2 += x_norms
    d2 += float(point @ point)
    return np.maximum(d2, 0.0, out=d2)


def nearest(x: np.ndarray, y: np.ndarray, block_elems: int = BLOCK_ELEMS) -> tuple[np.ndarray, np.ndarray]:
    """For every row of ``x`` its nearest row of ``y``.

    Args:
        x: ``(N, D)`` points.
        y: ``(M, D)`` points, ``M >= 1``.
        block_elems: floats per distance block (memory ``block_elems`` floats, never ``N x M``).

    Returns:
        ``(sq_dist (N,) float64, index (N,) int64)``: squared distance to and index of the nearest
        ``y`` (the first one on ties). Time ``O(N M D)``.
    """
    x, y = as_points(x), as_points(y)
    n, m = x.shape[0], y.shape[0]
    best = np.full(n, np.inf, dtype=np.float32)
    arg = np.zeros(n, dtype=np.int64)
    yn = sq_norms(y)
    cols = max(1, min(m, block_elems // 64))
    rows = max(1, block_elems // cols)
    for c0 in range(0, m, cols):
        c1 = min(c0 + cols, m)
        yc_t = np.ascontiguousarray(y[c0:c1].T)
        for r0 in range(0, n, rows):
            r1 = min(r0 + rows, n)
            # ||y||^2 - 2 x.y: the ||x||^2 term does not change the argmin and is added at the end.
            d = x[r0:r1] @ yc_t
            d *= -2.0
            d += yn[c0:c1]
            idx = d.argmin(1)
            val = d[np.arange(r1 - r0), idx]
            better = val < best[r0:r1]
            best[r0:r1][better] = val[better]
            arg[r0:r1][better] = idx[better] + c0
    d2 = best.astype(np.float64) + sq_norms(x)
    return np.maximum(d2, 0.0, out=d2), arg


def kmeans(
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    iters: int = 20,
    seed_pool: int = 10_000,
    fit_sample: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding and blockwise assignment (memory ``O(N + K D)``).

    Unlike :func:`dualstream.acquisition.diversity.kmeans` (fine for a shortlist of a few thousand),
    this one never forms the ``(N, K)`` distance matrix and runs the seeding on a random subset of
    ``max(seed_pool, 20 k)`` points when the input is larger. Empty clusters keep their previous
    centre. Stops when no assignment changes or after ``iters`` iterations.

    Args:
        x: ``(N, D)`` points (or ``(N,)``, treated as 1-D points).
        k: clusters; clipped to ``[1, N]``.
        fit_sample: if set and ``N`` is larger, the Lloyd iterations run on that many random points
            (a mini-batch-style approximation) and every point is then assigned once to the result.

    Returns:
        ``(centres (k, D) float32, assignment (N,) int64)``; the centres are the means of the
        returned assignment's clusters. Time ``O(min(N, fit_sample) K D)`` per iteration.
    """
    x = as_points(x)
    n = x.shape[0]
    k = max(1, min(int(k), n))
    fit = x
    if fit_sample is not None and n > max(int(fit_sample), k):
        fit = x[np.sort(rng.choice(n, size=max(int(fit_sample), k), replace=False))]
    # k-means++ seeding (D^2 sampling), on a subsample for big inputs.
    m = fit.shape[0]
    pool = np.arange(m)
    if m > max(seed_pool, 20 * k):
        pool = np.sort(rng.choice(m, size=max(seed_pool, 20 * k), replace=False))
    xs = fit[pool]
    xs_n = sq_norms(xs)
    chosen = [int(rng.integers(len(pool)))]
    d2 = sq_dist_to(xs, xs_n, xs[chosen[0]])
    for _ in range(1, k):
        j = d2_sample(d2, rng)
        if j < 0:  # every remaining point duplicates a centre
            free = np.setdiff1d(np.arange(len(pool)), chosen)
            j = int(rng.choice(free)) if len(free) else int(rng.integers(len(pool)))
        chosen.append(j)
        np.minimum(d2, sq_dist_to(xs, xs_n, xs[j]), out=d2)
    centres = xs[chosen].copy()
    assign = None
    for _ in range(max(1, iters)):
        _, new = nearest(fit, centres)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        centres = cluster_means(fit, assign, centres)
    if fit is not x:
        _, assign = nearest(x, centres)
        centres = cluster_means(x, assign, centres)
    return centres, assign


def d2_sample(weights: np.ndarray, rng: np.random.Generator) -> int:
    """Index drawn with probability proportional to non-negative ``weights`` ``(M,)``; -1 if they are all 0."""
    total = float(weights.sum())
    if not total > 0:
        return -1
    cum = np.cumsum(weights)
    j = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(weights) - 1)
    if weights[j] <= 0:  # round-off at the very end of the cumulative sum
        j = int(np.flatnonzero(weights > 0)[-1])
    return j


def cluster_means(x: np.ndarray, assign: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``(K, D)`` float32 means of ``x`` ``(N, D)`` per cluster of ``assign`` ``(N,)``; rows of ``old`` for empty clusters."""
    k, n = old.shape[0], len(assign)
    if k <= 16:  # few clusters (sub-clusterings): masked sums beat building a sparse matrix
        sums = np.stack([x[assign == j].sum(0, dtype=np.float64) for j in range(k)])
    else:
        onehot = scipy.sparse.csr_matrix((np.ones(n, dtype=np.float32), (assign, np.arange(n))), shape=(k, n))
        sums = np.asarray(onehot @ x)
    counts = np.bincount(assign, minlength=k)
    new = old.copy()
    filled = counts > 0
    new[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return new


def radius_graph(x: np.ndarray, delta: float, max_edges: int = 20_000_000, block_elems: int = BLOCK_ELEMS) -> tuple[np.ndarray, np.ndarray]:
    """Sparse symmetric graph of the ``delta``-balls: ``j`` is a neighbour of ``i`` iff ``||x_i - x_j|| <= delta``.

    Every item is its own neighbour. Only the upper triangle of blocks is computed and each pair is
    stored in both directions, so the graph is exactly symmetric whatever the float round-off.

    Args:
        x: ``(N, D)`` points.
        delta: ball radius, ``>= 0``.
        max_edges: refuse (``ConfigError``) graphs with more directed edges than this.

    Returns:
        CSR ``(indptr (N+1,) int64, indices (E,) int32)``: the neighbours of ``i`` are
        ``indices[indptr[i]:indptr[i+1]]``. Time ``O(N^2 D / 2)``, memory ``O(N + E + block)``
        (about 13 bytes per directed edge at the peak).
    """
    x = as_points(x)
    n, dim = x.shape
    xn = sq_norms(x)
    d2max = float(delta) ** 2
    rows = max(1, min(1024, int(np.sqrt(block_elems))))
    cols = max(rows, block_elems // rows)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    n_pairs = 0
    # ||a - b||^2 <= delta^2  <=>  a.b - ||b||^2 / 2 >= (||a||^2 - delta^2) / 2: one matmul of
    # augmented blocks [a, 1] . [b, -||b||^2 / 2], one comparison, no other pass over the block.
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        left = np.empty((r1 - r0, dim + 1), dtype=np.float32)
        left[:, :dim], left[:, dim] = x[r0:r1], 1.0
        thr = (0.5 * (xn[r0:r1] - d2max)).astype(np.float32)[:, None]
        for c0 in range(r0, n, cols):
            c1 = min(c0 + cols, n)
            right = np.empty((dim + 1, c1 - c0), dtype=np.float32)
            right[:dim], right[dim] = x[c0:c1].T, -0.5 * xn[c0:c1]
            mask = (left @ right) >= thr
            if c0 < r1:  # the block touches the diagonal: keep strictly upper pairs
                mask &= np.arange(c0, c1)[None, :] > np.arange(r0, r1)[:, None]
            flat = np.flatnonzero(mask)  # far faster than a 2-D nonzero on a sparse mask
            if len(flat):
                r, c = np.divmod(flat, c1 - c0)
                src.append((r + r0).astype(np.int32))
                dst.append((c + c0).astype(np.int32))
                n_pairs += len(flat)
                if 2 * n_pairs + n > max_edges:
                    raise ConfigError(
                        f"delta={delta:.4g} makes a ball graph with more than {max_edges} edges; "
                        "lower acquisition.params.delta (or k) or raise acquisition.params.max_edges"
                    )
    own = np.arange(n, dtype=np.int32)
    src_all = np.concatenate(src + dst + [own])
    dst_all = np.concatenate(dst + src + [own])
    del src, dst
    # COO -> CSR is a counting sort with int32 indices: ~13 bytes per edge at the peak.
    graph = scipy.sparse.csr_matrix((np.ones(len(src_all), dtype=np.int8), (src_all, dst_all)), shape=(n, n))
    return graph.indptr.astype(np.int64), graph.indices.astype(np.int32, copy=False)


def gather_neighbours(indptr: np.ndarray, indices: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``(sum of degrees,)`` int64: the concatenated CSR neighbour lists of ``items`` (with repeats)."""
    items = np.asarray(items, dtype=np.int64)
    if len(items) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = indptr[items]
    lengths = indptr[items + 1] - starts
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return indices[offsets + np.arange(int(lengths.sum()))].astype(np.int64)


def kth_neighbour_distance(
    x: np.ndarray, k: int, rng: np.random.Generator, n_sample: int = 2000, block_elems: int = BLOCK_ELEMS
) -> np.ndarray:
    """Distance from each of ``min(n_sample, N)`` random points to its ``k``-th nearest other point.

    Args:
        x: ``(N, D)`` points; ``k`` is clipped to ``[1, N - 1]``.

    Returns:
        ``(S,)`` float64 distances, ``S = min(n_sample, N)``. Time ``O(S N D)``, memory ``O(S k + block)``.
    """
    x = as_points(x)
    n = x.shape[0]
    if n < 2:
        return np.zeros(n)
    k = max(1, min(int(k), n - 1))
    sample = np.arange(n) if n <= n_sample else np.sort(rng.choice(n, size=n_sample, replace=False))
    q = x[sample]
    qn, xn = sq_norms(q), sq_norms(x)
    s = len(sample)
    best = np.full((s, k), np.inf, dtype=np.float32)
    cols = max(k + 1, block_elems // s)
    for c0 in range(0, n, cols):
        c1 = min(c0 + cols, n)
        d = q @ x[c0:c1].T
        d *= -2.0
        d += xn[c0:c1]
        d += qn[:, None]
        own = np.flatnonzero((sample >= c0) & (sample < c1))
        d[own, sample[own] - c0] = np.inf  # not its own neighbour
        both = np.concatenate([best, d], axis=1)
        best = np.partition(both, k - 1, axis=1)[:, :k]
    return np.sqrt(np.maximum(best.max(axis=1).astype(np.float64), 0.0))
