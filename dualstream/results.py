"""Run results: one record per round, written to ``results.json`` after every round.

Schema (stable; ``dualstream-report`` reads it)::

    {"acquisition": str, "seed": int, "task": str, "metric": str, "config": {...},
     "records": [{"round", "n_labeled", "n_queried", "n_skipped", "score",
                  "stream_correlation", "seconds", ...}, ...]}

``n_queried`` counts every query including skips (the budget spent); ``score`` is the test metric.

Two summaries of a learning curve, both in score units (a flat curve at 0.6 gives 0.6):

- :func:`area_under_curve` (linear AULC): trapezoid of score over ``n_queried`` divided by the budget
  range. Every query counts the same, so with budgets that double (8, 16, ..., 256) the last interval
  alone is half the weight and the early budgets, where active learning matters most, barely count.
- :func:`log_area_under_curve` (log2 AULC, the report's headline): trapezoid of score over
  ``log2(n_queried)`` divided by the ``log2`` range, so each doubling of the budget weighs the same.
  Points with ``n_queried <= 0`` have no place on a log axis and are left out.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_FILE = "results.json"


@dataclass
class RoundRecord:
    """One round of the loop, measured after training on the labels gathered so far."""

    round: int
    n_labeled: int
    n_queried: int
    n_skipped: int
    score: float
    stream_correlation: float
    seconds: float
    selection_seconds: float = 0.0
    train_loss: float = float("nan")
    metrics: dict[str, float] = field(default_factory=dict)  # task-specific extras, flattened in the file

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("metrics"))
        return out


@dataclass
class RunResults:
    acquisition: str
    seed: int
    task: str
    metric: str
    config: dict[str, Any]
    records: list[RoundRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; NaN becomes ``null`` (strict JSON has no NaN)."""
        return _nan_to_none({
            "acquisition": self.acquisition,
            "seed": self.seed,
            "task": self.task,
            "metric": self.metric,
            "config": self.config,
            "records": [r.to_dict() for r in self.records],
            **self.extra,
        })

    def write(self, run_dir: str | Path) -> Path:
        """Write ``results.json`` atomically (temp file + rename), so a crash never leaves half a file."""
        path = Path(run_dir) / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=_jsonable, allow_nan=False))
        os.replace(tmp, path)
        return path


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def load_results(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _curve(records: list[RoundRecord] | list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``(n,)`` budgets (``n_queried``) and ``(n,)`` scores of a run's records, as floats."""
    xs = np.array([r["n_queried"] if isinstance(r, dict) else r.n_queried for r in records], dtype=float)
    ys = np.array([r["score"] if isinstance(r, dict) else r.score for r in records], dtype=float)
    return xs, ys


def _normalised_area(xs: np.ndarray, ys: np.ndarray) -> float:
    """Trapezoid area of ``ys`` over ``xs`` divided by the x range; one point (or no range): the mean score."""
    if len(xs) < 2 or xs[-1] == xs[0]:
        return float(ys.mean()) if len(ys) else float("nan")
    return float(np.trapezoid(ys, xs) / (xs[-1] - xs[0]))


def area_under_curve(records: list[RoundRecord] | list[dict[str, Any]]) -> float:
    """Linear AULC: normalised area under score vs ``n_queried``, trapezoidal, in score units."""
    return _normalised_area(*_curve(records))


def log_area_under_curve(records: list[RoundRecord] | list[dict[str, Any]]) -> float:
    """Log2 AULC: normalised area under score vs ``log2(n_queried)``, trapezoidal, in score units.

    Each doubling of the budget gets equal weight. Records with ``n_queried <= 0`` are left out; with
    one point left the result is its score, with none it is NaN.
    """
    xs, ys = _curve(records)
    keep = xs > 0
    return _normalised_area(np.log2(xs[keep]), ys[keep])
