"""Acquisition functions: pure functions of arrays with one signature (see :mod:`.base`).

Importing this package registers every strategy in :data:`REGISTRY`.
"""

from dualstream.acquisition import core  # noqa: F401  (registers the strategies)
from dualstream.acquisition import (  # noqa: F401  (register the rest of the zoo)
    badge,
    coverage,
    density_weighted,
    dualstream_herding,
    dualstream_v2,
    foreground_random,
    pixel_veto,
    tasq,
    tcm,
    typiclust,
    uherding,
    uncertainty_variants,
)
from dualstream.acquisition.base import REGISTRY, PoolView, Selection, acquire, register

__all__ = ["REGISTRY", "PoolView", "Selection", "acquire", "register"]
