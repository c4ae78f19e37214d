"""One view across benchmark settings: per acquisition (rows) and setting (columns), from dualstream-report summaries.

    python experiments/scripts/compare_settings.py \\
        clean=experiments/results/clean_core10/vs_dualstream \\
        scattered=experiments/results/scattered_core10/vs_dualstream \\
        sections=experiments/results/sections_core10/vs_dualstream --plot overview.png

Each argument is ``LABEL=REPORT_DIR`` holding a ``summary.json`` written by ``dualstream-report``. Printed
(markdown): log2 AULC (the headline) mean ± SD with the acquisition's rank in that column (1 = best mean),
linear AULC likewise, the share of the acquired queries (after the random initial set) the annotator
skipped as artifacts, and, when the summaries were written with a ``--reference``, each acquisition's
paired Δ log2 AULC against it with its Wilcoxon p (✱: p < 0.05, uncorrected). ``--plot`` draws that
paired Δ as a map (acquisitions x settings), starred where significant. ``--rename GROUP LABEL`` shows a
report group under a shorter name (group names carry their overrides, which do not fit a plot's axis).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable


def load(spec: str) -> tuple[str, dict]:
    """``LABEL=DIR`` -> (label, the summary dict of ``DIR/summary.json``)."""
    label, _, path = spec.partition("=")
    if not path:
        raise SystemExit(f"compare_settings: expected LABEL=REPORT_DIR, got {spec!r}")
    summary = Path(path) / "summary.json"
    if not summary.exists():
        raise SystemExit(f"compare_settings: {summary} not found; run `dualstream-report {path}` first")
    return label, json.loads(summary.read_text())


def rename(settings: list[tuple[str, dict]], pairs: list[tuple[str, str]]) -> list[tuple[str, dict]]:
    """The settings with each ``(group, label)`` pair's group called ``label`` (groups, paired, reference).

    Raises ``SystemExit`` (one line) for a group no summary holds, so a misspelt name is not silently kept.
    """
    mapping = dict(pairs)
    known = {n for _, s in settings for n in s["groups"]}
    unknown = [g for g in mapping if g not in known]
    if unknown:
        raise SystemExit(f"compare_settings: --rename names no group of these summaries: {unknown[0]!r}; "
                         f"groups: {', '.join(sorted(known))}")
    out = []
    for label, s in settings:
        s = dict(s)
        new_names = [mapping.get(n, n) for n in s["groups"]]
        clash = sorted({n for n in new_names if new_names.count(n) > 1})
        if clash:  # two groups under one label would silently drop one of them
            raise SystemExit(f"compare_settings: --rename gives two groups of {label} the same label {clash[0]!r}")
        s["groups"] = {mapping.get(n, n): g for n, g in s["groups"].items()}
        s["paired"] = {mapping.get(n, n): d for n, d in (s.get("paired") or {}).items()}
        ref = (s.get("reference") or {}).get("used")
        if ref is not None:
            s["reference"] = {**s["reference"], "used": mapping.get(ref, ref)}
        out.append((label, s))
    return out


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def names(settings: list[tuple[str, dict]]) -> list[str]:
    """Every acquisition of any setting, sorted by its mean log2-AULC rank over the settings that ran it."""
    ranks: dict[str, list[int]] = {}
    for _, s in settings:
        for r, n in enumerate(ranking(s["groups"], "aulc_log2_mean")):
            ranks.setdefault(n, []).append(r)
    return sorted(ranks, key=lambda n: (sum(ranks[n]) / len(ranks[n]), n))


def ranking(groups: dict, key: str) -> list[str]:
    """Group names by ``key`` descending (best first); groups without a finite value last."""
    return sorted(groups, key=lambda n: -groups[n][key] if _finite(groups[n].get(key)) else math.inf)


def table(settings: list[tuple[str, dict]], cell: Callable[[str, dict], str]) -> list[str]:
    """Markdown rows: one per acquisition, one column per setting, ``cell(name, summary)`` in each."""
    lines = ["| acquisition | " + " | ".join(label for label, _ in settings) + " |", "|---|" + "---|" * len(settings)]
    for name in names(settings):
        cells = [cell(name, s) if name in s["groups"] else "–" for _, s in settings]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _f(value: float | None, spec: str) -> str:
    """``value`` formatted, or ``n/a`` where the summary has ``null`` (an SD of one seed, say)."""
    return "n/a" if value is None else format(value, spec)


def _aulc(key: str) -> Callable[[str, dict], str]:
    def cell(name: str, s: dict) -> str:
        g = s["groups"][name]
        order = ranking(s["groups"], key + "_mean")
        return (f"{_f(g[key + '_mean'], '.3f')} ± {_f(g[key + '_std'], '.3f')} "
                f"({order.index(name) + 1}/{len(order)}, n={len(g['complete_seeds'])})")
    return cell


def _waste(name: str, s: dict) -> str:
    share = s["groups"][name].get("acquired_artifact_share")
    return "n/a" if share is None else f"{100 * share:.1f}%"


def _paired(name: str, s: dict) -> str:
    ref = (s.get("reference") or {}).get("used")
    if name == ref:
        return "(reference)"
    p = (s.get("paired") or {}).get(name, {}).get("aulc_log2")
    if not p or not _finite(p.get("mean_diff")):
        return "–"
    star = " ✱" if p.get("significant") else ""
    return f"{p['mean_diff']:+.3f} (p={_f(p.get('p_value'), '.3f')}, {p['wins']}/{p['losses']}){star}"


def references(settings: list[tuple[str, dict]]) -> list[str | None]:
    return [(s.get("reference") or {}).get("used") for _, s in settings]


def paired_grid(settings: list[tuple[str, dict]]) -> tuple[list[str], list[list[float]], list[list[bool]]]:
    """Acquisitions (rows, best mean rank first), Δ log2 AULC against each summary's reference
    ``[row][setting]`` (NaN where absent; 0 for the reference itself) and the p < 0.05 mask."""
    rows = names(settings)
    values, stars = [], []
    for name in rows:
        v, st = [], []
        for _, s in settings:
            ref = (s.get("reference") or {}).get("used")
            p = (s.get("paired") or {}).get(name, {}).get("aulc_log2") or {}
            if name == ref:
                v.append(0.0)
                st.append(False)
            else:
                v.append(p["mean_diff"] if _finite(p.get("mean_diff")) else math.nan)
                st.append(bool(p.get("significant")))
        values.append(v)
        stars.append(st)
    return rows, values, stars


def plot(settings: list[tuple[str, dict]], path: str) -> None:
    """Map of Δ log2 AULC against the summaries' reference: acquisitions x settings, ✱ where p < 0.05."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, values, stars = paired_grid(settings)
    v = np.array(values, dtype=float)
    finite = np.abs(v[np.isfinite(v)])
    scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig, ax = plt.subplots(figsize=(2.2 + 1.5 * len(settings), 1.0 + 0.4 * len(rows)))
    cmap = plt.get_cmap("RdBu").with_extremes(bad="0.85")  # not run: grey, not the white of Δ = 0
    image = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, vmin=-scale, vmax=scale, aspect="auto")
    for i, name in enumerate(rows):
        for j, (_, s) in enumerate(settings):
            if name == (s.get("reference") or {}).get("used"):
                ax.text(j, i, "reference", ha="center", va="center", fontsize=7, style="italic")
            elif np.isfinite(v[i, j]):
                ax.text(j, i, f"{v[i, j]:+.3f}" + ("*" if stars[i][j] else ""), ha="center", va="center", fontsize=7,
                        fontweight="bold" if stars[i][j] else "normal",
                        color="white" if abs(v[i, j]) > 0.6 * scale else "black")  # legible on the darkest cells
            else:
                ax.text(j, i, "not run", ha="center", va="center", fontsize=7, color="0.4")
    ax.set_xticks(range(len(settings)), [label for label, _ in settings], fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    refs = sorted({r for r in references(settings) if r})
    ax.set_title(f"Δ log2 AULC vs {' / '.join(refs) or 'reference'} (paired by seed; *: Wilcoxon p < 0.05)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="LABEL=REPORT_DIR (a dualstream-report output with summary.json)")
    parser.add_argument("--plot", default=None, help="write the map of paired Δ log2 AULC to this PNG")
    parser.add_argument("--rename", nargs=2, action="append", default=[], metavar=("GROUP", "LABEL"),
                        help="show the report group GROUP as LABEL (repeatable)")
    args = parser.parse_args(argv)
    settings = rename([load(s) for s in args.settings], args.rename)
    out = ["Log2 AULC (rank among the acquisitions of that setting, seeds):", ""]
    out += table(settings, _aulc("aulc_log2"))
    out += ["", "Linear AULC:", ""]
    out += table(settings, _aulc("aulc"))
    out += ["", "Artifacts among the acquired queries:", ""]
    out += table(settings, _waste)
    refs = references(settings)
    if any(refs):
        out += ["", f"Paired Δ log2 AULC against the reference ({', '.join(f'{l}: {r}' for (l, _), r in zip(settings, refs))});"
                " p: Wilcoxon, wins/losses over seeds, ✱: p < 0.05 uncorrected:", ""]
        out += table(settings, _paired)
    if args.plot:
        plot(settings, args.plot)
        out += ["", f"(map written to {args.plot})"]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
