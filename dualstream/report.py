"""``dualstream-report SWEEP_DIR``: aggregate every ``results.json`` under a directory.

Writes, into ``SWEEP_DIR`` (or ``--out``):

- ``report.md``: per setting (acquisition plus any other override that varies), the score at each
  budget as mean +- std over seeds, the area under the learning curve (AULC), the share of the budget
  spent on artifacts, the stream correlation and the selection time; then paired per-seed AULC
  differences against ``dualstream`` when it is present.
- ``learning_curves.png``: score vs queries, mean line and +-1 std band per setting.
- ``summary.json``: the same numbers, machine readable.

Runs are grouped by their Hydra overrides minus ``seed`` (read from ``.hydra/overrides.yaml`` beside
each ``results.json``); without them, by acquisition name.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dualstream.results import RESULTS_FILE, area_under_curve

REFERENCE = "dualstream"
STANDARD_KEYS = {
    "round", "n_labeled", "n_queried", "n_skipped", "score", "stream_correlation", "seconds", "selection_seconds", "train_loss",
}
FULL_POOL = "full pool"  # runs with loop.initial=all: the score of training on every pool item
TARGET_SHARE = 0.95


@dataclass
class Run:
    path: Path
    group: str
    seed: int
    data: dict[str, Any]

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.data["records"]


@dataclass
class Group:
    """All seeds of one setting, curves aligned by round."""

    name: str
    runs: list[Run] = field(default_factory=list)

    def column(self, key: str) -> np.ndarray:
        """``(seeds, rounds)`` float array of a record field; rounds cut to the shortest run."""
        n = min(len(r.records) for r in self.runs)
        return np.array([[_num(rec.get(key)) for rec in r.records[:n]] for r in self.runs], dtype=float)

    def aulc(self) -> np.ndarray:
        """``(seeds,)`` normalised area under score-vs-queries."""
        n = min(len(r.records) for r in self.runs)
        return np.array([area_under_curve(r.records[:n]) for r in self.runs])


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _overrides(results_path: Path) -> dict[str, str]:
    """``key -> value`` of the run's Hydra overrides, from ``.hydra/overrides.yaml`` beside the results."""
    path = results_path.parent / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    import yaml

    items = yaml.safe_load(path.read_text()) or []
    return dict(item.lstrip("+~").split("=", 1) for item in items if "=" in item)


IGNORED_KEYS = ("seed", "acquisition", "progress", "logger", "trainer.cpu_threads")


def collect(sweep_dir: Path) -> dict[str, Group]:
    """Read every ``results.json`` under ``sweep_dir``, grouped by setting.

    A setting is the acquisition plus every override whose value differs between the runs found
    (seed excluded), so a sweep over ``acquisition x beta x seed`` gives one group per
    ``(acquisition, beta)``.

    Raises:
        FileNotFoundError: the directory is missing or holds no results.
    """
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such directory")
    found = []
    for path in sorted(sweep_dir.rglob(RESULTS_FILE)):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            print(f"dualstream-report: skipping {path}: not valid JSON ({err})", file=sys.stderr)
            continue
        if data.get("records"):
            found.append((path, data, _overrides(path)))
    if not found:
        raise FileNotFoundError(f"{sweep_dir}: no {RESULTS_FILE} with records found below it")
    references = [(p, d) for p, d, _ in found if d.get("full_pool")]
    found = [item for item in found if not item[1].get("full_pool")]
    keys = {k for _, _, o in found for k in o if not (k in IGNORED_KEYS or k.startswith(("hydra.", "paths.")))}
    varying = sorted(k for k in keys if len({o.get(k) for _, _, o in found}) > 1)
    groups: dict[str, Group] = {}
    for path, data, overrides in found:
        extra = [f"{k}={overrides[k]}" for k in varying if k in overrides]
        name = data.get("acquisition", "?") + (f" [{', '.join(extra)}]" if extra else "")
        groups.setdefault(name, Group(name)).runs.append(Run(path, name, int(data.get("seed", 0)), data))
    for path, data in references:
        groups.setdefault(FULL_POOL, Group(FULL_POOL)).runs.append(Run(path, FULL_POOL, int(data.get("seed", 0)), data))
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != REFERENCE, kv[0])))


