"""BADGE (Ash et al. 2020): k-means++ seeding over the task model's gradient embeddings."""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, register
from dualstream.acquisition.extras import require_extra
from dualstream.acquisition.geometry import as_points, d2_sample, sq_dist_to, sq_norms


@register("badge")
def badge_acquisition(view: PoolView, batch_size: int, rng: np.random.Generator) -> Selection:
    """Batch Active learning by Diverse Gradient Embeddings.

    Reads ``view.extras["grad_embedding"]`` ``(N, D)`` (the last layer's loss gradient under the
    model's own hard label, supplied by the task stream). Restricted to candidates: the first pick
    is the largest-norm embedding (as in the authors' code), every next one is drawn with
    probability proportional to its squared distance to the nearest pick so far (k-means++ ``D^2``
    sampling, with ``rng``). Large norm = uncertain, spread = diverse. One ``(M,)`` distance vector is
    updated per pick: time ``O(M B D)``, memory ``O(M D)`` for the candidates' embeddings.

    Returns:
        ``(B,)`` indices in pick order; ``(N,)`` utilities = the gradient-embedding norm, NaN on
        queried items.
    """
    g = require_extra(
        view, "grad_embedding", "badge", "the task stream must supply per-item last-layer gradient embeddings (N, D)", ndim=2
    )
    cand = view.candidates
    x = as_points(g[cand])
    xn = sq_norms(x)
    norms = np.sqrt(xn.astype(np.float64))
    utilities = np.full(len(view), np.nan)
    utilities[cand] = norms
    first = int(np.argmax(norms))
    chosen = [first]
    d2 = sq_dist_to(x, xn, x[first])
    d2[first] = 0.0
    while len(chosen) < batch_size:
        j = d2_sample(d2, rng)
        if j < 0:  # all remaining embeddings coincide with a pick: uniform among the unpicked
            j = int(rng.choice(np.setdiff1d(np.arange(len(cand)), chosen)))
        chosen.append(j)
        np.minimum(d2, sq_dist_to(x, xn, x[j]), out=d2)
        d2[chosen] = 0.0
    return Selection(cand[np.asarray(chosen, dtype=np.int64)], utilities)
