"""How well does each stream see the injected artifacts of a pool, before any active learning? (issue 10)

For each experiment preset, builds its pool (artifacts injected as the preset says), loads the frozen
encoder's embedding (from the cache when a run trained it before, else trains it once), and scores
every artifact detector the acquisitions use against the ground-truth artifact mask:

- ``typicality``: the global kNN typicality that ``dualstream`` (v1) multiplies in (low = atypical);
  AUROC of ``-typicality``, and the share of artifacts in the pool's least typical decile.
- ``veto k=K``: ``dualstream_v2``'s LOF-style veto (robust z of log relative density > 3.5 and ratio
  > 2) with ``K`` neighbours; AUROC of the outlier z, share of artifacts and of clean items vetoed.
- ``cluster veto``: ``dualstream_v2``'s experimental near-identical-cluster veto at ``--cluster-share``.
- ``pixel_veto``: max robust |z| of the pixel statistics > 3.5 (the baseline with no learned stream).

``--plot`` draws their ROC curves, one panel per setting.

No labels of the task are used; this measures only whether a veto *can* see a setting's artifacts.

    python experiments/scripts/artifact_audit.py --experiment mito_epfl_artifacts mito_epfl_clustered \\
        mito_epfl_foreign --cache /work/cache --json experiments/results/artifact_audit/audit.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from detect_proposal_counts import compose  # the scripts' one Hydra compose helper (same folder)

ROOT = Path(__file__).resolve().parents[2]


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` ``(N,)`` for the ``positive`` ``(N,)`` bool items (ties count half)."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    u = rankdata(score)[positive].sum() - n_pos * (n_pos + 1) / 2  # Mann-Whitney U of the positives
    return float(u / (n_pos * n_neg))


def flagged(mask: np.ndarray, artifacts: np.ndarray) -> dict[str, float]:
    """Share of artifacts and of clean items in ``mask``."""
    return {"artifacts": float(mask[artifacts].mean()) if artifacts.any() else float("nan"),
            "clean": float(mask[~artifacts].mean())}


def audit(experiment: str, cache: str | None, ks: list[int], cluster_share: float, extra: list[str]) -> dict:
    from dualstream.acquisition.dualstream_v2 import veto_mask
    from dualstream.acquisition.pixel_veto import robust_z as pixel_z
    from dualstream.streams.data_stream import fit_data_stream
    from dualstream.streams.pixel_stats import pixel_statistics
    from dualstream.streams.structure import embedding_structure
    from dualstream.tasks import segment
    from dualstream.trainer import apply_cpu_threads

    overrides = [f"experiment={experiment}", "progress=false", "logger=none", *extra]
    if cache:
        overrides.append(f"paths.cache_dir={cache}")
    cfg = compose(overrides)
    apply_cpu_threads(cfg.trainer)  # an encoder trained here must be the one a run with these overrides trains
    with tempfile.TemporaryDirectory() as run_dir:
        setup = segment.prepare(cfg, run_dir)
    pool = setup.pool
    artifacts = np.asarray(pool.is_artifact(cfg.loop.artifact_threshold), dtype=bool)
    encoder_cfg, _ = segment.networks_for_depth(cfg, 1)
    stream = fit_data_stream(pool.images, encoder_cfg, cfg.trainer, int(cfg.encoder.seed), cache)
    out: dict = {"experiment": experiment, "pool": len(pool), "artifacts": int(artifacts.sum()),
                 "encoder_from_cache": bool(stream.from_cache), "detectors": {}}
    typ = np.asarray(stream.typicality, dtype=np.float64)
    low = typ <= np.quantile(typ, 0.1)
    scores = {"v1 typicality (low)": -typ}
    out["detectors"]["typicality (v1)"] = {"auroc": auroc(-typ, artifacts), "least typical decile": flagged(low, artifacts)}
    for k in ks:
        s = embedding_structure(stream.embedding, k=k)
        out["detectors"][f"veto k={k}"] = {"auroc": auroc(s.outlier_z, artifacts), "vetoed": flagged(veto_mask(s), artifacts)}
        scores[f"LOF outlier z, k={k}"] = s.outlier_z
        if cluster_share > 0:
            out["detectors"][f"veto k={k} + cluster veto {cluster_share:g}"] = {
                "auroc": float("nan"), "vetoed": flagged(veto_mask(s, cluster_share=cluster_share), artifacts)}
    z = np.nanmax(np.abs(pixel_z(pixel_statistics(pool.images))), axis=1)
    out["detectors"]["pixel_veto"] = {"auroc": auroc(z, artifacts), "vetoed": flagged(z > 3.5, artifacts)}
    scores["pixel statistics max |z|"] = z
    return out, (scores, artifacts)


def roc(score: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(false positive rate, true positive rate)`` of ``score`` ``(N,)`` over all thresholds, highest first."""
    order = np.argsort(-score, kind="stable")
    hits = np.asarray(positive, dtype=bool)[order]
    tpr = np.concatenate([[0.0], np.cumsum(hits) / max(hits.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(~hits) / max((~hits).sum(), 1)])
    return fpr, tpr


def plot(results: list[dict], curves: list[tuple[dict, np.ndarray]], path: str) -> None:
    """One ROC panel per setting with artifacts: typicality, the LOF score at the largest k, pixel statistics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(r, c) for r, c in zip(results, curves) if r["artifacts"]]
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(3.6 * max(len(shown), 1), 3.6), squeeze=False)
    for ax, (r, (scores, artifacts)) in zip(axes[0], shown):
        lof = [n for n in scores if n.startswith("LOF")]
        for name in [n for n in scores if not n.startswith("LOF")][:1] + lof[-1:] + [n for n in scores if n.startswith("pixel")]:
            fpr, tpr = roc(np.nan_to_num(scores[name], nan=np.inf), artifacts)
            ax.plot(fpr, tpr, label=f"{name} ({auroc(scores[name], artifacts):.2f})")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"{r['experiment']}\n{r['artifacts']} artifacts / {r['pool']}", fontsize=9)
        ax.set_xlabel("clean patches flagged")
        ax.legend(fontsize=6, loc="lower right")
    axes[0][0].set_ylabel("artifacts flagged")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results: list[dict]) -> str:
    lines = ["| setting | detector | AUROC | artifacts flagged | clean flagged |", "|---|---|---|---|---|"]
    for r in results:
        for name, d in r["detectors"].items():
            f = d.get("vetoed") or d.get("least typical decile")
            au = "-" if np.isnan(d["auroc"]) else f"{d['auroc']:.3f}"
            hit = "-" if np.isnan(f["artifacts"]) else f"{100 * f['artifacts']:.1f}%"
            lines.append(f"| {r['experiment']} ({r['artifacts']}/{r['pool']}) | {name} | {au} | {hit} | {100 * f['clean']:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", nargs="+", default=["mito_epfl_artifacts", "mito_epfl_clustered", "mito_epfl_foreign"])
    parser.add_argument("--cache", default=None, help="encoder cache (paths.cache_dir of the sweeps): reuses their encoders")
    parser.add_argument("--k", type=int, nargs="+", default=[20, 50, 150], help="neighbours of the LOF-style veto")
    parser.add_argument("--cluster-share", type=float, default=0.2, help="dualstream_v2 veto_cluster_share to try (0 = skip)")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every experiment")
    parser.add_argument("--json", default=None, help="write the raw numbers here")
    parser.add_argument("--plot", default=None, help="write ROC curves (one panel per setting) to this PNG")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    pairs = [audit(e, args.cache, args.k, args.cluster_share, args.extra) for e in args.experiment]
    results = [r for r, _ in pairs]
    print(table(results))
    if args.plot:
        plot(results, [c for _, c in pairs], args.plot)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
