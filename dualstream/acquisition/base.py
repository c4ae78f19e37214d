"""The one acquisition signature, the registry, and the checks every strategy gets for free.

An acquisition function is a pure function of arrays::

    fn(view: PoolView, batch_size: int, rng: numpy.random.Generator, **params) -> Selection

It may read any array of the :class:`PoolView` and must return distinct indices of items not yet
queried, plus a utility per pool item that explains the choice (NaN for items it could not pick).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from dualstream.errors import ConfigError, EmptyPoolError


@dataclass(frozen=True)
class PoolView:
    """What an acquisition function sees of the pool this round.

    Attributes:
        embedding: ``(N, D)`` float32, the frozen encoder's embedding (data stream).
        typicality: ``(N,)`` float, density in that embedding; higher = more typical.
        uncertainty: ``(N,)`` float, the task model's per-item uncertainty; higher = more uncertain.
        queried: ``(N,)`` bool, already asked (labelled or skipped); never offered again.
        extras: strategy-specific ``(N, ...)`` arrays (e.g. MC-dropout samples, gradient embeddings).
        excluded: ``(N,)`` bool or None, items ruled out of this selection without having been asked
            (a lab's screened cold start): not candidates, and unlike queried items they cover nothing.
    """

    embedding: np.ndarray
    typicality: np.ndarray
    uncertainty: np.ndarray
    queried: np.ndarray
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)
    excluded: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.queried.shape[0])

    @property
    def available(self) -> np.ndarray:
        """``(N,)`` bool, the items that may be picked now: neither queried nor excluded."""
        if self.excluded is None:
            return ~self.queried
        return ~self.queried & ~np.asarray(self.excluded, dtype=bool)

    @property
    def candidates(self) -> np.ndarray:
        """``(M,)`` int64 indices of items that may be picked now (see :attr:`available`)."""
        return np.flatnonzero(self.available)


@dataclass(frozen=True)
class Selection:
    """A batch to query.

    Attributes:
        indices: ``(B,)`` int64 pool indices, in the order chosen.
        utilities: ``(N,)`` float64 score per pool item (NaN where not a candidate).
    """

    indices: np.ndarray
    utilities: np.ndarray


AcquisitionFn = Callable[..., Selection]
REGISTRY: dict[str, AcquisitionFn] = {}


def register(name: str) -> Callable[[AcquisitionFn], AcquisitionFn]:
    """Decorator adding a strategy to :data:`REGISTRY` under ``name`` (the config's ``acquisition.name``)."""

    def wrap(fn: AcquisitionFn) -> AcquisitionFn:
        REGISTRY[name] = fn
        return fn

    return wrap


def strategy_params(fn: AcquisitionFn) -> dict[str, inspect.Parameter]:
    """The configurable parameters of a strategy: what follows ``(view, batch_size, rng)`` in its signature
    (what ``acquisition.params`` may set; config validation and the report read them from here)."""
    return dict(list(inspect.signature(fn).parameters.items())[3:])


def top_indices(utilities: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` candidates of highest utility, best first (ties broken by index)."""
    order = np.argsort(-utilities[candidates], kind="stable")
    return candidates[order[:k]]


def masked_utilities(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``(N,)`` float64 copy of ``values`` on candidates, NaN elsewhere."""
    out = np.full(values.shape[0], np.nan)
    out[candidates] = values[candidates]
    return out


def acquire(name: str, view: PoolView, batch_size: int, rng: np.random.Generator, **params: Any) -> Selection:
    """Run strategy ``name`` and check its answer.

    Asks for ``min(batch_size, candidates)`` items, so the last round can drain the pool.

    Raises:
        ConfigError: unknown strategy name or bad batch size.
        EmptyPoolError: no candidates left.
    """
    if name not in REGISTRY:
        raise ConfigError(f"acquisition.name='{name}' is not a known strategy; choose one of {sorted(REGISTRY)}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    available = view.available
    n_left = int(available.sum())
    if n_left == 0:
        raise EmptyPoolError("no unqueried items left in the pool; lower loop.rounds or loop.batch")
    selection = REGISTRY[name](view, min(batch_size, n_left), rng, **params)
    idx = np.asarray(selection.indices, dtype=np.int64)
    if len(np.unique(idx)) != len(idx) or not available[idx].all():
        raise RuntimeError(f"strategy '{name}' returned duplicate, already-queried or excluded indices")  # a bug, not input
    return Selection(idx, np.asarray(selection.utilities, dtype=np.float64))
