"""Uncertainty sampling with other per-item scores: margin, least confidence, BALD.

Each reads one ``(N,)`` float array from ``view.extras`` (higher = more uncertain), computed by the
task stream, and takes the top-``B`` candidates (optionally spread by k-means diversity, as the
``uncertainty`` strategy). A missing key is a configuration mistake and raises :class:`ConfigError`.
"""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, register
from dualstream.acquisition.diversity import select_by_utility
from dualstream.acquisition.extras import require_extra

HINTS = {
    "margin": "enable margin scores in the task stream (per-item 1 - |p(fg) - p(bg)|)",
    "least_confidence": "enable least-confidence scores in the task stream (per-item 1 - max class probability)",
    "bald": "set acquisition.mc_samples > 1 (BALD needs MC-dropout samples of the task model)",
}


def _score_sampling(
    view: PoolView, key: str, batch_size: int, rng: np.random.Generator, diverse: bool, factor: int
) -> Selection:
    """Top-``B`` candidates by ``view.extras[key]`` ``(N,)``; utilities ``(N,)`` = that score, NaN on queried."""
    scores = require_extra(view, key, key, HINTS[key], ndim=1).astype(np.float64)
    return select_by_utility(view, scores, batch_size, rng, diverse, factor)


@register("margin")
def margin_acquisition(view: PoolView, batch_size: int, rng: np.random.Generator, diverse: bool = False, factor: int = 10) -> Selection:
    """Smallest-margin sampling: top ``view.extras["margin"]`` ``(N,)`` (higher = smaller margin = more uncertain).

    Returns ``(B,)`` indices and ``(N,)`` utilities = the margin score (NaN on queried items).
    """
    return _score_sampling(view, "margin", batch_size, rng, diverse, factor)


@register("least_confidence")
def least_confidence_acquisition(
    view: PoolView, batch_size: int, rng: np.random.Generator, diverse: bool = False, factor: int = 10
) -> Selection:
    """Least-confidence sampling: top ``view.extras["least_confidence"]`` ``(N,)`` (higher = less confident).

    Returns ``(B,)`` indices and ``(N,)`` utilities = that score (NaN on queried items).
    """
    return _score_sampling(view, "least_confidence", batch_size, rng, diverse, factor)


@register("bald")
def bald_acquisition(view: PoolView, batch_size: int, rng: np.random.Generator, diverse: bool = False, factor: int = 10) -> Selection:
    """BALD (Houlsby et al. 2011): top mutual information ``view.extras["bald"]`` ``(N,)`` from MC-dropout samples.

    Returns ``(B,)`` indices and ``(N,)`` utilities = the BALD score (NaN on queried items).
    """
    return _score_sampling(view, "bald", batch_size, rng, diverse, factor)