def _budget(value: float | None, last_share: float | None) -> str:
    """The budget to 95% of the full-pool score, or how far the last budget got (share of that score)."""
    if value is not None:
        return f"{value:g}"
    return "not reached" + (f" ({last_share:.0%} at the last budget)" if last_share is not None else "")


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarise(groups: dict[str, Group]) -> dict[str, Any]:
    """Numbers behind the report: per group curves (mean/std per round), AULC, waste, correlation."""
    out: dict[str, Any] = {"groups": {}}
    full = groups.get(FULL_POOL)
    if full is not None:
        scores = full.column("score")[:, -1]
        out["full_pool"] = {"score_mean": float(np.nanmean(scores)), "score_std": float(np.nanstd(scores)), "seeds": sorted(r.seed for r in full.runs)}
    for name, g in groups.items():
        if name == FULL_POOL:
            continue
        score = g.column("score")
        queried = g.column("n_queried")
        skipped = g.column("n_skipped")
        aulc = g.aulc()
        first = g.runs[0].data
        out["groups"][name] = {
            "acquisition": first.get("acquisition"),
            "task": first.get("task"),
            "metric": first.get("metric"),
            "seeds": sorted(r.seed for r in g.runs),
            "n_queried": np.nanmean(queried, axis=0).tolist(),
            "score_mean": np.nanmean(score, axis=0).tolist(),
            "score_std": np.nanstd(score, axis=0).tolist(),
            "aulc_mean": float(np.nanmean(aulc)),
            "aulc_std": float(np.nanstd(aulc)),
            "aulc_per_seed": dict(zip((str(r.seed) for r in g.runs), aulc.tolist())),
            "artifact_waste": float(np.nanmean(skipped[:, -1] / np.maximum(queried[:, -1], 1))),
            # The same share over the queries the acquisition chose (after the shared random round 0).
            "acquired_artifact_share": float(
                np.nanmean((skipped[:, -1] - skipped[:, 0]) / np.maximum(queried[:, -1] - queried[:, 0], 1))
            ),
            "stream_correlation_mean": float(np.nanmean(g.column("stream_correlation"))),
            "selection_seconds_mean": float(np.nanmean(g.column("selection_seconds"))),
            "seconds_per_round_mean": float(np.nanmean(g.column("seconds"))),
        }
        # Task-specific record keys (detect: precision, recall, f1, centroid distance) at the last budget.
        extra_keys = [k for k in g.runs[0].records[0] if k not in STANDARD_KEYS]
        out["groups"][name]["final_metrics"] = {
            k: {"mean": float(np.nanmean(g.column(k)[:, -1])), "std": float(np.nanstd(g.column(k)[:, -1]))} for k in extra_keys
        }
        if "full_pool" in out:
            target = TARGET_SHARE * out["full_pool"]["score_mean"]
            info = out["groups"][name]
            reached = [b for b, m in zip(info["n_queried"], info["score_mean"]) if m >= target]
            info["budget_to_95pct_full"] = reached[0] if reached else None
            info["last_share_of_full"] = info["score_mean"][-1] / out["full_pool"]["score_mean"]
    if REFERENCE in groups:
        ref = out["groups"][REFERENCE]["aulc_per_seed"]
        paired = {}
        for name, info in out["groups"].items():
            if name == REFERENCE:
                continue
            seeds = sorted(set(ref) & set(info["aulc_per_seed"]))
            diff = np.array([ref[s] - info["aulc_per_seed"][s] for s in seeds])
            if len(diff):
                paired[name] = {
                    "seeds": seeds,
                    "aulc_diff_mean": float(diff.mean()),
                    "aulc_diff_std": float(diff.std()),
                    "wins": int((diff > 0).sum()),
                }
        out["paired_vs_dualstream"] = paired
    return out


