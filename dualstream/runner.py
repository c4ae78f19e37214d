"""One run from a composed config: task set-up -> two streams -> loop -> results file and logger.

This is the only place that knows every config group; the pieces it wires never read configs whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dualstream.errors import ConfigError
from dualstream.loop import ActiveLearningLoop, LoopSettings, ProposeHook, TaskModel
from dualstream.oracle import Annotator, FilesAnnotator
from dualstream.provenance import environment
from dualstream.results import (
    RESULTS_FILE, RoundRecord, RunResults, area_under_curve, load_results, log_area_under_curve,
)
from dualstream.state import LoopState, clear_state, config_hash, pool_fingerprint
from dualstream.streams.data_stream import DataStream
from dualstream.streams.knn import NEIGHBOUR_KEYS
from dualstream.streams.pixel_stats import pixel_statistics
from dualstream.tasks import TaskSetup, task_module
from dualstream.tracking import make_tracker
from dualstream.trainer import apply_cpu_threads

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: str | Path, make_hook: Callable[[TaskSetup], ProposeHook] | None = None) -> RunResults:
    """Run the loop the config describes; write ``results.json`` into ``run_dir`` after every round.

    The task plug-in (:mod:`dualstream.tasks`) builds the pool, the streams and the simulated
    annotator; ``annotator=files`` answers from a lab's ingested label files instead (the loop then
    stops at the first batch nobody has answered yet, its state saved: ``dualstream-suggest``).
    ``make_hook(setup)`` may return a hook called with every batch the loop puts to the annotator
    (:data:`dualstream.loop.ProposeHook`; a lab's query files).
    """
    task = task_module(cfg)
    apply_acquisition_needs(cfg)
    run_dir = Path(run_dir)
    apply_cpu_threads(cfg.trainer)
    container = OmegaConf.to_container(cfg, resolve=True)
    setup = task.prepare(cfg, run_dir)
    annotator = make_annotator(cfg, setup, run_dir)
    results = RunResults(
        acquisition=cfg.acquisition.name,
        seed=int(cfg.seed),
        task=cfg.task.name,
        metric=cfg.task.metric,
        config=container,
        extra=dict(setup.extra),
    )
    results.write(run_dir)  # what the task's set-up measured survives even if the loop fails
    hook = make_hook(setup) if make_hook is not None else None
    return drive_loop(cfg, run_dir, results, setup.items, setup.streams, annotator, setup.settings, hook)


def make_annotator(cfg: DictConfig, setup: TaskSetup, run_dir: Path) -> Annotator:
    """The ``annotator`` group: ``simulated`` (ground truth of the pool) or ``files`` (ingested label files).

    Raises:
        ConfigError: ``simulated`` on a pool without labels, or an unknown annotator name.
    """
    name = (cfg.get("annotator") or {}).get("name", "simulated")
    if name == "simulated":
        if setup.annotator is None:
            raise ConfigError(
                "annotator=simulated answers from ground truth, but data.labels is not set; give data.labels,"
                " or annotate the volume yourself: dualstream-suggest project=DIR data.image=... (README)"
            )
        return setup.annotator
    if name == "files":
        from dualstream.project.answers import read_answers

        project = Path(cfg.annotator.get("project") or run_dir)
        return FilesAnnotator(lambda: read_answers(project), where=str(project))
    raise ConfigError(f"annotator.name={name!r} is unknown; use annotator=simulated or annotator=files")


def apply_acquisition_needs(cfg: DictConfig) -> None:
    """Raise the task model's MC-dropout samples to what the acquisition asks for (``acquisition.mc_samples``).

    BALD needs T > 1 stochastic passes; every other strategy keeps the deterministic prediction, so a
    sweep over the zoo pays for MC sampling in the BALD runs only. The results file records the value used.
    """
    wanted = int(cfg.acquisition.get("mc_samples") or 1)
    if wanted > 1:
        task_module(cfg).raise_mc_samples(cfg, wanted)


#: The quality screen a cold start applies when the acquisition names none of its own: the default
#: ``dualstream``'s (pixel statistics beyond 3.5 robust SDs, and the embedding's separate outlier mode).
COLD_SCREEN_DEFAULTS = {"screen_z": 3.5, "screen_embedding": True, "screen_k": 200, "screen_separation": 3.0, "screen_max_share": 0.3}


def cold_screen_params(cfg: DictConfig) -> dict | None:
    """``quality_screen`` keyword arguments for a cold start that is not random, or None (no screen).

    ``loop.cold_screen`` (default true) switches it; the values are the acquisition's own
    ``screen_*`` parameters where it has them (so a lab's first batch is screened as its later ones
    are), else :data:`COLD_SCREEN_DEFAULTS`.
    """
    loop = cfg.get("loop") or {}
    if str(loop.get("cold_start") or "random") == "random" or not loop.get("cold_screen", True):
        return None
    params = dict(cfg.acquisition.get("params") or {})
    return {key: params.get(key, default) for key, default in COLD_SCREEN_DEFAULTS.items()}


def drive_loop(
    cfg: DictConfig,
    run_dir: Path,
    results: RunResults,
    items: np.ndarray,
    streams: Callable[[], tuple[DataStream, TaskModel]],
    annotator: Annotator,
    settings: LoopSettings,
    on_propose: ProposeHook | None = None,
) -> RunResults:
    """Start the logger, build the two streams, run the loop; rewrite ``results.json`` after each round.

    Shared by every task: ``items`` are what the annotator is shown (patches, proposal crops) and
    ``streams()`` trains the data stream and makes the task model (inside the logger's lifetime, so a
    failure is logged as one).

    After each round the loop state is saved too (``loop_state.npz``, see :mod:`dualstream.state`);
    with ``resume`` (default true) a run directory holding a state resumes after its last round, or
    returns at once when the run is already finished; ``resume=false`` discards the state and starts over.
    """
    lab = isinstance(annotator, FilesAnnotator)
    state_hash, fingerprint = config_hash(state_config(results.config, lab)), pool_fingerprint(items)
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
            results.extra["finished"] = True
            results.write(run_dir)
            log.info("%s: already finished (%d rounds), nothing to do", run_dir, state.round + 1)
            return results
    tracker = make_tracker(cfg.logger, run_dir, f"{results.acquisition}-s{results.seed}", results.config)
    status = "failed"
    try:
        stream, task = streams()
        results.extra.update(encoder_seconds=stream.seconds, encoder_cached=stream.from_cache, encoder_key=stream.key)
        results.extra["environment"] = environment()  # the host and libraries of this (last) process

        def on_round(record: RoundRecord) -> None:
            # The state first: it is what a rerun resumes from; results.json is rebuilt from it.
            snapshot = loop.snapshot(state_hash, fingerprint)
            snapshot.save(run_dir)
            results.records.append(record)
            # the file is rewritten every round: say whether this is the last, so a copy taken mid-run shows it
            results.extra["finished"] = bool(snapshot.finished)
            results.extra["aulc"] = area_under_curve(results.records)
            results.extra["aulc_log2"] = log_area_under_curve(results.records)
            results.write(run_dir)
            tracker.log({k: v for k, v in record.to_dict().items() if k != "round"}, step=record.round)

        # Pixel statistics of what the annotator sees (the image channel of proposal crops): fixed per pool.
        # 3D blocks (data.patch_depth > 1, (N, D, P, P)) are one image each, not channels: stats over the block.
        whole = items.ndim == 3 or int(cfg.data.get("patch_depth") or 1) > 1
        static = {"pixel_stats": pixel_statistics(items if whole else items[:, 0])}
        if getattr(stream, "neighbours", None) is not None:  # big pools: one search shared by every round
            static.update(zip(NEIGHBOUR_KEYS, stream.neighbours))
        if getattr(stream, "screen_embedding", None) is not None:  # screen_encoder: what the embedding screen reads
            static["screen_embedding"] = stream.screen_embedding
        loop = ActiveLearningLoop(
            items, stream, task, annotator, results.acquisition, cfg.acquisition.get("params") or {}, settings,
            results.seed, on_round=on_round, progress=bool(cfg.get("progress", True)), static_extras=static,
            cold_start=str(cfg.loop.get("cold_start") or "random"), cold_screen=cold_screen_params(cfg), on_propose=on_propose,
            on_wait=lambda: loop.snapshot(state_hash, fingerprint).save(run_dir),
        )
        if state is not None:
            loop.restore(state, check_rounds=not lab)
            results.extra["resumed_after_round"] = state.round
            results.write(run_dir)  # the restored records, in case an earlier stage rewrote the file (detect)
            log.info("%s: resuming after round %d of %d", run_dir, state.round, state.n_rounds)
            for record in results.records:  # a fresh logger run: give it the rounds done before
                tracker.log({k: v for k, v in record.to_dict().items() if k != "round"}, step=record.round)
        loop.run()
        results.extra["waiting_for_answers"] = len(loop.pending)
        if len(loop.pending):
            results.write(run_dir)
        status = "success"
    finally:
        tracker.finish(status)
    return results


# Keys a lab may change between two suggest calls without invalidating the project's loop state
# (the batch size, the logger, progress bars); everything else (data, encoder, model, acquisition,
# seed) must stay what the labels so far were chosen with.
LAB_FREE_KEYS = ("loop", "logger", "progress", "resume", "paths", "annotator", "project", "hydra")


def state_config(config: dict, lab: bool) -> dict:
    """The part of a run's config its loop state is tied to (all of it for a simulated run).

    A lab project may also change how the pool is predicted (``trainer.channels_last`` and the other
    :data:`~dualstream.trainer.INFERENCE_KEYS`: speed, float rounding at most) between rounds.
    """
    if not lab:
        return config
    from dualstream.trainer import INFERENCE_KEYS

    kept = {k: v for k, v in config.items() if k not in LAB_FREE_KEYS}
    if isinstance(kept.get("trainer"), dict):
        kept["trainer"] = {k: v for k, v in kept["trainer"].items() if k not in INFERENCE_KEYS}
    return kept
