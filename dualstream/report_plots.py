"""Figures of a ``dualstream-report``: drawn from the summary dict only, so they can be redrawn from ``summary.json``.

- :func:`plot_curves` -> ``learning_curves.png``: learning curves on a log2 budget axis beside each
  setting's log2 AULC with its Student-t 95% interval (unpaired: how good each setting is on its own).
- :func:`plot_paired` -> ``paired.png``: the paired comparison against the reference, the figure that
  answers "is it better": per setting the mean per-seed Δ log2 AULC with its bootstrap 95% CI, and the
  mean Δ score at every budget, starred where the Wilcoxon p < 0.05. The paired view matters because
  most of the seed-to-seed spread is shared by the settings (the same random start), so overlapping
  unpaired intervals say little about a difference.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

HIGHLIGHT = "dualstream"  # the project's method: listed first, drawn thicker


def _arr(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Learning curves (mean ± SD band, log2 budget axis) beside each setting's log2 AULC with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = summary["groups"]
    # More than 10 settings would repeat colours of the default cycle: use a 20-colour map instead.
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    colours = {name: cmap(i % cmap.N) for i, name in enumerate(groups)}
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.6, 1]})
    band = 0.15 if len(groups) <= 6 else 0.06
    for name, g in groups.items():
        x = _arr(g["n_queried"])
        m, s = _arr(g["score_mean"]), _arr(g["score_std"])
        keep = x > 0  # a log axis has no place for 0 queries
        ax.plot(x[keep], m[keep], marker="o", ms=3, lw=2.4 if name == HIGHLIGHT else 1.2, color=colours[name],
                label=f"{name} (n={len(g['seeds'])})")
        ax.fill_between(x[keep], (m - s)[keep], (m + s)[keep], color=colours[name], alpha=band, lw=0)
    full = summary.get("full_pool")
    if full and full["score_mean"] is not None and math.isfinite(full["score_mean"]):
        ax.axhline(full["score_mean"], color="k", ls="--", lw=1, label="every pool item labelled")
    first = next(iter(groups.values()))
    ax.set_xscale("log", base=2)
    # Ticks at the budgets themselves, as plain counts (powers of 2 alone leave most budgets unlabelled).
    ticks = sorted({b for g in groups.values() for b in g["n_queried"] if b > 0})
    if ticks:
        ticks = ticks[:: max(1, math.ceil(len(ticks) / 12))]
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(ticks, [f"{b:g}" for b in ticks], fontsize=8)
    ax.set_xlabel("annotation budget (queries, skips included; log2 axis)")
    ax.set_ylabel(f"test {first['metric']} (mean ± SD over seeds)")
    ax.set_title(f"learning curves: {first['task']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(groups) > 7 else 1)

    order = sorted((n for n in groups if groups[n]["aulc_log2_mean"] is not None and math.isfinite(groups[n]["aulc_log2_mean"])),
                   key=lambda n: groups[n]["aulc_log2_mean"])
    if order:
        means = np.array([groups[n]["aulc_log2_mean"] for n in order])
        cis = [groups[n]["aulc_log2_ci95"] for n in order]
        lo = np.array([m - c[0] if c else 0.0 for m, c in zip(means, cis)])
        hi = np.array([c[1] - m if c else 0.0 for m, c in zip(means, cis)])
        y = np.arange(len(order))
        bars.barh(y, means, xerr=np.vstack([lo, hi]), color=[colours[n] for n in order],
                  edgecolor=["k" if n == HIGHLIGHT else "none" for n in order], capsize=2)
        labels = [n + ("" if c else " (no CI)") for n, c in zip(order, cis)]
        bars.set_yticks(y, labels, fontsize=8)
        left, right = float((means - lo).min()), float((means + hi).max())
        pad = 0.05 * (right - left + 1e-9)
        bars.set_xlim(max(0.0, left - pad), right + pad)
    bars.set_xlabel(f"log2 AULC (mean, Student-t {summary['statistics']['ci']:.0%} CI over seeds)")
    bars.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def paired_grid(paired: dict[str, Any]) -> tuple[list[str], list[float], np.ndarray, np.ndarray]:
    """What :func:`plot_paired` draws, as arrays: settings sorted by mean Δ log2 AULC (ascending, the
    plot's bottom row first), the budgets, Δ score ``(settings, budgets)`` (NaN where a setting lacks a
    budget) and its significance level ``(settings, budgets)`` int: 0 none, 1 p < 0.05 uncorrected, 2 also
    after Holm over the settings at that budget. Settings without a finite Δ log2 AULC are left out."""
    rows = sorted((n for n, p in paired.items() if _finite(p["aulc_log2"].get("mean_diff"))),
                  key=lambda n: paired[n]["aulc_log2"]["mean_diff"])
    budgets = sorted({float(b) for n in rows for b in paired[n]["per_budget"]})
    values = np.full((len(rows), len(budgets)), np.nan)
    stars = np.zeros(values.shape, dtype=int)
    for i, name in enumerate(rows):
        per = {float(b): d for b, d in paired[name]["per_budget"].items()}
        for j, b in enumerate(budgets):
            d = per.get(b)
            if d is not None and _finite(d.get("mean_diff")):
                values[i, j] = d["mean_diff"]
                stars[i, j] = 2 if d.get("significant_holm") else 1 if d.get("significant") else 0
    return rows, budgets, values, stars


def plot_paired(summary: dict[str, Any], path: Path) -> bool:
    """Forest plot of Δ log2 AULC against the reference beside a settings x budgets map of Δ score.

    ``summary["paired"][name]`` holds ``aulc_log2`` (``mean_diff``, ``ci_low``, ``ci_high``,
    ``significant``, ``n``) and ``per_budget[budget]`` (the same keys for the score). Settings are sorted
    by their mean Δ. Returns False, writing nothing, when there is nothing paired to draw.
    """
    paired = summary.get("paired") or {}
    if not any(_finite(p["aulc_log2"].get("mean_diff")) for p in paired.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = summary["reference"]["used"]
    rows, budgets, values, stars = paired_grid(paired)
    height = 1.2 + 0.38 * len(rows)
    fig, (forest, grid) = plt.subplots(1, 2, figsize=(12, height), gridspec_kw={"width_ratios": [1, 1.4]})

    y = np.arange(len(rows))
    for i, name in enumerate(rows):
        d = paired[name]["aulc_log2"]
        m = d["mean_diff"]
        lo = d["ci_low"] if _finite(d.get("ci_low")) else m
        hi = d["ci_high"] if _finite(d.get("ci_high")) else m
        colour = "tab:green" if d.get("significant") and m > 0 else "tab:red" if d.get("significant") else "0.45"
        forest.plot([lo, hi], [i, i], color=colour, lw=2)
        # Filled: p < 0.05 (uncorrected); a square: also after Holm over the settings; hollow: not significant.
        forest.plot([m], [i], "s" if d.get("significant_holm") else "o", color=colour,
                    mfc=colour if d.get("significant") else "white", ms=7)
    forest.axvline(0, color="k", lw=1)
    forest.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6))  # long tick labels: few ticks
    labels = [f"{n} (n={paired[n]['aulc_log2']['n']})" for n in rows]
    forest.set_yticks(y, labels, fontsize=8)
    forest.set_ylim(-0.6, len(rows) - 0.4)
    forest.set_xlabel(f"Δ log2 AULC vs {ref} (mean over seeds, bootstrap {summary['statistics']['ci']:.0%} CI)")
    forest.set_title("filled: Wilcoxon p < 0.05 (uncorrected); square: also after Holm", fontsize=9)
    forest.grid(axis="x", alpha=0.3)

    if budgets:
        finite = values[np.isfinite(values)]
        scale = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        # origin="lower": row i at height i, level with the forest plot's row i.
        image = grid.imshow(values, cmap="RdBu", vmin=-scale, vmax=scale, aspect="auto", origin="lower")
        for i in range(len(rows)):
            for j in range(len(budgets)):
                if np.isfinite(values[i, j]):
                    text = f"{values[i, j]:+.3f}" + "*" * stars[i, j]
                    grid.text(j, i, text, ha="center", va="center", fontsize=7,
                              fontweight="bold" if stars[i, j] else "normal")
        grid.set_xticks(range(len(budgets)), [f"{b:g}" for b in budgets], fontsize=8)
        grid.set_yticks(y, [])
        grid.set_xlabel("budget (queries)")
        grid.set_title(f"Δ score vs {ref} per budget (*: p < 0.05, **: also after Holm)", fontsize=9)
        fig.colorbar(image, ax=grid, fraction=0.04, pad=0.02)
    else:
        grid.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
