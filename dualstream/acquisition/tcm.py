"""TCM (Doucet et al. 2024): TypiClust while the labelled set is small, then margin sampling.

Diversity sampling (TypiClust) avoids the cold start of uncertainty sampling at tiny budgets; once
the model has seen enough of the data, uncertainty (margin) refines it. The switch is decided per
round from the number of items already queried.
"""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, register
from dualstream.acquisition.diversity import select_by_utility
from dualstream.acquisition.typiclust import typiclust_acquisition
from dualstream.errors import ConfigError


@register("tcm")
def tcm_acquisition(
    view: PoolView,
    batch_size: int,
    rng: np.random.Generator,
    transition: int = 32,
    k: int = 20,
    max_clusters: int = 500,
    min_cluster_size: int = 5,
    fit_per_cluster: int = 50,
) -> Selection:
    """TypiClust while fewer than ``transition`` items are queried, then smallest-margin sampling.

    The whole round uses one part, decided by ``Q = view.queried.sum()`` before the round:
    ``Q < transition`` runs :func:`~dualstream.acquisition.typiclust.typiclust_acquisition` (with
    ``k, max_clusters, min_cluster_size, fit_per_cluster``); ``Q >= transition`` takes the top-``B``
    candidates by ``view.extras["margin"]`` ``(N,)`` (higher = smaller margin), or by
    ``view.uncertainty`` when the task stream supplied no margin.

    Default ``transition = 32``: the paper switches once the low-budget regime is over, which its
    pre-trained embeddings make early; on our doubling budgets (4 -> 128 patches, ``mito_epfl``)
    that is TypiClust for the rounds up to 32 labels and margin for 32 -> 64 -> 128.

    Returns:
        ``(B,)`` indices; ``(N,)`` utilities of the part that ran (within-cluster typicality, or the
        margin score), NaN on queried items.
    """
    if int(transition) < 0:
        raise ConfigError(f"acquisition.params.transition must be >= 0 (queried items), got {transition}")
    if int(view.queried.sum()) < int(transition):
        return typiclust_acquisition(view, batch_size, rng, k, max_clusters, min_cluster_size, fit_per_cluster)
    scores = view.extras["margin"] if "margin" in view.extras else view.uncertainty
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(view),):
        raise ConfigError(f"acquisition 'tcm' needs view.extras['margin'] of shape (N,) with N={len(view)}, got {scores.shape}")
    return select_by_utility(view, scores, batch_size, rng, diverse=False, factor=1)
