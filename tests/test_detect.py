"""task=detect: the verifier, its task stream, and one tiny end-to-end run through the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dualstream.errors import ConfigError
from dualstream.models.verifier import VerificationClassifier
from dualstream.proposals import Proposals
from dualstream.streams.verification_stream import VerificationStream

from conftest import compose_config

BIN = Path(sys.executable).parent
RECORD_KEYS = {"round", "n_labeled", "n_queried", "n_skipped", "score", "stream_correlation", "seconds"}
DETECT_METRICS = {"precision", "recall", "f1", "centroid_distance_nm", "roi_accuracy", "always_false_accuracy"}
TRAINER = {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
VERIFIER = {"width": 4, "steps": 3, "batch_size": 4, "lr": 1e-3, "mc_samples": 3}
# The tiny runs' detector: a few steps, so its proposals are mostly noise, but there are plenty of them.
DETECT_TINY = [
    "task=detect",
    "task.crop_size=16",
    "task.detector.steps=20",
    "task.detector.train_patches=8",
    "task.detector.threshold=0.5",  # an undertrained detector is most stable around 0.5
    "task.verifier.width=4",
    "task.verifier.steps=3",
    "task.verifier.batch_size=4",
]


def dualstream(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([str(BIN / "dualstream"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def _test_proposals(n: int, crop: int, rng: np.random.Generator) -> tuple[Proposals, np.ndarray]:
    obj = np.array([0, -1, 1, -1, 0, -1][:n])
    cents = rng.random((n, 3)) * 100
    props = Proposals(
        crops=rng.random((n, 2, crop, crop)).astype(np.float32), boxes=np.zeros((n, 4), np.int64),
        centroids_vox=cents, centroids_nm=cents * 5, z=np.zeros(n, np.int64), ignore_share=np.zeros(n, np.float32),
        areas=np.ones(n, np.int64), scores=np.ones(n, np.float32), object_index=obj, iou=np.where(obj >= 0, 0.5, 0.0),
    )
    return props, rng.random((3, 3)) * 500


def test_verifier_shapes():
    module = VerificationClassifier(width=4)
    module.eval()
    x = torch.rand(5, 2, 24, 24)
    assert module(x).shape == (5,)
    p = module.predict_step((x,), 0)
    assert p.shape == (5,) and ((p >= 0) & (p <= 1)).all()


def test_verification_stream_trains_on_one_class_and_reports_metrics():
    """Every answer so far False (or True): BCE still trains, nothing crashes, the numbers are well formed."""
    rng = np.random.default_rng(0)
    test, objects_nm = _test_proposals(6, 16, rng)
    pool = rng.random((10, 2, 16, 16)).astype(np.float32)
    stream = VerificationStream(VERIFIER, TRAINER, pool, test, objects_nm)
    for answer in (0, 1):
        loss = stream.fit(pool[:4], np.full(4, answer, np.uint8), seed=answer)
        assert np.isfinite(loss)
        assert 0.0 <= stream.score() <= 1.0
        metrics = stream.metrics()
        assert set(metrics) == DETECT_METRICS
        assert stream.score() == metrics["f1"]
        assert abs(stream.roi_accuracy() - metrics["roi_accuracy"]) < 1e-6
        assert metrics["always_false_accuracy"] == float((test.truth == 0).mean())
        accepted = stream.test_probabilities() >= 0.5
        if accepted.any():
            assert 0.0 <= metrics["precision"] <= 1.0
        assert 0.0 <= metrics["recall"] <= 1.0 and 0.0 <= metrics["f1"] <= 1.0
        u = stream.pool_uncertainty()
        assert u.shape == (10,) and ((u >= 0) & (u <= 1)).all()
        p = stream.pool_probabilities()
        np.testing.assert_allclose(u, -(p * np.log2(p) + (1 - p) * np.log2(1 - p)), atol=1e-4)
        extras = stream.pool_extras()  # what margin / least_confidence / coreset / badge acquisitions read
        assert extras["margin"].shape == (10,) and extras["least_confidence"].shape == (10,)
        assert extras["task_embedding"].shape == (10, 16) and extras["grad_embedding"].shape == (10, 17)
        assert extras["bald"].shape == (10,) and (extras["bald"] >= -1e-6).all()
        np.testing.assert_allclose(extras["foreground"], p, atol=1e-5)  # foreground_random: p(True) per proposal


def test_detect_run_end_to_end(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    proc = dualstream(*tiny_overrides, *DETECT_TINY, "logger=none", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["task"] == "detect" and results["metric"] == "f1"
    records = results["records"]
    assert [r["round"] for r in records] == [0, 1] and [r["n_queried"] for r in records] == [4, 8]
    assert all((RECORD_KEYS | DETECT_METRICS) <= set(r) for r in records)
    assert all(0.0 <= r["score"] <= 1.0 for r in records)
    assert all(r["score"] == r["f1"] for r in records)  # the score is F1; ROI accuracy beside it
    assert all(0.0 <= r["always_false_accuracy"] <= 1.0 for r in records)
    assert results["n_proposals_pool"] >= 8 and results["n_proposals_test"] >= 1
    assert results["n_gt_objects_test"] >= 1
    for key in ("proposal_recall_pool", "proposal_recall_test"):
        assert 0.0 <= results[key] <= 1.0


def test_user_errors_name_the_key_to_change(tmp_path, tiny_overrides):
    """No proposals -> lower the threshold; budget over the proposals -> say how many there are.

    In-process (through runner.run, so the task=detect dispatch is covered) on two sections; the
    second call reuses the cached detector (the cache key leaves the threshold out).
    """
    from dualstream.errors import ConfigError, EmptyPoolError
    from dualstream.runner import run

    keep = [o for o in DETECT_TINY if not o.startswith(("task.detector.steps", "task.detector.threshold"))]
    base = [*tiny_overrides, *keep, "logger=none", "data.sections=0:2", "task.detector.steps=2"]
    with pytest.raises(EmptyPoolError, match=r"no proposals in the pool sections.*lower task\.detector\.threshold"):
        run(compose_config([*base, "task.detector.threshold=0.99999"]), tmp_path / "a")
    with pytest.raises(ConfigError, match=r"loop asks for 40004 queries.*only \d+ pool proposals"):
        run(compose_config([*base, "task.detector.threshold=0.01", "loop.rounds=10000"]), tmp_path / "b")
    assert len(list((tmp_path / "cache" / "detectors").glob("*/meta.json"))) == 1


def test_threshold_auto_on_held_out_tiles(tmp_path, tiny_overrides):
    """calibration_patches > 0: the threshold comes from painted pool tiles outside the training draw,
    read from the pool probability map; the cached detector is the same one (the key leaves it out)."""
    from dualstream.proposals import calibration_tiles, calibrate_threshold, cut_tiles, read_sections, section_tiles
    from dualstream.tasks.detect import check_config, proposal_stage

    keep = [o for o in DETECT_TINY if not o.startswith(("task.detector.steps", "task.detector.threshold"))]
    base = [*tiny_overrides, *keep, "logger=none", "data.sections=0:2", "task.detector.steps=2", "task.detector.target_recall=0.5"]
    with pytest.raises(ConfigError, match=r"calibration_patches=4 only acts with task\.detector\.threshold=auto"):
        check_config(compose_config([*base, "task.detector.threshold=0.5", "task.detector.calibration_patches=4"]))
    with pytest.raises(ConfigError, match=r"task\.detector\.calibration_patches"):
        check_config(compose_config([*base, "task.detector.threshold=auto", "task.detector.calibration_patches=-1"]))
    trained = proposal_stage(compose_config([*base, "task.detector.threshold=auto"]))
    cfg = compose_config([*base, "task.detector.threshold=auto", "task.detector.calibration_patches=4"])
    check_config(cfg)
    stage = proposal_stage(cfg)
    assert stage.probs.from_cache and stage.probs.key == trained.probs.key and stage.calibration_patches == 4
    pool, _ = read_sections(cfg.data)
    p = int(cfg.data.patch_size)
    chosen, masks = calibration_tiles(pool, p, cfg.task.detector, int(cfg.seed))
    expected = calibrate_threshold(cut_tiles(stage.probs.pool, section_tiles(pool, p), chosen, p), masks, 0.5)
    assert stage.threshold == expected
    assert trained.threshold == stage.probs.calibrated(0.5) and trained.calibration_patches == 0


def test_full_pool_reference_verifies_every_proposal_once(tmp_path, tiny_overrides):
    """loop.initial=all on the detect task: one round that answers every pool proposal (the report's reference)."""
    from dualstream.runner import run

    keep = [o for o in DETECT_TINY if not o.startswith("task.detector.threshold")]
    cfg = compose_config([*tiny_overrides, *keep, "logger=none", "data.sections=0:2", "task.detector.threshold=0.01", "loop.initial=all"])
    results = run(cfg, tmp_path / "full")
    assert results.extra["full_pool"] is True
    assert [r.round for r in results.records] == [0]
    assert results.records[0].n_queried == results.extra["n_proposals_pool"]


def test_injected_artifacts_land_on_pool_proposals_and_are_skipped(tmp_path, tiny_overrides):
    """data.inject_artifacts on the detect task: that share of pool proposals is corrupted and answered 'skip'."""
    from dualstream.runner import run

    base = [*tiny_overrides, *DETECT_TINY, "logger=none", "loop.initial=all"]
    clean = run(compose_config(base), tmp_path / "clean")
    dirty = run(compose_config([*base, "data.inject_artifacts=0.25"]), tmp_path / "dirty")
    n = dirty.extra["n_proposals_pool"]
    assert n == clean.extra["n_proposals_pool"] and clean.extra["n_artifacts"] == 0
    assert dirty.extra["n_artifacts"] == round(0.25 * n) > 0
    # verifying every proposal once: exactly the corrupted ones are skipped
    assert dirty.records[0].n_skipped == dirty.extra["n_artifacts"]


def test_proposal_count_script_oracle_and_held_out_rules(tmp_path, tiny_overrides):
    """experiments/scripts/detect_proposal_counts.py: a fixed threshold, threshold=auto on held-out tiles and
    the oracle bound share one cached detector per seed; the oracle keeps the asked share of the pool's
    own foreground pixels."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "scripts"))
    from detect_proposal_counts import main as counts_main

    from dualstream.proposals import read_sections

    keep = [o for o in DETECT_TINY if not o.startswith(("task.detector.steps", "task.detector.threshold"))]
    extra = [o for o in [*tiny_overrides, *keep] if not o.startswith(("experiment=", "paths.cache_dir="))]
    args = ["--experiment", "demo", "--seeds", "0", "1", "--setting", "tiny:data.sections=0:2,task.detector.steps=2",
            "--threshold", "0.5", "--threshold", "auto", "--threshold", "oracle:0.5", "--cache", str(tmp_path / "cache"),
            "--json", str(tmp_path / "counts.json"), "--extra", "task.detector.calibration_patches=4"]
    for o in extra:
        args += ["--extra", o]
    assert counts_main(args) == 0
    out = json.loads((tmp_path / "counts.json").read_text())
    assert len(out["rows"]) == 6 and len(list((tmp_path / "cache" / "detectors").glob("*/meta.json"))) == 2
    summary = out["summary"]["tiny threshold=oracle:0.5"]
    assert len(summary["counts"]) == 2 and summary["cv"] == pytest.approx(summary["sd"] / summary["mean"])
    # the oracle's threshold is the grid's highest keeping half the pool's foreground pixels
    from detect_proposal_counts import compose
    from dualstream.tasks.detect import proposal_stage

    cfg = compose(["experiment=demo", "seed=0", "task.detector.threshold=0.5", f"paths.cache_dir={tmp_path / 'cache'}",
                   *extra, "data.sections=0:2", "task.detector.steps=2"])
    probs = proposal_stage(cfg).probs.pool
    fg = probs[read_sections(cfg.data)[0].labels > 0]
    t = next(r["threshold"] for r in out["rows"] if r["rule"] == "oracle:0.5" and r["seed"] == 0)
    assert (fg >= t).mean() >= 0.5 and (t >= 0.98 or (fg >= t + 0.02 + 1e-6).mean() < 0.5)
