"""Batch diversity: k-means over the top candidates, then the best items of distinct clusters.

Top-``B`` by utility alone fills a batch with near-duplicates (one uncertain structure tiled many
times). Clustering the ``factor * B`` best candidates in the frozen embedding and taking the best of
each cluster keeps the batch spread out at ``O(M B D)`` cost, ``M = factor * B``.

The shortlist is over-clustered (``2B`` clusters) and the ``B`` best cluster representatives win:
with exactly ``B`` clusters an isolated low-utility point would own a cluster and always be picked.
"""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, masked_utilities, top_indices


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding.

    Args:
        x: ``(M, D)`` float points; ``k <= M``.

    Returns:
        ``(centres (k, D), assignment (M,) int64)``.
    """
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[0]
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(m)]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for j in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(m, 1.0 / m)
        centres[j] = x[rng.choice(m, p=p)]
        d2 = np.minimum(d2, ((x - centres[j]) ** 2).sum(1))
    assign = np.zeros(m, dtype=np.int64)
    for _ in range(iters):
        dist = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)[None]
        new = dist.argmin(1)
        if _ > 0 and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):
                centres[j] = members.mean(0)
    return centres, assign


def diverse_top(
    utilities: np.ndarray,
    embedding: np.ndarray,
    candidates: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    factor: int = 10,
) -> np.ndarray:
    """Pick ``batch_size`` high-utility, mutually diverse candidates.

    Args:
        utilities: ``(N,)`` score, higher is better.
        embedding: ``(N, D)`` space in which diversity is measured.
        candidates: ``(M,)`` indices allowed.
        factor: shortlist size as a multiple of the batch.

    Returns:
        ``(batch_size,)`` int64 indices, highest utility first, at most one per cluster.
    """
    order = np.argsort(-utilities[candidates], kind="stable")
    shortlist = candidates[order[: max(batch_size, factor * batch_size)]]
    if len(shortlist) <= batch_size:
        return shortlist
    n_clusters = min(len(shortlist), 2 * batch_size)
    _, assign = kmeans(embedding[shortlist], n_clusters, rng)
    reps = []
    for j in range(n_clusters):
        members = shortlist[assign == j]
        if len(members):
            reps.append(members[np.argmax(utilities[members])])
    reps = np.asarray(reps, dtype=np.int64)
    chosen = reps[np.argsort(-utilities[reps], kind="stable")][:batch_size]
    if len(chosen) < batch_size:  # empty clusters (duplicate points): fill with the best remaining items
        taken = set(chosen.tolist())
        rest = [i for i in shortlist if i not in taken]
        chosen = np.concatenate([chosen, np.asarray(rest[: batch_size - len(chosen)], dtype=np.int64)])
    return chosen


def select_by_utility(
    view: PoolView,
    utilities: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    diverse: bool,
    factor: int,
    exclude: np.ndarray | None = None,
) -> Selection:
    """The selection step shared by score-based strategies: top-``B`` by ``utilities`` ``(N,)``, or
    :func:`diverse_top` in the frozen embedding when ``diverse``; utilities reported NaN on queried items.

    ``exclude`` ``(N,)`` bool: candidates taken only when too few others remain (then by utility,
    highest first), e.g. items a quality screen rules out; they never enter the diverse shortlist.
    """
    cand = view.candidates
    kept = cand if exclude is None else cand[~np.asarray(exclude, dtype=bool)[cand]]
    if diverse:
        idx = diverse_top(utilities, view.embedding, kept, batch_size, rng, factor)
    else:
        idx = top_indices(utilities, kept, batch_size)
    if len(idx) < batch_size and len(kept) < len(cand):
        rest = np.setdiff1d(cand, kept)
        rest = rest[np.argsort(-utilities[rest], kind="stable")][: batch_size - len(idx)]
        idx = np.concatenate([np.asarray(idx, dtype=np.int64), rest.astype(np.int64)])
    return Selection(idx, masked_utilities(utilities, cand))
