"""``task=segment``: the annotator paints the mask of a whole patch; the task model is a U-Net.

Pool = square tiles of the pool sections (:mod:`dualstream.patches`); score = foreground IoU on the
held-out test tiles. Without ``data.labels`` (a lab's unlabelled volume) the pool is cut from every
selected section, there is no test set (the score is NaN) and no simulated annotator. With
``data.pool_store=disk`` the pool and the test tiles are written once to uint8 files under
``paths.cache_dir`` and read in batches (:mod:`dualstream.pool_store`).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import OmegaConf

from dualstream.artifacts import inject_from_config
from dualstream.disk_cache import locked
from dualstream.errors import ConfigError
from dualstream.loop import LoopSettings
from dualstream.oracle import SimulatedAnnotator
from dualstream.patches import build_pools, build_unlabelled_pool, depth_keys
from dualstream.pool_store import pool_store_mode, store_folder

if TYPE_CHECKING:
    from dualstream.tasks import TaskSetup

log = logging.getLogger(__name__)


def check_config(cfg: Any) -> None:
    """The dense task has no keys of its own beyond ``name`` and ``metric``."""


def raise_mc_samples(cfg: Any, wanted: int) -> None:
    cfg.model.module.mc_samples = max(int(cfg.model.module.get("mc_samples") or 1), wanted)


def networks_for_depth(cfg: Any, depth: int) -> tuple[Any, Any]:
    """The ``encoder`` and ``model`` configs the streams get: as given for 2D tiles (``depth == 1``);
    for 3D blocks, copies with ``module.ndim=3`` (the 3D SimCLR encoder and U-Net).

    Raises:
        ConfigError: 3D blocks with ``encoder=vae`` (2D only) or a ``module.ndim`` set by hand.
    """
    for group in ("encoder", "model"):
        if cfg[group].get("module") is not None and cfg[group].module.get("ndim") is not None:
            raise ConfigError(f"{group}.module.ndim: set from data.patch_depth; remove it")
    if depth == 1:
        return cfg.encoder, cfg.model
    if str(cfg.encoder.get("name") or "simclr") == "vae":
        raise ConfigError(f"encoder=vae is 2D only and data.patch_depth={depth}; use encoder=simclr or data.patch_depth=1")
    # Resolved, unlocked copies (Hydra's configs are in struct mode): the run's config stays as composed.
    three_d = {"module": {"ndim": 3}}
    return tuple(OmegaConf.merge(OmegaConf.to_container(cfg[g], resolve=True), three_d) for g in ("encoder", "model"))


def prepare(cfg: Any, run_dir: str | Path) -> "TaskSetup":
    from dualstream.streams.data_stream import fit_pool_streams
    from dualstream.streams.task_stream import TaskStream
    from dualstream.tasks import TaskSetup

    encoder_cfg, model_cfg = networks_for_depth(cfg, depth_keys(cfg.data)[0])  # before any volume is read
    on_disk = pool_store_mode(cfg.data) == "disk"  # refuses what needs the whole pool in memory, before any work
    # loop.initial=all: label the whole pool once -- the "every pool item" reference of the report.
    full_pool = str(cfg.loop.initial) == "all"
    if on_disk and full_pool:
        raise ConfigError(
            "data.pool_store=disk cannot be combined with loop.initial=all: labelling every item holds the whole pool"
            " and all its masks in memory; set data.pool_store=memory, or give a numeric budget (loop.initial, loop.batch)"
        )
    store_dir = store_folder(cfg.data, cfg.paths.get("cache_dir"), run_dir) if on_disk else None
    with locked(store_dir.with_suffix(".lock")) if store_dir is not None else nullcontext():
        # Runs of a sweep with the same data share one store: the first writes it, the others open it.
        if cfg.data.get("labels"):
            pool, test = build_pools(cfg.data, store_dir)
        else:
            pool, test = build_unlabelled_pool(cfg.data, store_dir), None
    if cfg.data.get("inject_artifacts"):
        pool = inject_from_config(pool, cfg.data, int(cfg.seed))
    artifacts = pool.is_artifact(cfg.loop.artifact_threshold)
    log.info(
        "pool: %d patches of %s%dx%d px (%s nm voxels), %d artifacts; test: %s",
        len(pool), f"{pool.depth} sections x " if pool.depth > 1 else "", pool.patch_size, pool.patch_size, "x".join(f"{v:g}" for v in pool.voxel_size), int(artifacts.sum()),
        f"{len(test)} patches" if test is not None else "none (no labels)",
    )
    settings = LoopSettings(len(pool), 1, 0) if full_pool else LoopSettings.from_config(cfg.loop, len(pool))
    settings.check(len(pool))  # fail on a bad budget before the encoder trains
    extra = {
        "pool_size": len(pool), "test_size": len(test) if test is not None else 0,
        "n_artifacts": int(artifacts.sum()), "full_pool": full_pool,
    }
    if on_disk:
        log.info("pool: on disk in %s (uint8, read in batches)", store_dir)
    empty = np.zeros((0, *pool.images.shape[1:]), dtype=np.float32)
    test_images = test.images if test is not None else empty
    test_labels = test.labels if test is not None else empty.astype(np.uint8)

    def streams():
        cache = cfg.paths.get("cache_dir")
        stream = fit_pool_streams(pool.images, encoder_cfg, cfg.get("screen_encoder"), cfg.trainer, cache)
        # Round 0 (the seed's random initial set) is the same fit for every acquisition: train it once.
        fits = Path(cache) / "fits" if cache else None
        return stream, TaskStream(model_cfg, cfg.trainer, pool.images, test_images, test_labels, fit_cache=fits)

    annotator = (
        SimulatedAnnotator(pool.labels, pool.ignore_share, cfg.loop.artifact_threshold) if test is not None else None
    )
    return TaskSetup(items=pool.images, settings=settings, streams=streams, annotator=annotator, extra=extra, pool=pool)
