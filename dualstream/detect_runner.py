"""One ``task=detect`` run: sections -> detector -> proposals -> two streams -> loop -> results file.

The verification pipeline of Lin et al. (ECCV 2020): the annotator does not paint masks, a detector
proposes objects and the annotator marks each proposal True / False (or skips an artifact). The loop,
the acquisition functions and the results file are the dense task's; only what is queried (proposal
crops instead of patches) and the task model (a verifier instead of the U-Net) change.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dualstream.artifacts import corrupt_images, corrupt_proposals_from_config
from dualstream.errors import ConfigError, EmptyPoolError
from dualstream.loop import LoopSettings
from dualstream.matching import proposal_recall
from dualstream.oracle import ProposalAnnotator
from dualstream.proposals import Proposals, build_proposals, read_sections, run_detector
from dualstream.results import RunResults
from dualstream.runner import drive_loop
from dualstream.streams.data_stream import DataStream, fit_data_stream
from dualstream.streams.verification_stream import VerificationStream

log = logging.getLogger(__name__)


def run_detect(cfg: DictConfig, run_dir: str | Path) -> RunResults:
    """Run the proposal-verification loop the config describes; write ``results.json`` after every round.

    ``results.json`` has ``task: "detect"``, ``metric: "roi_accuracy"``, per-round ``precision``,
    ``recall``, ``f1``, ``centroid_distance_nm`` (test proposals the verifier accepts), and top-level
    ``n_proposals_pool``, ``n_proposals_test``, ``proposal_recall_pool``, ``proposal_recall_test``,
    ``n_gt_objects_pool``, ``n_gt_objects_test``.
    """
    run_dir = Path(run_dir)
    if cfg.trainer.get("cpu_threads"):
        torch.set_num_threads(int(cfg.trainer.cpu_threads))
    container = OmegaConf.to_container(cfg, resolve=True)
    task_cfg = cfg.task
    det = task_cfg.detector
    threshold, min_size, crop, match_iou = float(det.threshold), int(det.min_size), int(task_cfg.crop_size), float(task_cfg.match_iou)
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"task.detector.threshold must be in (0, 1), got {threshold}")
    if crop < 8:
        raise ConfigError(f"task.crop_size must be at least 8 pixels, got {crop}")
    if not 0.0 < match_iou <= 1.0:
        raise ConfigError(f"task.match_iou must be in (0, 1], got {match_iou}")
    if int(det.train_patches) < 1 or min_size < 1:
        raise ConfigError(f"task.detector.train_patches and task.detector.min_size must be >= 1, got {det.train_patches}, {min_size}")
    if not 0.0 <= float(det.get("positive_share", 0.5)) <= 1.0:
        raise ConfigError(f"task.detector.positive_share must be in [0, 1], got {det.positive_share}")
    artifact_threshold = float(cfg.loop.artifact_threshold)
    # loop.initial=all: verify every pool proposal once -- the "every pool item" reference of the report.
    full_pool = str(cfg.loop.initial) == "all"
    if not full_pool:
        settings = LoopSettings.from_config(cfg.loop)
        budget = settings.total
        settings.check(max(budget, 1))  # signs only, before the detector trains; the pool size is checked below

    pool_sec, test_sec = read_sections(cfg.data)
    cache_dir = cfg.paths.get("cache_dir")
    probs = run_detector(
        pool_sec, test_sec, det, cfg.trainer, int(cfg.data.patch_size), int(cfg.seed), artifact_threshold, cache_dir
    )
    pool, pool_objects = build_proposals(probs.pool, pool_sec, threshold, min_size, crop, match_iou)
    test, test_objects = build_proposals(probs.test, test_sec, threshold, min_size, crop, match_iou)
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
    results = RunResults(
        acquisition=cfg.acquisition.name, seed=int(cfg.seed), task=task_cfg.name, metric=task_cfg.metric, config=container, extra=extra
    )
    results.write(run_dir)  # the proposal stage's numbers survive even if the loop fails

    def streams() -> tuple[DataStream, VerificationStream]:
        # Data stream: the frozen encoder sees the image channel only (what a proposal looks like, not
        # what the detector thought of it), so typicality stays independent of the task stream.
        stream = fit_data_stream(pool.crops[:, 0], cfg.encoder, cfg.trainer, int(cfg.encoder.seed), cache_dir)
        return stream, VerificationStream(task_cfg.verifier, cfg.trainer, pool.crops, test, test_objects.centroids_nm)

    annotator = ProposalAnnotator(pool.truth, pool.ignore_share, artifact_threshold)
    return drive_loop(cfg, run_dir, results, pool.crops, streams, annotator, settings)


def corrupt_proposals(pool: Proposals, fraction: float, rng: np.random.Generator, kinds: Sequence[str] | None = None) -> Proposals:
    """``data.inject_artifacts`` on the detect task: a share of pool proposals lands on an EM defect.

    The image channel of ``round(fraction * N)`` proposal crops is corrupted (the detector's mask
    channel is kept: the detector fired there) and their ``ignore_share`` set to 1, so the annotator
    answers "skip".
    """
    images, kind = corrupt_images(pool.crops[:, 0], fraction, rng, kinds)
    crops = pool.crops.copy()
    crops[:, 0] = images
    ignore = np.where(kind != "", 1.0, pool.ignore_share).astype(np.float32)
    return replace(pool, crops=crops, ignore_share=ignore)

