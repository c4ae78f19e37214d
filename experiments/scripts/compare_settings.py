"""One table across settings: AULC per acquisition (rows) and setting (columns), from dualstream-report summaries.

    python experiments/scripts/compare_settings.py clean=outputs/zoo_mito artifacts=outputs/artifacts_mito

Each argument is ``LABEL=SWEEP_DIR`` whose ``summary.json`` was written by ``dualstream-report``. Cells are
AULC mean ± std over seeds with the acquisition's rank in that column (1 = best mean); a second table gives
the share of the acquired queries (after the random initial set) the annotator skipped as artifacts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(spec: str) -> tuple[str, dict]:
    label, _, path = spec.partition("=")
    if not path:
        raise SystemExit(f"compare_settings: expected LABEL=SWEEP_DIR, got {spec!r}")
    summary = Path(path) / "summary.json"
    if not summary.exists():
        raise SystemExit(f"compare_settings: {summary} not found; run `dualstream-report {path}` first")
    return label, json.loads(summary.read_text())["groups"]


def table(settings: list[tuple[str, dict]], cell) -> list[str]:
    names = sorted({name for _, groups in settings for name in groups})
    lines = ["| acquisition | " + " | ".join(label for label, _ in settings) + " |", "|---|" + "---|" * len(settings)]
    ranks = []
    for _, groups in settings:
        order = sorted(groups, key=lambda n: -groups[n]["aulc_mean"])
        ranks.append({n: i + 1 for i, n in enumerate(order)})
    for name in names:
        cells = [cell(groups[name], rank[name], len(groups)) if name in groups else "–" for (_, groups), rank in zip(settings, ranks)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _f(value: float | None, spec: str) -> str:
    """``value`` formatted, or ``n/a`` where the summary has ``null`` (an SD of one seed, say)."""
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="LABEL=SWEEP_DIR")
    settings = [load(s) for s in parser.parse_args(argv).settings]
    out = ["AULC (rank among the acquisitions of that setting):", ""]
    out += table(settings, lambda g, r, n: f"{g['aulc_mean']:.3f} ± {_f(g['aulc_std'], '.3f')} ({r}/{n})")
    out += ["", "Artifacts among the acquired queries:", ""]
    share = lambda g: None if g.get("acquired_artifact_share") is None else 100 * g["acquired_artifact_share"]  # noqa: E731
    out += table(settings, lambda g, r, n: f"{_f(share(g), '.1f')}%")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
