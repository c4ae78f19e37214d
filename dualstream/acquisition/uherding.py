"""Uncertainty Herding (Bae et al., ICLR 2025): greedy uncertainty-weighted kernel coverage.

The objective, over the pool ``i = 1..N`` with the queried set ``L`` and the batch ``S``::

    UC(S) = sum_i w_i * max_{s in S ∪ L} k(x_i, x_s),   k(x, y) = exp(-||x - y||^2 / (2 sigma^2))

rewards picks that sit where many uncertain items are not yet covered by a labelled neighbour:
with flat weights it is kernel coverage (a low-budget, representative choice), with a small kernel
it is close to uncertainty sampling. It is monotone submodular (a weighted facility location), so
greedy picks are near-optimal and a candidate's gain can only shrink as ``S`` grows, which makes
the lazy greedy below exact.
"""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, register
from dualstream.acquisition.core import rank_percentile
from dualstream.acquisition.geometry import BLOCK_ELEMS, as_points, kth_neighbour_distance, nearest, sq_dist_to, sq_norms
from dualstream.errors import ConfigError


def uncertainty_weights(uncertainty: np.ndarray) -> np.ndarray:
    """``(N,)`` float64 weights in ``[0, 1]``: the uncertainty divided by its maximum.

    A pure rescaling keeps the paper's objective (weighted by the raw uncertainty) up to a constant
    factor; values are first shifted up if any is negative; an all-zero uncertainty (no task model
    signal) gives weight 1 everywhere, i.e. plain kernel coverage.
    """
    u = np.nan_to_num(np.asarray(uncertainty, dtype=np.float64), nan=0.0)
    u = u - min(0.0, float(u.min())) if len(u) else u
    top = float(u.max()) if len(u) else 0.0
    return u / top if top > 0 else np.ones_like(u)


