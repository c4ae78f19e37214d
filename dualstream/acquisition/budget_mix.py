"""Budget-aware weight of the data stream: full at small budgets, none at large ones.

Coverage of the data leads while few items are labelled and uncertainty takes over later (Hacohen et
al. 2022, "cold start"; TypiClust-then-margin, Doucet et al. 2024), so a strategy that multiplies the
two streams can fade the data stream's exponent with the number of labels.
"""

from __future__ import annotations

import numpy as np

from dualstream.errors import ConfigError


def mix_weight(n_queried: int, start: float = 8, end: float = 64) -> float:
    """Weight of the data stream after ``n_queried`` labels: 1 up to ``start``, 0 from ``end``, linear in ``log2(n)`` between."""
    if n_queried <= start:
        return 1.0
    if n_queried >= end:
        return 0.0
    return float((np.log2(end) - np.log2(n_queried)) / (np.log2(end) - np.log2(start)))


def effective_beta(beta: float, n_queried: int, mix: bool, start: float = 8, end: float = 64) -> float:
    """``beta * mix_weight(n)`` when ``mix``, else ``beta``."""
    return float(beta) * (mix_weight(n_queried, start, end) if mix else 1.0)


def check_mix(mix_start: float, mix_end: float) -> None:
    """One-line :class:`ConfigError` unless ``1 <= mix_start < mix_end`` (label counts)."""
    if not 1 <= mix_start < mix_end:
        raise ConfigError(f"acquisition.params: need 1 <= mix_start < mix_end (label counts), got {mix_start} and {mix_end}")
