"""How stable are the detect task's proposals across seeds and resolutions? (issue 10, item 3)

Runs only the proposal stage (detector training on its seeded patches, prediction, thresholding,
matching; no active learning) for each seed, resolution setting and threshold rule, and prints the
pool proposal counts with their spread: the target is every seed within +-25% of the mean.

    python experiments/scripts/detect_proposal_counts.py --experiment detect_mito --seeds 0 1 2 3 4 \\
        --setting "10nm:data.downsample=2" \\
        --setting "5nm:data.downsample=1,data.patch_size=128,task.crop_size=96" \\
        --threshold 0.3 --threshold auto --extra task.detector.min_area_nm2=5000 --json out.json

``--threshold oracle:0.6`` is a diagnostic, not a rule: the threshold keeping 0.6 of the pool's own
foreground pixels (every pool label), the bound for any calibration on a few painted tiles.

Detectors are cached in ``--cache`` (the threshold is applied after the cache, so the rules share one
trained detector per seed and setting).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    from dualstream.cli import CONF_DIR, _register_resolvers

    _register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def spread(counts: list[int]) -> dict[str, float]:
    """Mean, SD, min, max and the largest relative deviation from the mean of a list of counts."""
    a = np.asarray(counts, dtype=np.float64)
    mean = float(a.mean())
    worst = float(np.max(np.abs(a - mean)) / mean) if mean > 0 else float("inf")
    sd = float(a.std(ddof=1)) if len(a) > 1 else float("nan")
    return {"mean": mean, "sd": sd, "cv": sd / mean if mean > 0 else float("nan"), "min": int(a.min()),
            "max": int(a.max()), "max_rel_dev": worst, "within_25pct": bool(worst <= 0.25)}


def oracle_stage(cfg, stage, recall: float):
    """``stage`` re-thresholded where the pool keeps ``recall`` of its own foreground pixels (uses every
    pool label: it bounds what a calibration on a few painted tiles can reach)."""
    from dataclasses import replace

    from dualstream.proposals import build_proposals, calibrate_threshold, read_sections

    pool_sec, _ = read_sections(cfg.data)
    threshold = calibrate_threshold(stage.probs.pool, pool_sec.labels, recall)
    pool, pool_objects = build_proposals(stage.probs.pool, pool_sec, threshold, stage.min_size, int(cfg.task.crop_size),
                                         float(cfg.task.match_iou))
    return replace(stage, pool=pool, pool_objects=pool_objects, threshold=threshold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="detect_mito")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--setting", action="append", required=True, help="NAME:key=value,key=value")
    parser.add_argument("--threshold", action="append", required=True,
                        help="a probability, auto, or oracle:R (a diagnostic bound, not a rule a lab can run: the threshold"
                             " keeping recall R of the pool's own foreground pixels, read from every pool label)")
    parser.add_argument("--extra", action="append", default=[], help="more overrides for every run")
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "dualstream"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from dualstream.tasks.detect import proposal_stage
    from dualstream.trainer import apply_cpu_threads

    rows = []
    for setting in args.setting:
        name, _, spec = setting.partition(":")
        overrides = [o for o in spec.split(",") if o]
        for seed in args.seeds:
            for rule in args.threshold:
                oracle = rule.startswith("oracle:")
                cfg = compose([f"experiment={args.experiment}", f"seed={seed}",
                               f"task.detector.threshold={0.5 if oracle else rule}", f"paths.cache_dir={args.cache}",
                               "logger=none", "progress=false", *args.extra, *overrides])
                apply_cpu_threads(cfg.trainer)  # as a run does: another thread count trains another detector
                t0 = time.perf_counter()
                stage = proposal_stage(cfg)
                if oracle:
                    stage = oracle_stage(cfg, stage, float(rule.partition(":")[2]))
                row = {
                    "setting": name, "seed": seed, "rule": rule, "threshold": stage.threshold, "min_size_px": stage.min_size,
                    "pool": len(stage.pool), "pool_true": int(stage.pool.truth.sum()), "test": len(stage.test),
                    "pool_objects": len(stage.pool_objects), "seconds": time.perf_counter() - t0,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for setting in args.setting:
        name = setting.partition(":")[0]
        for rule in args.threshold:
            counts = [r["pool"] for r in rows if r["setting"] == name and r["rule"] == rule]
            summary[f"{name} threshold={rule}"] = spread(counts) | {"counts": counts}
    for key, s in summary.items():
        print(f"{key}: pool proposals {s['counts']}, mean {s['mean']:.0f}, CV {s['cv']:.3f},"
              f" largest deviation {100 * s['max_rel_dev']:.0f}%"
              f" -> {'within' if s['within_25pct'] else 'OUTSIDE'} +-25%")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