def render_markdown(summary: dict[str, Any], sweep_dir: Path) -> str:
    groups = summary["groups"]
    first = next(iter(groups.values()))
    budgets = [int(round(b)) for b in max((g["n_queried"] for g in groups.values()), key=len)]
    full = summary.get("full_pool")
    lines = [
        f"# dualstream report: {sweep_dir}",
        "",
        f"Task `{first['task']}`, metric `{first['metric']}` (test set), mean ± std over seeds. "
        "Columns are the budget spent (queries, skips included); 'budget on artifacts' is the share of queries the"
        " annotator skipped, over all queries / over those the acquisition chose (after the random initial set).",
        "",
    ]
    if full:
        lines += [
            f"Training on every pool item scores {_fmt(full['score_mean'], full['score_std'])} "
            f"({len(full['seeds'])} seeds); the '95% budget' column is the first budget whose mean reaches"
            f" {TARGET_SHARE:.0%} of it (when none does: the last budget's mean as a share of it).",
            "",
        ]
    to95 = " 95% budget |" if full else ""
    lines += [
        "| setting | seeds | " + " | ".join(str(b) for b in budgets) + f" | AULC |{to95} budget on artifacts: all / acquired | stream corr. | selection s/round |",
        "|---|---|" + "---|" * len(budgets) + "---|" * (5 if full else 4),
    ]
    for name, g in groups.items():
        cells = [_fmt(m, s) for m, s in zip(g["score_mean"], g["score_std"])]
        cells += [""] * (len(budgets) - len(cells))
        lines.append(
            f"| {name} | {len(g['seeds'])} | " + " | ".join(cells)
            + f" | {_fmt(g['aulc_mean'], g['aulc_std'])} |"
            + (f" {_budget(g.get('budget_to_95pct_full'), g.get('last_share_of_full'))} |" if full else "")
            + f" {100 * g['artifact_waste']:.1f}% / {100 * g['acquired_artifact_share']:.1f}% |"
            f" {g['stream_correlation_mean']:+.2f} | {g['selection_seconds_mean']:.3f} |"
        )
    metric_keys = list(first.get("final_metrics", {}))
    if metric_keys:
        lines += [
            "",
            f"Task metrics at the last budget ({budgets[-1]}):",
            "",
            "| setting | " + " | ".join(metric_keys) + " |",
            "|---|" + "---|" * len(metric_keys),
        ]
        for name, g in groups.items():
            fm = g.get("final_metrics", {})
            lines.append(f"| {name} | " + " | ".join(_fmt(fm[k]["mean"], fm[k]["std"], 2 if k.endswith("_nm") else 3) if k in fm else "" for k in metric_keys) + " |")
    paired = summary.get("paired_vs_dualstream")
    if paired:
        lines += [
            "",
            "## dualstream against each setting (paired by seed)",
            "",
            "| setting | AULC(dualstream) − AULC(setting) | dualstream wins |",
            "|---|---|---|",
        ]
        for name, p in paired.items():
            lines.append(f"| {name} | {p['aulc_diff_mean']:+.4f} ± {p['aulc_diff_std']:.4f} | {p['wins']}/{len(p['seeds'])} |")
    lines += ["", "![learning curves](learning_curves.png)", ""]
    return "\n".join(lines)


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Learning curves (mean ± std band per setting) beside the AULC of each setting, best on top."""
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
        x = np.array(g["n_queried"])
        m, s = np.array(g["score_mean"]), np.array(g["score_std"])
        ax.plot(x, m, marker="o", ms=3, lw=2.4 if name == REFERENCE else 1.2, color=colours[name], label=f"{name} (n={len(g['seeds'])})")
        ax.fill_between(x, m - s, m + s, color=colours[name], alpha=band, lw=0)
    full = summary.get("full_pool")
    if full:
        ax.axhline(full["score_mean"], color="k", ls="--", lw=1, label="every pool item labelled")
    first = next(iter(groups.values()))
    ax.set_xlabel("annotation budget (queries, skips included)")
    ax.set_ylabel(f"test {first['metric']}")
    ax.set_title(f"learning curves: {first['task']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(groups) > 7 else 1)
    order = sorted(groups, key=lambda n: groups[n]["aulc_mean"])
    y = np.arange(len(order))
    bars.barh(y, [groups[n]["aulc_mean"] for n in order], xerr=[groups[n]["aulc_std"] for n in order],
              color=[colours[n] for n in order], edgecolor=["k" if n == REFERENCE else "none" for n in order], capsize=2)
    bars.set_yticks(y, order, fontsize=8)
    lo = min(groups[n]["aulc_mean"] - groups[n]["aulc_std"] for n in order)
    hi = max(groups[n]["aulc_mean"] + groups[n]["aulc_std"] for n in order)
    bars.set_xlim(max(0.0, lo - 0.05 * (hi - lo + 1e-9)), hi + 0.05 * (hi - lo + 1e-9))
    bars.set_xlabel("area under the learning curve (mean ± std over seeds)")
    bars.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Aggregate ``sweep_dir`` and write ``report.md``, ``learning_curves.png``, ``summary.json``; return report path."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir else sweep_dir
    summary = summarise(collect(sweep_dir))  # first: a mistyped path must not be created
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_curves(summary, out / "learning_curves.png")
    report = out / "report.md"
    report.write_text(render_markdown(summary, sweep_dir))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dualstream-report", description="Aggregate a sweep's results.json files.")
    parser.add_argument("sweep_dir", type=Path, help="directory holding runs (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep directory)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.sweep_dir, args.out)
    except FileNotFoundError as err:
        print(f"dualstream-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(path)


if __name__ == "__main__":
    main()
