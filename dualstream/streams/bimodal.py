"""A pool-relative outlier rule: is a score's distribution two well-separated groups, and which items form the upper one?

A fixed threshold on the embedding's LOF-style outlier z cannot serve every pool (BENCHMARKS.md §3,
``experiments/scripts/veto_calibration.py``): the clean pool's own tail reaches z = 3.4-4.4 while a
pool contaminated by a whole corrupted section scores its defects lower, because a robust z is relative
to a spread the contamination widens. Within a contaminated pool, though, the defects form a separate
mode of the score. So the rule here asks the pool itself: fit two Gaussians to the scores (EM, 1-D) and
flag the upper component only when the two are far apart (Ashman's D, the distance of the means in
units of their pooled SD, above ``min_separation``; D > 2 is the usual mark of a clean split) and the
upper one is a minority (at most ``max_share`` of the items). A clean pool's skewed tail gives D < 2
and nothing is flagged.

Pure numpy; deterministic (the EM starts from quantiles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TwoGaussians:
    """A fitted two-component 1-D mixture; component 1 has the larger mean.

    Attributes:
        means, sds, weights: ``(2,)`` float64.
        upper: ``(N,)`` float64 posterior probability of component 1 for each input value (NaN input: 0).
        separation: Ashman's D, ``|mean1 - mean0| / sqrt((sd0^2 + sd1^2) / 2)``.
    """

    means: np.ndarray
    sds: np.ndarray
    weights: np.ndarray
    upper: np.ndarray
    separation: float


def _pdf(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))


def two_gaussians(values: np.ndarray, iters: int = 500, tol: float = 1e-9) -> TwoGaussians:
    """EM fit of two Gaussians to ``values`` ``(N,)`` (non-finite values are left out of the fit).

    Starts with the means at the 25th and 90th percentiles (the maximum when those tie), so the
    result depends on the data alone. Each SD is kept above 1e-6 of the data's range so that a group
    of identical values cannot collapse a component to zero width.
    """
    raw = np.asarray(values, dtype=np.float64).ravel()
    ok = np.isfinite(raw)
    x = raw[ok]
    if x.size < 4 or np.ptp(x) == 0:
        flat = np.zeros(raw.shape)
        m = float(x.mean()) if x.size else 0.0
        return TwoGaussians(np.array([m, m]), np.ones(2), np.array([1.0, 0.0]), flat, 0.0)
    floor = 1e-6 * float(np.ptp(x))
    means = np.array([np.percentile(x, 25), np.percentile(x, 90)])
    if means[1] <= means[0]:  # over 65% ties (a minority of identical outliers): start the upper at the maximum
        means[1] = x.max()
    sds = np.full(2, max(x.std() / 2, floor))
    weights = np.array([0.5, 0.5])
    last = -np.inf
    for _ in range(iters):
        dens = np.stack([w * _pdf(x, m, s) for w, m, s in zip(weights, means, sds)]) + 1e-300
        total = dens.sum(0)
        loglik = float(np.log(total).sum())
        resp = dens / total
        n_k = resp.sum(1)
        weights = n_k / x.size
        means = (resp @ x) / n_k
        sds = np.sqrt(np.maximum((resp * (x[None] - means[:, None]) ** 2).sum(1) / n_k, floor**2))
        if loglik - last < tol * abs(loglik):
            break
        last = loglik
    order = np.argsort(means)
    means, sds, weights = means[order], sds[order], weights[order]
    dens = np.stack([w * _pdf(x, m, s) for w, m, s in zip(weights, means, sds)]) + 1e-300
    upper = np.zeros(raw.shape)
    upper[ok] = dens[1] / dens.sum(0)
    separation = float(abs(means[1] - means[0]) / np.sqrt((sds[0] ** 2 + sds[1] ** 2) / 2))
    return TwoGaussians(means, sds, weights, upper, separation)


def bimodal_upper(values: np.ndarray, min_separation: float = 3.0, max_share: float = 0.3) -> tuple[np.ndarray, TwoGaussians]:
    """``(N,)`` bool: the items of the upper mode of ``values``, when there is a clearly separate one.

    Flagged: posterior of the upper component > 0.5 and value above the lower component's mean,
    provided the fit's separation is at least ``min_separation`` and the upper component's weight at
    most ``max_share``; otherwise nothing. Also returns the fit (for logging and audits).
    """
    fit = two_gaussians(values)
    v = np.nan_to_num(np.asarray(values, dtype=np.float64).ravel(), nan=-np.inf)
    if fit.separation < min_separation or fit.weights[1] > max_share:
        return np.zeros(v.shape, dtype=bool), fit
    return (fit.upper > 0.5) & (v > fit.means[0]), fit
