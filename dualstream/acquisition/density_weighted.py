"""Information density (Settles & Craven 2008): uncertainty weighted by typicality, raw values."""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, register, top_indices


def minmax(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``(N,)`` float64: ``values`` min-max scaled to ``[0, 1]`` over ``candidates``, NaN elsewhere.

    A constant array maps to 1 (every candidate equally uncertain / typical).
    """
    out = np.full(values.shape[0], np.nan)
    v = values[candidates].astype(np.float64)
    lo, hi = v.min(), v.max()
    out[candidates] = (v - lo) / (hi - lo) if hi > lo else 1.0
    return out


@register("density_weighted")
def density_weighted_acquisition(view: PoolView, batch_size: int, rng: np.random.Generator, beta: float = 1.0) -> Selection:
    """Information density: ``u * t ** beta``, top-``B``, no batch diversity.

    ``u`` = ``view.uncertainty`` ``(N,)`` and ``t`` = ``view.typicality`` ``(N,)`` (the kNN density
    standing in for the paper's mean similarity to the pool), each min-max normalised to ``[0, 1]``
    over candidates. This differs from ``dualstream`` (:mod:`.core`), which multiplies rank
    percentiles (insensitive to units and outliers) and spreads the batch with k-means; here raw
    magnitudes count, so one extreme value dominates, and near-duplicates can fill the batch.

    Returns:
        ``(B,)`` indices, best first; ``(N,)`` utilities = ``u * t ** beta``, NaN on queried items.
    """
    cand = view.candidates
    u = minmax(np.asarray(view.uncertainty), cand)
    t = minmax(np.asarray(view.typicality), cand)
    utilities = u * t**beta
    return Selection(top_indices(utilities, cand, batch_size), utilities)
