"""``task=detect``: sections -> detector -> proposals; the annotator says True / False per proposal.

The verification pipeline of Lin et al. (ECCV 2020): the annotator does not paint masks, a detector
proposes objects and the annotator marks each proposal True / False (or skips an artifact). The loop,
the acquisition functions and the results file are the dense task's; only what is queried (proposal
crops instead of patches) and the task model (a verifier instead of the U-Net) change.

``results.json`` has ``task: "detect"``, ``metric: "f1"`` (of the test proposals the verifier accepts;
``task.metric=roi_accuracy`` for the older score), per-round ``precision``, ``recall``, ``f1``,
``centroid_distance_nm``, ``roi_accuracy`` and ``always_false_accuracy`` (the ROI accuracy of answering
False to every test proposal: the floor ROI accuracy must be read against), and top-level
``n_proposals_pool``, ``n_proposals_test``, ``proposal_recall_pool``, ``proposal_recall_test``,
``n_gt_objects_pool``, ``n_gt_objects_test``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualstream.artifacts import corrupt_proposals_from_config
from dualstream.errors import ConfigError, EmptyPoolError
from dualstream.loop import LoopSettings
from dualstream.matching import proposal_recall
from dualstream.oracle import ProposalAnnotator
from dualstream.proposals import (
    build_proposals, detector_threshold, heldout_threshold, min_component_size, read_sections, run_detector,
)

if TYPE_CHECKING:
    from dualstream.tasks import TaskSetup

log = logging.getLogger(__name__)


def check_config(cfg: Any) -> None:
    """The detector's and the verifier's keys (types and ranges), before anything trains."""
    from dualstream.models.segmentation import SegmentationModule
    from dualstream.validate import _check_kwargs, check_bool, check_int, check_number

    check_int(cfg, "task.crop_size", 8)
    if str(cfg.data.get("pool_store") or "memory") != "memory":
        raise ConfigError(
            f"data.pool_store={cfg.data.pool_store}: the detect task keeps its proposal crops in memory;"
            " set data.pool_store=memory (the disk pool store is for task=segment)"
        )
    check_number(cfg, "task.match_iou", 0.0, 1.0, low_open=True)
    check_int(cfg, "task.detector.train_patches", 1)
    check_number(cfg, "task.detector.positive_share", 0.0, 1.0, default=0.5)
    if str(cfg.task.detector.get("threshold")) != "auto":
        check_number(cfg, "task.detector.threshold", 0.0, 1.0, low_open=True, high_open=True)
    check_number(cfg, "task.detector.target_recall", 0.0, 1.0, low_open=True, high_open=True, default=0.9)
    check_int(cfg, "task.detector.calibration_patches", 0, default=0)
    if int(cfg.task.detector.get("calibration_patches") or 0) and str(cfg.task.detector.get("threshold")) != "auto":
        raise ConfigError(
            f"task.detector.calibration_patches={cfg.task.detector.calibration_patches} only acts with"
            f" task.detector.threshold=auto (got {cfg.task.detector.threshold}); set threshold=auto or calibration_patches=0"
        )
    if cfg.task.detector.get("min_area_nm2") is not None:
        check_number(cfg, "task.detector.min_area_nm2", 0.0, low_open=True)
    check_int(cfg, "task.detector.min_size", 1)
    check_int(cfg, "task.detector.steps", 1)
    check_int(cfg, "task.detector.ensemble", 1, default=1)
    check_bool(cfg, "task.detector.tta", default=False)
    check_int(cfg, "task.detector.batch_size", 1)
    _check_kwargs(cfg, "task.detector.module", SegmentationModule, "the detector's U-Net")
    check_int(cfg, "task.verifier.steps", 1)
    check_int(cfg, "task.verifier.batch_size", 1)
    check_int(cfg, "task.verifier.mc_samples", 1, default=1)
    check_number(cfg, "task.verifier.lr", 0.0, low_open=True)
    check_number(cfg, "task.verifier.dropout", 0.0, 1.0, high_open=True)


def raise_mc_samples(cfg: Any, wanted: int) -> None:
    cfg.task.verifier.mc_samples = max(int(cfg.task.verifier.get("mc_samples") or 1), wanted)


@dataclass
class ProposalStage:
    """What the detector made of the pool and test sections (before any active learning)."""

    pool: Any  # Proposals
    test: Any  # Proposals
    pool_objects: Any  # GroundTruthObjects
    test_objects: Any
    probs: Any  # DetectorOutput
    threshold: float
    min_size: int
    calibration_patches: int = 0  # painted tiles held out of training that set the threshold (0: none)


def proposal_stage(cfg: Any) -> ProposalStage:
    """Train (or load) the detector, threshold its probabilities (calibrated with ``threshold=auto``),
    cut the proposals and match them to the ground truth. Shared by :func:`prepare` and the proposal
    stability benchmark (``experiments/scripts/detect_proposal_counts.py``)."""
    det = cfg.task.detector
    auto = str(det.threshold) == "auto"
    target_recall = float(det.get("target_recall") or 0.9)
    crop, match_iou = int(cfg.task.crop_size), float(cfg.task.match_iou)
    pool_sec, test_sec = read_sections(cfg.data)
    probs = run_detector(
        pool_sec, test_sec, det, cfg.trainer, int(cfg.data.patch_size), int(cfg.seed),
        float(cfg.loop.artifact_threshold), cfg.paths.get("cache_dir"),
    )
    heldout = None
    if auto and int(det.get("calibration_patches") or 0):
        heldout = heldout_threshold(
            probs.pool, pool_sec, int(cfg.data.patch_size), det, int(cfg.seed), target_recall, float(cfg.loop.artifact_threshold)
        )
        if heldout.foreground_pixels == 0:
            log.warning("detector: the %d held-out calibration tiles hold no foreground; threshold 0.5", heldout.tiles)
    threshold = detector_threshold(det, heldout.threshold if heldout else probs.calibrated(target_recall) if auto else None)
    min_size = min_component_size(det, pool_sec.voxel_size)
    if heldout:
        log.info(
            "detector: threshold %.2f keeps %.0f%% of the foreground of %d held-out painted tiles (%d with foreground)",
            threshold, 100 * target_recall, heldout.tiles, heldout.foreground_tiles,
        )
    elif auto:
        log.info("detector: threshold %.2f keeps %.0f%% of its training foreground pixels", threshold, 100 * target_recall)
    pool, pool_objects = build_proposals(probs.pool, pool_sec, threshold, min_size, crop, match_iou)
    test, test_objects = build_proposals(probs.test, test_sec, threshold, min_size, crop, match_iou)
    return ProposalStage(pool, test, pool_objects, test_objects, probs, threshold, min_size, heldout.tiles if heldout else 0)


def prepare(cfg: Any, run_dir: str | Path) -> "TaskSetup":
    from dualstream.streams.data_stream import fit_pool_streams
    from dualstream.streams.verification_stream import VerificationStream
    from dualstream.tasks import TaskSetup

    task_cfg = cfg.task
    check_config(cfg)  # the runner checked already; a direct caller gets the same one-line errors
    if not cfg.data.get("labels"):
        raise ConfigError("task=detect needs data.labels (the detector is trained on labelled patches); give data.labels")
    artifact_threshold = float(cfg.loop.artifact_threshold)
    # loop.initial=all: verify every pool proposal once -- the "every pool item" reference of the report.
    full_pool = str(cfg.loop.initial) == "all"
    if not full_pool:
        settings = LoopSettings.from_config(cfg.loop)
        budget = settings.total
        settings.check(max(budget, 1))  # signs only, before the detector trains; the pool size is checked below

    stage = proposal_stage(cfg)
    pool, test, pool_objects, test_objects, probs = stage.pool, stage.test, stage.pool_objects, stage.test_objects, stage.probs
    threshold, min_size, cache_dir = stage.threshold, stage.min_size, cfg.paths.get("cache_dir")
    for name, props in (("pool", pool), ("test", test)):
        if len(props) == 0:
            raise EmptyPoolError(
                f"the detector found no proposals in the {name} sections (probability >= task.detector.threshold={threshold},"
                f" >= task.detector.min_size={min_size} pixels); lower task.detector.threshold or task.detector.min_size,"
                " or train it longer (task.detector.steps, task.detector.train_patches)"
            )
    if full_pool:
        settings = LoopSettings(len(pool), 1, 0)
    elif budget > len(pool):
        raise ConfigError(
            f"the loop asks for {budget} queries (loop.schedule, or loop.initial + loop.rounds x loop.batch)"
            f" but the detector made only {len(pool)} pool proposals; lower them,"
            " or lower task.detector.threshold for more proposals"
        )
    if cfg.data.get("inject_artifacts"):
        pool = corrupt_proposals_from_config(pool, cfg.data, int(cfg.seed))
    artifacts = pool.ignore_share >= artifact_threshold
    extra = {
        "pool_size": len(pool),
        "test_size": len(test),
        "n_artifacts": int(artifacts.sum()),
        "n_proposals_pool": len(pool),
        "n_proposals_test": len(test),
        "n_true_proposals_pool": int(pool.truth.sum()),
        "n_true_proposals_test": int(test.truth.sum()),
        "n_gt_objects_pool": len(pool_objects),
        "n_gt_objects_test": len(test_objects),
        "proposal_recall_pool": proposal_recall(pool.object_index, len(pool_objects)),
        "proposal_recall_test": proposal_recall(test.object_index, len(test_objects)),
        "detector_threshold": threshold,
        "detector_calibration_patches": stage.calibration_patches,
        "detector_min_size_px": min_size,
        "detector_seconds": probs.seconds,
        "detector_cached": probs.from_cache,
        "detector_key": probs.key,
        "full_pool": full_pool,
    }
    log.info(
        "proposals: pool %d (%d True) for %d objects, recall %.3f; test %d (%d True) for %d objects, recall %.3f",
        len(pool), extra["n_true_proposals_pool"], len(pool_objects), extra["proposal_recall_pool"],
        len(test), extra["n_true_proposals_test"], len(test_objects), extra["proposal_recall_test"],
    )

    def streams():
        # Data stream: the frozen encoder sees the image channel only (what a proposal looks like, not
        # what the detector thought of it), so typicality stays independent of the task stream.
        stream = fit_pool_streams(pool.crops[:, 0], cfg.encoder, cfg.get("screen_encoder"), cfg.trainer, cache_dir)
        return stream, VerificationStream(
            task_cfg.verifier, cfg.trainer, pool.crops, test, test_objects.centroids_nm, metric=str(task_cfg.metric)
        )

    annotator = ProposalAnnotator(pool.truth, pool.ignore_share, artifact_threshold)
    return TaskSetup(items=pool.crops, settings=settings, streams=streams, annotator=annotator, extra=extra, pool=pool)