def kernel_gains(
    x: np.ndarray,
    x_norms: np.ndarray,
    weights: np.ndarray,
    coverage: np.ndarray,
    targets: np.ndarray,
    inv_two_sigma2: float,
    block_elems: int = BLOCK_ELEMS,
) -> np.ndarray:
    """``(T,)`` float64 marginal gain ``sum_i w_i max(k(x_i, x_t) - c_i, 0)`` of adding each target.

    Args:
        x: ``(N, D)`` float32 points; ``x_norms`` their :func:`~.geometry.sq_norms`.
        weights: ``(N,)`` ``w_i``; ``coverage``: ``(N,)`` current ``c_i = max_s k(x_i, x_s)``.
        targets: ``(T,)`` int indices into ``x``.

    Blockwise over rows: memory ``O(block_elems)`` floats, never ``N x T``; time ``O(N T D)``.
    """
    t = x[targets]
    t_t = np.ascontiguousarray(t.T)
    t_norms = x_norms[targets]
    n = x.shape[0]
    gains = np.zeros(len(targets))
    rows = max(1, block_elems // max(1, len(targets)))
    w32 = weights.astype(np.float32)
    c32 = coverage.astype(np.float32)
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        k = x[r0:r1] @ t_t
        k *= 2.0
        k -= x_norms[r0:r1, None]
        k -= t_norms[None, :]
        np.minimum(k, 0.0, out=k)  # = -squared distance, clamped at 0 distance
        k *= inv_two_sigma2
        np.exp(k, out=k)
        k -= c32[r0:r1, None]
        np.maximum(k, 0.0, out=k)
        gains += (w32[r0:r1] @ k).astype(np.float64)
    return gains


def auto_sigma(embedding: np.ndarray, k: int, rng: np.random.Generator, n_sample: int = 2000) -> float:
    """Kernel width: median distance to the ``k``-th nearest neighbour over ``min(n_sample, N)`` items.

    Deviation: the paper tunes the width (and shrinks it as the budget grows); the median kNN
    distance gives each kernel about ``k`` neighbours within one width, needs no tuning and costs
    ``O(S N D)``. Falls back to 1 when every sampled item has ``k`` exact duplicates.
    """
    sigma = float(np.median(kth_neighbour_distance(embedding, k, rng, n_sample)))
    return sigma if sigma > 0 else 1.0


@register("uherding")
def uherding_acquisition(
    view: PoolView,
    batch_size: int,
    rng: np.random.Generator,
    sigma: float | None = None,
    k: int = 10,
    sigma_sample: int = 500,
    shortlist: int = 1000,
    lazy_block: int = 16,
) -> Selection:
    """Uncertainty Herding: greedy picks maximising the gain in uncertainty-weighted kernel coverage.

    ``w_i`` = :func:`uncertainty_weights` of ``view.uncertainty``; Gaussian kernel of width ``sigma``
    in ``view.embedding`` ``(N, D)`` (``None`` = :func:`auto_sigma` with ``k``, ``sigma_sample``).
    The coverage vector ``c`` ``(N,)`` starts at ``max_{l in L} k(x_i, x_l)`` over the queried
    items (0 if none) and is raised after each pick; nothing ``N x N`` is ever formed.

    Candidates: all of them when there are at most ``shortlist``, else the ``shortlist`` best by
    ``pct(uncertainty) * pct(typicality) * (1 - c)`` (percentile ranks among candidates: uncertain,
    dense, not yet covered: the items whose gain is likely large); always at least ``B``.

    Lazy greedy, exact for this submodular objective: all shortlisted gains are computed once
    (``O(C N D)``, ``C`` = shortlist); each step re-evaluates only stale candidates whose old gain
    (an upper bound) still tops the list, ``lazy_block`` at a time (``O(lazy_block N D)``), and takes
    the top once it is fresh; a pick updates ``c`` in ``O(N D)``. Worst case ``O(B C N D)`` time;
    memory ``O(N + C + BLOCK_ELEMS)``. Deviations: no temperature scaling of the uncertainty and no
    budget-dependent kernel width (the paper's calibration steps).

    Returns:
        ``(B,)`` indices in pick order; ``(N,)`` utilities = each shortlisted candidate's gain
        before the first pick, 0 on candidates off the shortlist (not evaluated), NaN on queried items.

    Raises:
        ConfigError: ``sigma <= 0``, ``shortlist < 1`` or ``lazy_block < 1``.
    """
    return herd(view, batch_size, rng, uncertainty_weights(view.uncertainty), view.candidates, sigma, k, sigma_sample, shortlist, lazy_block)


def herd(
    view: PoolView,
    batch_size: int,
    rng: np.random.Generator,
    weights: np.ndarray,
    candidates: np.ndarray,
    sigma: float | None = None,
    k: int = 10,
    sigma_sample: int = 500,
    shortlist: int = 1000,
    lazy_block: int = 16,
) -> Selection:
    """The lazy-greedy herding of :func:`uherding_acquisition` with given ``weights`` ``(N,)`` (``w_i``)
    over given ``candidates`` ``(M,)`` (a subset of ``view.candidates``, at least ``batch_size``).

    Returns the picks in order; utilities are NaN on queried items, 0 on candidates not evaluated.
    """
    if sigma is not None and not float(sigma) > 0:
        raise ConfigError(f"acquisition.params.sigma must be > 0 or null (auto), got {sigma}")
    if int(shortlist) < 1 or int(lazy_block) < 1:
        raise ConfigError(f"acquisition.params.shortlist and lazy_block must be >= 1, got {shortlist}, {lazy_block}")
    x = as_points(view.embedding)
    xn = sq_norms(x)
    width = auto_sigma(x, k, rng, sigma_sample) if sigma is None else float(sigma)
    inv = 1.0 / (2.0 * width * width)
    w = np.asarray(weights, dtype=np.float64)
    cand = np.asarray(candidates, dtype=np.int64)
    queried = np.flatnonzero(view.queried)
    coverage = np.zeros(len(view))
    if len(queried):
        d2, _ = nearest(x, x[queried])
        coverage = np.exp(-d2 * inv)

    size = max(int(shortlist), batch_size)
    if len(cand) <= size:
        short = cand
    else:
        proxy = rank_percentile(view.uncertainty.astype(np.float64), cand) * rank_percentile(
            view.typicality.astype(np.float64), cand
        )
        proxy[cand] *= 1.0 - coverage[cand]
        short = np.sort(cand[np.argsort(-proxy[cand], kind="stable")[:size]])

    bound = kernel_gains(x, xn, w, coverage, short, inv)
    utilities = np.full(len(view), np.nan)
    utilities[view.candidates] = 0.0
    utilities[short] = bound
    fresh = np.ones(len(short), dtype=bool)
    alive = np.ones(len(short), dtype=bool)
    picks: list[int] = []
    while len(picks) < batch_size:
        live = np.where(alive, bound, -np.inf)
        j = int(np.argmax(live))  # first index on ties: the lowest pool index (short is sorted)
        if not fresh[j]:
            top = np.argsort(-live, kind="stable")[: int(lazy_block)]
            stale = top[~fresh[top] & alive[top]]
            bound[stale] = kernel_gains(x, xn, w, coverage, short[stale], inv)
            fresh[stale] = True
            continue
        p = int(short[j])
        picks.append(p)
        alive[j] = False
        np.maximum(coverage, np.exp(-sq_dist_to(x, xn, x[p]) * inv), out=coverage)
        fresh[:] = False
    return Selection(np.asarray(picks, dtype=np.int64), utilities)
