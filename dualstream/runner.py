"""One run from a composed config: data -> two streams -> loop -> results file and logger.

This is the only place that knows every config group; the pieces it wires never read configs whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dualstream.artifacts import inject_from_config
from dualstream.loop import ActiveLearningLoop, LoopSettings, TaskModel
from dualstream.oracle import Annotator, SimulatedAnnotator
from dualstream.patches import build_pools
from dualstream.results import (
    RESULTS_FILE, RoundRecord, RunResults, area_under_curve, load_results, log_area_under_curve,
)
from dualstream.state import LoopState, clear_state, config_hash, pool_fingerprint
from dualstream.streams.data_stream import DataStream, fit_data_stream
from dualstream.streams.pixel_stats import pixel_statistics
from dualstream.streams.task_stream import TaskStream
from dualstream.tracking import make_tracker

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: str | Path) -> RunResults:
    """Run the loop the config describes; write ``results.json`` into ``run_dir`` after every round."""
    apply_acquisition_needs(cfg)
    if cfg.task.name == "detect":
        from dualstream.detect_runner import run_detect

        return run_detect(cfg, run_dir)
    run_dir = Path(run_dir)
    if cfg.trainer.get("cpu_threads"):
        torch.set_num_threads(int(cfg.trainer.cpu_threads))
    container = OmegaConf.to_container(cfg, resolve=True)
    pool, test = build_pools(cfg.data)
    if cfg.data.get("inject_artifacts"):
        pool = inject_from_config(pool, cfg.data, int(cfg.seed))
    artifacts = pool.is_artifact(cfg.loop.artifact_threshold)
    log.info(
        "pool: %d patches of %dx%d px (%s nm voxels), %d artifacts; test: %d patches",
        len(pool), pool.patch_size, pool.patch_size, "x".join(f"{v:g}" for v in pool.voxel_size), int(artifacts.sum()), len(test),
    )
    # loop.initial=all: label the whole pool once -- the "every pool item" reference of the report.
    full_pool = str(cfg.loop.initial) == "all"
    settings = (
        LoopSettings(len(pool), 1, 0) if full_pool else LoopSettings.from_config(cfg.loop)
    )
    settings.check(len(pool))  # fail on a bad budget before the encoder trains
    results = RunResults(
        acquisition=cfg.acquisition.name,
        seed=int(cfg.seed),
        task=cfg.task.name,
        metric=cfg.task.metric,
        config=container,
        extra={"pool_size": len(pool), "test_size": len(test), "n_artifacts": int(artifacts.sum()), "full_pool": full_pool},
    )

    def streams() -> tuple[DataStream, TaskStream]:
        stream = fit_data_stream(pool.images, cfg.encoder, cfg.trainer, int(cfg.encoder.seed), cfg.paths.get("cache_dir"))
        cache = cfg.paths.get("cache_dir")
        # Round 0 (the seed's random initial set) is the same fit for every acquisition: train it once.
        fits = Path(cache) / "fits" if cache else None
        return stream, TaskStream(cfg.model, cfg.trainer, pool.images, test.images, test.labels, fit_cache=fits)

    annotator = SimulatedAnnotator(pool.labels, pool.ignore_share, cfg.loop.artifact_threshold)
    return drive_loop(cfg, run_dir, results, pool.images, streams, annotator, settings)


def apply_acquisition_needs(cfg: DictConfig) -> None:
    """Raise the task model's MC-dropout samples to what the acquisition asks for (``acquisition.mc_samples``).

    BALD needs T > 1 stochastic passes; every other strategy keeps the deterministic prediction, so a
    sweep over the zoo pays for MC sampling in the BALD runs only. The results file records the value used.
    """
    wanted = int(cfg.acquisition.get("mc_samples") or 1)
    if wanted <= 1:
        return
    if cfg.task.name == "detect":
        cfg.task.verifier.mc_samples = max(int(cfg.task.verifier.get("mc_samples") or 1), wanted)
    else:
        cfg.model.module.mc_samples = max(int(cfg.model.module.get("mc_samples") or 1), wanted)


def drive_loop(
    cfg: DictConfig,
    run_dir: Path,
    results: RunResults,
    items: np.ndarray,
    streams: Callable[[], tuple[DataStream, TaskModel]],
    annotator: Annotator,
    settings: LoopSettings,
) -> RunResults:
    """Start the logger, build the two streams, run the loop; rewrite ``results.json`` after each round.

    Shared by every task: ``items`` are what the annotator is shown (patches, proposal crops) and
    ``streams()`` trains the data stream and makes the task model (inside the logger's lifetime, so a
    failure is logged as one).

    After each round the loop state is saved too (``loop_state.npz``, see :mod:`dualstream.state`);
    with ``resume`` (default true) a run directory holding a state resumes after its last round, or
    returns at once when the run is already finished; ``resume=false`` discards the state and starts over.
    """
    state_hash, fingerprint = config_hash(results.config), pool_fingerprint(items)
    state = None
    if cfg.get("resume", True):
        state = LoopState.load(run_dir)
        if state is not None:
            state.check(state_hash, fingerprint, run_dir)
    elif clear_state(run_dir):
        log.warning("resume=false: discarded the loop state in %s, starting over", run_dir)
    if state is not None:
        results.records = [RoundRecord(**r) for r in state.records]
        results.extra["aulc"] = area_under_curve(results.records)
        results.extra["aulc_log2"] = log_area_under_curve(results.records)
        if state.finished:
            done = run_dir / RESULTS_FILE
            if done.exists():  # keep what the finished run measured beside the records (encoder seconds, ...)
                try:
                    old = load_results(done)
                except ValueError:
                    old = {}
                for key, value in old.items():
                    if key not in ("acquisition", "seed", "task", "metric", "config", "records"):
                        results.extra.setdefault(key, value)
            results.write(run_dir)
            log.info("%s: already finished (%d rounds), nothing to do", run_dir, state.round + 1)
            return results
    tracker = make_tracker(cfg.logger, run_dir, f"{results.acquisition}-s{results.seed}", results.config)
    status = "failed"
    try:
        stream, task = streams()
        results.extra.update(encoder_seconds=stream.seconds, encoder_cached=stream.from_cache, encoder_key=stream.key)

        def on_round(record: RoundRecord) -> None:
            # The state first: it is what a rerun resumes from; results.json is rebuilt from it.
            loop.snapshot(state_hash, fingerprint).save(run_dir)
            results.records.append(record)
            results.extra["aulc"] = area_under_curve(results.records)
            results.extra["aulc_log2"] = log_area_under_curve(results.records)
            results.write(run_dir)
            tracker.log({k: v for k, v in record.to_dict().items() if k != "round"}, step=record.round)

        # Pixel statistics of what the annotator sees (the image channel of proposal crops): fixed per pool.
        static = {"pixel_stats": pixel_statistics(items if items.ndim == 3 else items[:, 0])}
        loop = ActiveLearningLoop(
            items, stream, task, annotator, results.acquisition, cfg.acquisition.get("params") or {}, settings,
            results.seed, on_round=on_round, progress=bool(cfg.get("progress", True)), static_extras=static,
        )
        if state is not None:
            loop.restore(state)
            results.extra["resumed_after_round"] = state.round
            results.write(run_dir)  # the restored records, in case an earlier stage rewrote the file (detect)
            log.info("%s: resuming after round %d of %d", run_dir, state.round, state.n_rounds)
            for record in results.records:  # a fresh logger run: give it the rounds done before
                tracker.log({k: v for k, v in record.to_dict().items() if k != "round"}, step=record.round)
        loop.run()
        status = "success"
    finally:
        tracker.finish(status)
    return results
