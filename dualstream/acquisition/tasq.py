"""TASQ (Lin et al., ECCV 2020, "Two Stream Active Query Suggestion"): two-level k-means, task then data stream."""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, register
from dualstream.acquisition.extras import require_extra
from dualstream.acquisition.geometry import as_points, kmeans, nearest
from dualstream.errors import ConfigError


def task_features(view: PoolView) -> np.ndarray:
    """``(N, D_t)`` task-stream features: ``view.extras["task_embedding"]`` if present, else ``view.uncertainty`` as ``(N, 1)``."""
    if "task_embedding" in view.extras:
        return require_extra(view, "task_embedding", "tasq", "supply (N, D) task embeddings", ndim=2)
    return np.asarray(view.uncertainty, dtype=np.float32).reshape(-1, 1)


@register("tasq")
def tasq_acquisition(
    view: PoolView,
    batch_size: int,
    rng: np.random.Generator,
    k1: int | None = None,
    k2: int = 2,
    covered: float = 0.5,
) -> Selection:
    """Two-stream query suggestion: cluster by what the model sees, sub-cluster by what the data looks like.

    1. k-means of the candidates' task features (:func:`task_features`) into ``k1`` clusters
       (default ``k1 = B``).
    2. Each queried item is assigned to its nearest task-cluster centre. A cluster is *well covered*
       and skipped when its queried share ``q / (q + m)`` exceeds ``covered`` (``q`` queried items
       assigned to it, ``m`` its candidates), i.e. by default when most of its region is already asked.
    3. Each cluster's candidates are k-means'ed in the data stream (``view.embedding`` ``(N, D)``) into
       ``min(k2, m)`` sub-clusters; the candidate nearest each sub-cluster centre is its query.
    4. Queries are taken cluster by cluster, largest (most candidates) first and, within a cluster,
       largest sub-cluster first, until ``B`` are chosen. If short: the queries of skipped clusters
       (least covered first), then the remaining candidates nearest their sub-cluster centre.

    No uncertainty term, as in the paper (uncertainty enters only as the fallback 1-D task feature).
    For speed on big pools the task-stream k-means iterates on ``max(50 k1, 20000)`` random
    candidates and then assigns all of them once (see :func:`.geometry.kmeans`); the sub-clusterings
    are exact. Time ``O(min(M, 50 k1) k1 D_t + M k2 D)`` per k-means iteration; memory ``O(N)``.

    Returns:
        ``(B,)`` indices in pick order; ``(N,)`` utilities = representativeness
        ``1 / (1 + distance to its data sub-cluster centre)``, 0 in skipped clusters, NaN on queried items.
    """
    k1 = batch_size if k1 is None else int(k1)
    if k1 < 1 or int(k2) < 1:
        raise ConfigError(f"acquisition.params.k1 and k2 must be >= 1 (k1 null = batch size), got k1={k1}, k2={k2}")
    cand = view.candidates
    m = len(cand)
    k1 = min(k1, m)
    feats = as_points(task_features(view))
    centres, assign = kmeans(feats[cand], k1, rng, fit_sample=max(50 * k1, 20_000))
    queried = np.flatnonzero(view.queried)
    n_q = np.zeros(k1, dtype=np.int64)
    if len(queried):
        _, q_assign = nearest(feats[queried], centres)
        n_q = np.bincount(q_assign, minlength=k1)
    n_c = np.bincount(assign, minlength=k1)
    share = n_q / np.maximum(n_q + n_c, 1)
    skipped = share > covered

    emb = view.embedding
    sub_dist = np.zeros(m)  # distance of every candidate to its own sub-cluster centre
    reps: list[list[int]] = [[] for _ in range(k1)]  # candidate positions, largest sub-cluster first
    order = np.argsort(assign, kind="stable")
    bounds = np.flatnonzero(np.diff(assign[order])) + 1
    for members in np.split(order, bounds):
        if len(members) == 0:
            continue
        c = int(assign[members[0]])
        points = as_points(emb[cand[members]])
        sub_centres, sub_assign = kmeans(points, min(int(k2), len(members)), rng)
        d2 = ((points - sub_centres[sub_assign]) ** 2).sum(1, dtype=np.float64)
        sub_dist[members] = np.sqrt(d2)
        sub_sizes = np.bincount(sub_assign, minlength=len(sub_centres))
        for s in np.argsort(-sub_sizes, kind="stable"):
            inside = np.flatnonzero(sub_assign == s)
            if len(inside):
                reps[c].append(int(members[inside[np.argmin(d2[inside])]]))

    by_size = np.argsort(-n_c, kind="stable")
    picked = [p for c in by_size if not skipped[c] for p in reps[c]]
    picked += [p for c in np.lexsort((-n_c, share)) if skipped[c] for p in reps[c]]
    if len(picked) < batch_size:
        chosen = np.zeros(m, dtype=bool)
        chosen[picked] = True
        rest = np.flatnonzero(~chosen)
        picked += rest[np.argsort(sub_dist[rest], kind="stable")].tolist()
    picked = picked[:batch_size]

    utilities = np.full(len(view), np.nan)
    utilities[cand] = np.where(skipped[assign], 0.0, 1.0 / (1.0 + sub_dist))
    return Selection(cand[np.asarray(picked, dtype=np.int64)], utilities)
