"""Reading strategy-specific arrays from ``PoolView.extras``, with one-line :class:`ConfigError` messages."""

from __future__ import annotations

import numpy as np

from dualstream.acquisition.base import PoolView
from dualstream.errors import ConfigError


def require_extra(view: PoolView, key: str, strategy: str, hint: str, ndim: int) -> np.ndarray:
    """``view.extras[key]`` as an array of ``ndim`` dimensions and ``len(view)`` rows.

    Args:
        key: the extras key, e.g. ``"bald"`` ``(N,)`` or ``"grad_embedding"`` ``(N, D)``.
        strategy: the acquisition name, for the message.
        hint: how to make the key available (the config change to make).
        ndim: 1 for a per-item score, 2 for a per-item vector.

    Raises:
        ConfigError: the key is missing or its shape is not ``(N,)`` / ``(N, D)``.
    """
    if key not in view.extras:
        raise ConfigError(f"acquisition '{strategy}' needs view.extras['{key}'], which the task stream did not supply: {hint}")
    arr = np.asarray(view.extras[key])
    if arr.ndim != ndim or arr.shape[0] != len(view):
        want = "(N,)" if ndim == 1 else "(N, D)"
        raise ConfigError(
            f"acquisition '{strategy}' needs view.extras['{key}'] of shape {want} with N={len(view)}, got {arr.shape}"
        )
    return arr
