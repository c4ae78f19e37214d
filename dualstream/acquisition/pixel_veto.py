"""Pixel veto: the cheap artifact baseline. Uncertainty sampling that never asks for pixel outliers.

Uncertainty sampling loves EM defects (blank, saturated, noisy, blurred tiles are exactly where the
task model is unsure) and every such query is wasted. This baseline needs no learned data stream:
an item whose simple pixel statistics (:mod:`dualstream.streams.pixel_stats`) are far from the
pool's is vetoed, the rest is ranked by uncertainty.
"""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, register
from dualstream.acquisition.extras import require_extra
from dualstream.errors import ConfigError
from dualstream.streams.pixel_stats import STAT_NAMES

#: Statistics that are positive scales (SD, gradient, Laplacian, spectral share): compared on a log
#: scale, where their right-skewed pool distributions are near-symmetric (without it the share of
#: flagged clean EPFL patches at a fixed ``z_max`` tripled between 10 nm and 5 nm pixels).
LOG_STATS = ("sd", "gradient", "laplacian", "hf_power")

#: Floor on each column's robust scale (in the statistic's units, or log units): a column that is
#: constant on most of the pool (saturated share 0 on a clean pool: MAD 0) must not flag an item
#: for one saturated pixel. At ``z_max = 3.5`` an item needs ~0.7% saturated pixels to be flagged.
MIN_SCALE = 0.002

LOG_EPS = 1e-6  # keeps log finite for a blank tile (SD, gradient, power 0), which it then flags


def robust_z(stats: np.ndarray) -> np.ndarray:
    """``(N, F)`` float64 robust z-scores ``(x - median) / max(1.4826 MAD, MIN_SCALE)``, per column.

    Args:
        stats: ``(N, F)`` :func:`~dualstream.streams.pixel_stats.pixel_statistics` of the pool, columns
            :data:`~dualstream.streams.pixel_stats.STAT_NAMES`; those in :data:`LOG_STATS` are
            log-transformed first. Median and MAD are over all ``N`` items (queried ones included:
            the statistics describe the pool, not the candidates).
    """
    x = np.array(stats, dtype=np.float64)
    logs = [STAT_NAMES.index(name) for name in LOG_STATS]
    x[:, logs] = np.log(np.maximum(x[:, logs], 0.0) + LOG_EPS)
    med = np.nanmedian(x, axis=0)
    mad = np.nanmedian(np.abs(x - med), axis=0)
    return (x - med) / np.maximum(1.4826 * mad, MIN_SCALE)


def pixel_outlying(view: PoolView, strategy: str) -> np.ndarray:
    """``(N,)`` float64 ``max |z|`` of each item's pixel statistics (:func:`robust_z`); NaN -> 1e12.

    Reads ``view.extras["pixel_stats"]`` ``(N, F)`` (the loop supplies it for every run).

    Raises:
        ConfigError: the extra is missing or not ``(N, F)`` with the columns of
            :data:`~dualstream.streams.pixel_stats.STAT_NAMES` (``strategy`` names the asker).
    """
    stats = require_extra(
        view, "pixel_stats", strategy, "compute dualstream.streams.pixel_stats.pixel_statistics(pool images) into the loop's extras", ndim=2
    )
    if stats.shape[1] != len(STAT_NAMES):
        raise ConfigError(
            f"acquisition '{strategy}' needs view.extras['pixel_stats'] with the {len(STAT_NAMES)} columns {STAT_NAMES}, got {stats.shape[1]}"
        )
    # NaN statistics (a broken image) count as maximally outlying: vetoed, yet finite in the utilities.
    return np.nan_to_num(np.abs(robust_z(stats)).max(axis=1), nan=1e12, posinf=1e12)


@register("pixel_veto")
def pixel_veto_acquisition(view: PoolView, batch_size: int, rng: np.random.Generator, z_max: float = 3.5) -> Selection:
    """Highest uncertainty among candidates whose pixel statistics are all within ``z_max`` robust SDs.

    An item is vetoed when ``max |z|`` over its statistics (:func:`robust_z` of
    ``view.extras["pixel_stats"]`` ``(N, F)``) exceeds ``z_max``. Non-vetoed candidates are taken
    by ``view.uncertainty``, highest first; vetoed ones only when nothing else is left, the least
    outlying first.

    Default ``z_max = 3.5``: on all 20 EPFL CA1 sections (64 x 64 patches) it flags 1.5% of the clean
    patches at 10 nm pixels and 1.4% at 5 nm (the benchmark's 15 pool sections: 0.3% at 10 nm, 2 of
    720, and 1.6% at 5 nm); with 10% simulated defects (``data.inject_artifacts``) it flags
    under 1% of the clean patches and every missing, saturated, noisy, blurred, striped and charged
    tile, and 75-100% of the folds (whose band can be narrow).

    Returns:
        ``(B,)`` indices; ``(N,)`` utilities: the uncertainty on kept candidates; on vetoed ones
        ``floor - max|z|`` with ``floor = min(0, lowest kept uncertainty)``, so every vetoed item
        ranks below every kept one and the least outlying first (finite, so they can still be
        explained and filled); NaN on queried items.

    Raises:
        ConfigError: ``view.extras["pixel_stats"]`` missing or not ``(N, F)``, or ``z_max <= 0``.
    """
    if not z_max > 0:
        raise ConfigError(f"acquisition.params.z_max must be > 0 (robust SDs), got {z_max}")
    outlying = pixel_outlying(view, "pixel_veto")
    cand = view.candidates
    u = view.uncertainty.astype(np.float64)
    kept = cand[outlying[cand] <= z_max]
    vetoed = cand[outlying[cand] > z_max]
    utilities = np.full(len(view), np.nan)
    utilities[kept] = u[kept]
    floor = min(0.0, float(u[kept].min())) if len(kept) else 0.0
    utilities[vetoed] = floor - outlying[vetoed]
    order = np.concatenate(
        [kept[np.argsort(-u[kept], kind="stable")], vetoed[np.argsort(outlying[vetoed], kind="stable")]]
    )
    return Selection(order[:batch_size].astype(np.int64), utilities)
