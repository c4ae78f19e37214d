"""Foreground-aware random sampling (nnActive, Lüth et al., TMLR 2025).

nnActive found that plain random sampling is a weak baseline for segmentation with a rare
foreground, and that random sampling biased towards foreground, as nnU-Net's training sampler
does (a share of patches centred on a foreground voxel), is one that active learning rarely beats.
Here the labels of the pool are unknown, so "foreground" is the task model's prediction:
``view.extras["foreground"]``, each item's predicted foreground share.
"""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView, Selection, masked_utilities, register
from dualstream.acquisition.extras import require_extra
from dualstream.errors import ConfigError

FOREGROUND_HINT = "the task stream supplies it from TaskStream/VerificationStream.pool_uncertainty (predicted foreground share)"


@register("foreground_random")
def foreground_random_acquisition(
    view: PoolView,
    batch_size: int,
    rng: np.random.Generator,
    fg_share: float = 0.33,
    min_foreground: float = 0.0,
) -> Selection:
    """Random candidates, a share ``fg_share`` of them drawn among predicted-foreground items.

    Foreground candidates are those with ``view.extras["foreground"]`` ``(N,)`` (predicted
    foreground share, in ``[0, 1]``) strictly above ``min_foreground`` (default 0: any predicted
    foreground pixel; for the detect task's proposals: p(True) > 0). The batch takes
    ``n_fg = fg_share * B`` foreground candidates uniformly at random, rounded stochastically
    (``floor`` plus one with probability the fractional part, so the expected share is exact and a
    batch of 1 is foreground with probability ``fg_share``, like nnU-Net's per-patch draw), then
    fills the rest uniformly among all remaining candidates (foreground or not). With fewer than
    ``n_fg`` foreground candidates all of them are taken and the rest is filled the same way.

    Default ``fg_share = 0.33``: nnU-Net's foreground oversampling share, which nnActive's
    foreground-aware random baselines build on (they also try larger shares; raise it for pools
    where the predicted foreground is very rare).

    Returns:
        ``(B,)`` indices, the foreground draws first; ``(N,)`` utilities = a uniform draw in
        ``[0, 1)`` plus 1 on foreground candidates (so foreground ranks first; the first ``n_fg``
        picks are the top of these utilities, the fill is the top of the plain draw among the
        rest), NaN on queried items.

    Raises:
        ConfigError: ``view.extras["foreground"]`` missing, or a parameter out of range.
    """
    if not 0.0 <= fg_share <= 1.0:
        raise ConfigError(f"acquisition.params.fg_share must be in [0, 1], got {fg_share}")
    if not 0.0 <= min_foreground < 1.0:
        raise ConfigError(f"acquisition.params.min_foreground must be in [0, 1), got {min_foreground}")
    fg = require_extra(view, "foreground", "foreground_random", FOREGROUND_HINT, ndim=1).astype(np.float64)
    cand = view.candidates
    draw = rng.random(len(view))
    is_fg = fg > min_foreground
    utilities = masked_utilities(draw + is_fg, cand)
    exact = fg_share * batch_size
    n_fg = int(np.floor(exact)) + int(rng.random() < exact - np.floor(exact))
    fg_cand = cand[is_fg[cand]]
    first = fg_cand[np.argsort(-draw[fg_cand], kind="stable")[: min(n_fg, batch_size)]]
    rest = np.setdiff1d(cand, first)
    fill = rest[np.argsort(-draw[rest], kind="stable")[: batch_size - len(first)]]
    return Selection(np.concatenate([first, fill]).astype(np.int64), utilities)
