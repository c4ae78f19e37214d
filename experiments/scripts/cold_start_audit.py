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
        --json experiments/results/cold_start_audit/audit.json --plot experiments/results/cold_start_audit/picks.png
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


#: How the figure names the settings and variants.
NAMES = {"mito_epfl_artifacts": "scattered tiles", "mito_epfl_clustered": "whole sections", "mito_epfl_foreign": "foreign tissue",
         "simclr": "SimCLR, unscreened", "vae+screen": "default, screened"}


def audit(experiment: str, seeds: list[int], batches: list[int], cache: str | None, extra: list[str] = ()) -> tuple[dict, tuple]:
    """Every variant's cold-start picks on ``experiment``'s pool for each seed and batch size.

    Returns:
        ``(result, (images, artifacts))``: the JSON-able result (``runs``: one row per seed x variant x
        batch with its ``picks`` and counts) and, for the figure, the ``(N, P, P)`` pool and its ``(N,)``
        artifact mask.
    """
    from dualstream.acquisition import PoolView
    from dualstream.loop import cold_start_selection
    from dualstream.runner import COLD_SCREEN_DEFAULTS
    from dualstream.streams.data_stream import fit_data_stream
    from dualstream.streams.pixel_stats import pixel_statistics
    from dualstream.tasks import segment
    from dualstream.trainer import apply_cpu_threads

    base = [f"experiment={experiment}", "progress=false", "logger=none", "trainer.cpu_threads=1", *extra]
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
    return out, (images, artifacts)


def plot(results: list[dict], pools: list[tuple], path: str, rows=("simclr", "vae+screen")) -> None:
    """The first seed's first batch (the smallest ``--batch``) in each artifact setting, one row per
    variant in ``rows``: each pick's patch, outlined red when it lies on an artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(r, p) for r, p in zip(results, pools) if r["artifacts"]]
    if not shown:
        return
    k = min(x["batch"] for x in shown[0][0]["runs"])
    seed = shown[0][0]["runs"][0]["seed"]
    fig, axes = plt.subplots(len(shown) * len(rows), k, figsize=(1.1 * k, 1.25 * len(shown) * len(rows)), squeeze=False)
    for i, (r, (images, artifacts)) in enumerate(shown):
        for j, variant in enumerate(rows):
            picks = next(x["picks"] for x in r["runs"] if x["seed"] == seed and x["batch"] == k and x["variant"] == variant)
            for c, ax in enumerate(axes[i * len(rows) + j]):
                ax.imshow(np.asarray(images[picks[c]]), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                bad = bool(artifacts[picks[c]])
                for side in ax.spines.values():
                    side.set_color("red" if bad else "0.7"), side.set_linewidth(3 if bad else 0.5)
            name = NAMES.get(r["experiment"], r["experiment"])
            axes[i * len(rows) + j][0].set_ylabel(f"{name}\n{NAMES.get(variant, variant)}", fontsize=7)
    fig.suptitle(f"cold start, seed {seed}: TypiClust's first {k} picks (red: on an artifact)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    parser.add_argument("--plot", default=None, help="draw the first seed's picks, unscreened SimCLR against the screened default, here (.png)")
    args = parser.parse_args(argv)
    audited = [audit(e, args.seeds, args.batch, args.cache) for e in args.experiment]
    results = [a for a, _ in audited]
    print(table(results))
    if args.plot:
        plot(results, [p for _, p in audited], args.plot)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
