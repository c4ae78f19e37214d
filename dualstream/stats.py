"""Paired statistics over seeds: how sure is a difference between two settings measured on the same seeds?

Two settings run with the same seeds share the random initial set, the model initialisation and the
data split, so their per-seed values are *paired*; the difference within a seed removes that shared
noise. Everything here works on those per-seed differences ``d = a - b``:

- :func:`paired_difference`: the mean difference, its sample spread, a bootstrap percentile confidence
  interval for the mean and a two-sided Wilcoxon signed-rank p-value.
- :func:`seeds_needed`: how many seeds a paired test would need to resolve a given effect at the
  spread measured so far (normal approximation).
- :func:`mean_ci`: a Student-t confidence interval for the mean of one setting's values.
- :func:`holm`: Holm-Bonferroni adjusted p-values for a family of comparisons (several settings
  against one reference), so a "winner" can be claimed at a family-wise error rate.

Pure functions of numpy arrays (scipy for the test and the quantiles); nothing here reads files.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats as _st

ALPHA = 0.05  # significance level behind ``significant`` (two-sided, uncorrected for multiple comparisons)


def paired_difference(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    rng: np.random.Generator | int | None = 0,
    n_boot: int = 10000,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Compare two settings over paired values (one per seed, same order in ``a`` and ``b``).

    Args:
        a: ``(n,)`` float values of the setting under test, one per seed.
        b: ``(n,)`` float values of the reference, same seeds in the same order.
        rng: generator or integer seed for the bootstrap; the default 0 makes the interval deterministic.
        n_boot: bootstrap resamples.
        ci: confidence level of the interval.

    Returns:
        A dict (plain Python types, ``None`` where undefined):

        - ``n``: number of pairs.
        - ``mean_diff``: mean of ``d = a - b`` (positive: ``a`` is higher).
        - ``sd_diff``: sample standard deviation of ``d`` (``ddof=1``); ``None`` when ``n < 2``.
        - ``ci_low``, ``ci_high``: percentile bootstrap interval of the mean of ``d``: resample the
          ``n`` differences with replacement ``n_boot`` times and take the ``(1-ci)/2`` and
          ``(1+ci)/2`` quantiles of the resampled means. ``None`` when ``n < 2`` (one value says
          nothing about its spread). With fewer than about 10 pairs the percentile interval is too
          narrow (it cannot reach beyond the observed differences), so read it with the p-value.
        - ``p_value``: two-sided Wilcoxon signed-rank test of "the differences are symmetric around
          0" (scipy's default: zero differences dropped, exact distribution for small ``n`` without
          ties, normal approximation otherwise). ``None`` when ``n < 2``; ``1.0`` when every
          difference is exactly 0 (no evidence of any difference). Note that the exact test cannot go
          below ``2 / 2**n``: with 5 or fewer pairs no result is significant at 0.05.
        - ``significant``: ``p_value < 0.05`` (``False`` when ``p_value`` is ``None``).
        - ``wins``, ``ties``, ``losses``: counts of ``d > 0``, ``d == 0``, ``d < 0``.

    Raises:
        ValueError: ``a`` and ``b`` differ in length, or hold NaN / infinite values.
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: a has {a.size} values but b has {b.size}; pass one value per seed in both")
    d = a - b
    if not np.all(np.isfinite(d)):
        raise ValueError("paired_difference: NaN or infinite values; drop those seeds before pairing")
    n = int(d.size)
    out: dict[str, Any] = {
        "n": n,
        "mean_diff": float(d.mean()) if n else None,
        "sd_diff": float(d.std(ddof=1)) if n >= 2 else None,
        "ci_low": None,
        "ci_high": None,
        "ci": ci,
        "p_value": None,
        "significant": False,
        "wins": int((d > 0).sum()),
        "ties": int((d == 0).sum()),
        "losses": int((d < 0).sum()),
    }
    if n < 2:
        return out
    gen = np.random.default_rng(rng)
    means = d[gen.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2])
    out["ci_low"], out["ci_high"] = float(lo), float(hi)
    if np.all(d == 0):
        out["p_value"] = 1.0  # scipy divides by a zero variance here; no difference at all is p = 1
    else:
        with warnings.catch_warnings():
            # scipy warns when it falls back to the normal approximation (ties, zeros); documented above.
            warnings.simplefilter("ignore", UserWarning)
            out["p_value"] = float(_st.wilcoxon(d, alternative="two-sided").pvalue)
    out["significant"] = bool(out["p_value"] < ALPHA)
    return out


def seeds_needed(
    sd_of_differences: float | None, effect: float = 0.02, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Seeds (pairs) a paired test needs to detect a mean difference of ``effect``.

    Normal approximation for a two-sided paired test::

        n = ceil(((z[1 - alpha/2] + z[power]) * sd / effect) ** 2)

    with ``z[q]`` the standard normal quantile (1.96 and 0.84 by default: ``n ~ 7.85 (sd/effect)^2``).
    It ignores the t correction and the Wilcoxon test's slightly lower efficiency (about 95% of the
    t-test's for normal data), so treat it as a lower bound; it is at least 2 and, for the exact
    Wilcoxon test at 0.05, at least 6 pairs are needed whatever the spread.

    Args:
        sd_of_differences: sample SD of the per-seed differences measured so far.
        effect: the difference to resolve (same units, e.g. 0.02 AULC).
        alpha: two-sided significance level.
        power: probability of detecting a true difference of ``effect``.

    Returns:
        The number of seeds, or ``None`` when the spread is unknown (``None``/NaN, i.e. fewer than 2 seeds).

    Raises:
        ValueError: ``effect <= 0``, ``alpha`` or ``power`` outside (0, 1), or a negative spread.
    """
    if not effect > 0 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"seeds_needed: need effect > 0 and alpha, power in (0, 1); got {effect}, {alpha}, {power}")
    if sd_of_differences is None or math.isnan(sd_of_differences):
        return None
    if sd_of_differences < 0:
        raise ValueError(f"seeds_needed: a standard deviation cannot be negative ({sd_of_differences})")
    z = _st.norm.ppf(1 - alpha / 2) + _st.norm.ppf(power)
    return max(2, math.ceil((z * sd_of_differences / effect) ** 2))


def mean_ci(values: np.ndarray | list[float], ci: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean of ``(n,)`` values: ``mean +- t[n-1] * sd / sqrt(n)``.

    Used for one setting's AULC over seeds (the bar chart). Unlike the bootstrap percentile interval
    it widens honestly for few seeds. ``None`` when fewer than 2 finite values.
    """
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None
    half = _st.t.ppf((1 + ci) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the order given; ``None`` (untested) stays ``None``.

    With the ``m`` tested p-values sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``
    (1-based ``j``); rejecting where the adjusted p < alpha controls the family-wise error rate at alpha,
    and is never less powerful than plain Bonferroni (``m p``). E.g. ``[0.01, 0.04, 0.03]`` ->
    ``[0.03, 0.06, 0.06]``.
    """
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    out: list[float | None] = [None] * len(p_values)
    m = len(tested)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
