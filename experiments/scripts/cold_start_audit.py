"""Where does a lab's first batch go? The cold start (no labels) with and without its quality screen.

A lab's loop (``dualstream-suggest``) starts from the data stream alone: TypiClust on the frozen
embedding picks the first ``B`` patches. TypiClust covers the embedding's largest clusters with their
most typical members, so a whole corrupted section (dozens of near-identical tiles: a large, dense
cluster) is exactly what it picks. This script runs the loop's own cold start
(:func:`dualstream.loop.cold_start_selection`, the seed's cold-start generator ``[seed, 0]``) on each
preset's pool for several seeds and counts the picks that land on artifacts and on patches holding
foreground, for each variant:

- ``simclr``: SimCLR weight, no screen (the lab loop until session 20)
- ``simclr+screen``: SimCLR weight, screened (pixel statistics and SimCLR's outlier mode)
- ``vae``: the VAE weight, no screen
- ``vae+screen``: the VAE weight screened by the pixel statistics and SimCLR's outlier mode (the default
  ``dualstream``'s encoders and screen)

Encoders come from the presets (weight encoders with ``encoder.seed=0``; the SimCLR screen with the run
seed, as in the benchmark runs) and from the cache when the sweeps trained them. No task model is
trained: this measures the first batch only.

    python experiments/scripts/cold_start_audit.py --experiment mito_epfl mito_epfl_artifacts \\
        mito_epfl_clustered mito_epfl_foreign --seeds 0 1 2 3 4 5 6 7 8 9 --batch 8 16 --cache /work/cache \\
        --json experiments/results/cold_start_audit/audit.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from detect_proposal_counts import compose  # the scripts' one Hydra compose helper (same folder)

VARIANTS = ("simclr", "simclr+screen", "vae", "vae+screen")


def audit(experiment: str, seeds: list[int], batches: list[int], cache: str | None) -> dict:
    from dualstream.acquisition import PoolView
    from dualstream.loop import cold_start_selection
    from dualstream.runner import COLD_SCREEN_DEFAULTS
    from dualstream.streams.data_stream import fit_data_stream
    from dualstream.streams.pixel_stats import pixel_statistics
    from dualstream.tasks import segment
    from dualstream.trainer import apply_cpu_threads

    base = [f"experiment={experiment}", "progress=false", "logger=none", "trainer.cpu_threads=1"]
    if cache:
        base.append(f"paths.cache_dir={cache}")
    cfg = compose([*base, "acquisition=dualstream"])
    apply_cpu_threads(cfg.trainer)  # the encoders a run with these overrides trains (cache keys)
    with tempfile.TemporaryDirectory() as run_dir:
        pool = segment.prepare(cfg, run_dir).pool
    images = pool.images
    artifacts = np.asarray(pool.is_artifact(cfg.loop.artifact_threshold), dtype=bool)
    foreground = np.asarray(pool.labels, dtype=bool).reshape(len(pool), -1).any(axis=1)
    stats = pixel_statistics(images)
    weights = {
        "vae": fit_data_stream(images, cfg.encoder, cfg.trainer, int(cfg.encoder.seed), cache),
        "simclr": fit_data_stream(images, compose([*base, "encoder=simclr"]).encoder, cfg.trainer, 0, cache),
    }
    out: dict = {"experiment": experiment, "pool": len(pool), "artifacts": int(artifacts.sum()),
                 "foreground_items": int(foreground.sum()), "runs": []}
    for seed in seeds:
        screen_cfg = compose([*base, "acquisition=dualstream", f"seed={seed}"]).screen_encoder
        screen = fit_data_stream(images, screen_cfg, cfg.trainer, int(screen_cfg.seed), cache)
        for variant in VARIANTS:
            weight = weights[variant.split("+")[0]]
            extras = {"pixel_stats": stats, "screen_embedding": np.asarray(screen.embedding)}
            view = PoolView(weight.embedding, weight.typicality, np.full(len(pool), np.nan), np.zeros(len(pool), bool), extras)
            for k in batches:
                sel = cold_start_selection("typiclust", view, k, np.random.default_rng([seed, 0]),
                                           dict(COLD_SCREEN_DEFAULTS) if variant.endswith("+screen") else None)
                idx = np.asarray(sel.indices)
                out["runs"].append({"seed": seed, "variant": variant, "batch": k, "picks": idx.tolist(),
                                    "on_artifacts": int(artifacts[idx].sum()), "with_foreground": int(foreground[idx].sum())})
        print(f"{experiment}: seed {seed} done", file=sys.stderr, flush=True)
    return out


def table(results: list[dict]) -> str:
    lines = ["| setting | batch | variant | picks on artifacts (sum over seeds) | seeds with any | picks with foreground (mean) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for k in sorted({x["batch"] for x in r["runs"]}):
            for variant in VARIANTS:
                rows = [x for x in r["runs"] if x["batch"] == k and x["variant"] == variant]
                waste = sum(x["on_artifacts"] for x in rows)
                lines.append(
                    f"| {r['experiment']} ({r['artifacts']}/{r['pool']}) | {k} | {variant} | {waste} of {k * len(rows)}"
                    f" ({100 * waste / max(k * len(rows), 1):.1f}%) | {sum(x['on_artifacts'] > 0 for x in rows)} of {len(rows)}"
                    f" | {np.mean([x['with_foreground'] for x in rows]):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", nargs="+", default=["mito_epfl_artifacts", "mito_epfl_clustered", "mito_epfl_foreign"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--batch", nargs="+", type=int, default=[8])
    parser.add_argument("--cache", default=None, help="encoder cache (paths.cache_dir of the sweeps): reuses their encoders")
    parser.add_argument("--json", default=None, help="write every pick here")
    args = parser.parse_args(argv)
    results = [audit(e, args.seeds, args.batch, args.cache) for e in args.experiment]
    print(table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
