"""Paired comparison of two strategies over seeds gathered from several run folders (issue 10: the 20-seed re-tests).

A strategy is ``NAME=FOLDER[,FOLDER...][@key=value,...]``: every finished run (``results.json`` with its ``aulc_log2``) under those
folders whose ``acquisition`` is NAME and whose config matches the dotted ``key=value`` filters. Runs are
paired by seed; a seed present twice in one strategy is an error (pass narrower filters).

    python experiments/scripts/paired_seeds.py \\
        --a "dualstream=experiments/results/candidate_h/sections/runs,experiments/results/candidate_h/sections_seeds10-19/runs@model.uncertainty.reduction=topk_then_mean" \\
        --b "uncertainty=experiments/results/sections_core10/runs,experiments/results/candidate_h/sections_seeds10-19/runs" \\
        --b "typiclust=experiments/results/sections_core10/runs,experiments/results/candidate_h/sections_seeds10-19/runs" \\
        --budget-rounds 3 4 5 --seeds 0-19 --seeds 10-19

Prints, for each comparison A - B, the paired log2 AULC difference (mean, sample SD, bootstrap 95% CI,
two-sided Wilcoxon, wins / losses), Holm over the B strategies, and the same at the rounds asked for
(Holm over those rounds); ``--json`` writes it all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dualstream.stats import holm, paired_difference


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def collect(spec: str) -> tuple[str, dict[int, dict]]:
    """``NAME=DIRS[@filters]`` -> (label, {seed: results}) of the finished runs it selects.

    Not :func:`dualstream.report.collect`: that reader keeps one run per seed and setting (with a
    warning), so two runs of a seed that differ only in their recorded config would be merged before
    the filters could tell them apart; here such a pair is an error.
    """
    name, _, rest = spec.partition("=")
    dirs, _, filt = rest.partition("@")
    filters = [f.split("=", 1) for f in filt.split(",") if f]
    runs: dict[int, dict] = {}
    for folder in dirs.split(","):
        if not Path(folder).is_dir():
            raise SystemExit(f"paired_seeds: {folder} is not a folder (in {spec!r})")
        for path in sorted(Path(folder).glob("*/results.json")):
            res = json.loads(path.read_text())
            # runs older than the ``finished`` key carry None there; their aulc_log2 marks a complete run
            if res.get("acquisition") != name or res.get("finished") is False or res.get("aulc_log2") is None:
                continue
            if any(str(_get(res.get("config", {}), k)) != v for k, v in filters):
                continue
            seed = int(res["seed"])
            if seed in runs:
                raise SystemExit(f"paired_seeds: seed {seed} twice for {spec!r} ({path.parent}); narrow it with @key=value")
            runs[seed] = res
    label = name + (f" [{filt}]" if filt else "")
    return label, runs


def seed_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="the strategy under test")
    ap.add_argument("--b", action="append", required=True, help="a strategy to compare with (repeatable)")
    ap.add_argument("--seeds", action="append", default=[], help="seed range such as 0-19 (repeatable; default: every common seed)")
    ap.add_argument("--budget-rounds", type=int, nargs="*", default=[], help="round indices to compare the score at")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    a_label, a_runs = collect(args.a)
    bs = [collect(b) for b in args.b]
    out = []
    for seeds_text in args.seeds or [None]:
        block = []
        for b_label, b_runs in bs:
            common = sorted(set(a_runs) & set(b_runs))
            if seeds_text:
                wanted = seed_range(seeds_text)
                missing = [s for s in wanted if s not in common]
                if missing:
                    raise SystemExit(f"paired_seeds: seeds {missing} lack a finished run of {a_label} or {b_label}")
                common = wanted
            a_vals = [a_runs[s]["aulc_log2"] for s in common]
            b_vals = [b_runs[s]["aulc_log2"] for s in common]
            row = {"a": a_label, "b": b_label, "seeds": common, "a_mean": float(np.mean(a_vals)),
                   "b_mean": float(np.mean(b_vals)), "log2_aulc": paired_difference(a_vals, b_vals)}
            rounds = {}
            for r in args.budget_rounds:
                rounds[r] = paired_difference([a_runs[s]["records"][r]["score"] for s in common], [b_runs[s]["records"][r]["score"] for s in common])
            for r, p in zip(rounds, holm([d["p_value"] for d in rounds.values()])):
                rounds[r]["p_holm"] = p
            row["rounds"] = rounds
            block.append(row)
        for row, p in zip(block, holm([r["log2_aulc"]["p_value"] for r in block])):
            row["log2_aulc"]["p_holm"] = p
        for row in block:
            d = row["log2_aulc"]
            print(f"seeds {seeds_text or 'common'} (n={d['n']}): {row['a']} {row['a_mean']:.3f} - {row['b']} {row['b_mean']:.3f} = "
                  f"{d['mean_diff']:+.3f} (SD {d['sd_diff']:.3f}) [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], p = {d['p_value']:.3g}"
                  f" (Holm {d['p_holm']:.3g}), {d['wins']}/{d['losses']}")
            for r, q in row["rounds"].items():
                print(f"    round {r}: {q['mean_diff']:+.3f} [{q['ci_low']:+.3f}, {q['ci_high']:+.3f}], p = {q['p_value']:.3g} (Holm {q['p_holm']:.3g}), {q['wins']}/{q['losses']}")
        out += block
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
