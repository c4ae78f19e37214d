"""``dualstream-suggest``: the next batch for a lab to annotate on its own volume.

    dualstream-suggest project=DIR data.image=PATH loop.batch=N

The first call starts the project (``DIR/project.json``, ``DIR/config.yaml``), trains the frozen
encoder on the whole volume and picks a cold-start batch from the data stream alone; each later call
trains the task model on every answer ingested so far (``dualstream-ingest``) and picks the next
batch. Both go through the benchmark's loop (:mod:`dualstream.loop`) with ``annotator=files``: the
loop stops right after proposing a batch nobody has answered, its state saved in ``DIR``.

Each proposed batch is written to ``DIR/round_NNN/``: ``queries.csv`` (ordered by utility; boxes in
input voxels), ``patches.h5`` (image boxes and predicted masks), ``neuroglancer.json`` and ``why.png``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dualstream.errors import ConfigError, DataError
from dualstream.project.layout import (
    CONFIG_FILE, QUERIES_FILE, NotAProjectError, ProjectInfo, answered_rounds, open_round, round_dir,
)

log = logging.getLogger("dualstream.suggest")


def check_project(cfg: DictConfig, project: Path) -> ProjectInfo | None:
    """Before any work: the project's image and grid are this call's, and no batch waits for answers.

    Returns the existing project's info, or ``None`` for a new project.

    Raises:
        ConfigError: ``data.image``/``data.downsample``/``data.patch_size`` differ from the project's,
            or ``task`` is not ``segment``.
        DataError: the last suggested batch has not been ingested yet.
    """
    if cfg.task.name != "segment":
        raise ConfigError(
            f"task={cfg.task.name}: dualstream-suggest proposes patches to paint (task=segment) only so far;"
            " a detect project needs a detector trained on labels first"
        )
    try:
        info = ProjectInfo.read(project)
    except NotAProjectError:
        return None
    mine = {"image": str(cfg.data.image), "downsample": int(cfg.data.downsample), "patch_size": int(cfg.data.patch_size)}
    theirs = {"image": info.image, "downsample": info.downsample, "patch_size": info.patch_size}
    changed = [k for k in mine if mine[k] != theirs[k]]
    if changed:
        k = changed[0]
        raise ConfigError(
            f"data.{k}={mine[k]!r} but project {project} was started with {theirs[k]!r}; keep the project's"
            f" value (drop the override) or start a new project directory"
        )
    saved = project / CONFIG_FILE
    if saved.exists():
        _check_same_settings(cfg, saved)
    waiting = open_round(project)
    if waiting is not None:
        where = round_dir(project, waiting)
        raise DataError(
            f"{where.name} of {project} has no answers yet: annotate its queries ({where / QUERIES_FILE}),"
            f" then `dualstream-ingest {project} LABELS` (or `dualstream-view {project}`), then suggest again"
        )
    return info


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _check_same_settings(cfg: DictConfig, saved: Path) -> None:
    """The keys the project's labels were chosen with (all but loop, logger, paths, pool-inference speed
    options: :func:`dualstream.runner.state_config`) are unchanged.

    Raises:
        ConfigError: naming the first key that differs, with both values.
    """
    from dualstream.runner import state_config

    now = _flatten(state_config(OmegaConf.to_container(cfg, resolve=True), lab=True))
    then = _flatten(state_config(OmegaConf.to_container(OmegaConf.load(saved), resolve=False) or {}, lab=True))
    for key in sorted(set(now) | set(then)):
        if now.get(key, "<unset>") != then.get(key, "<unset>"):
            raise ConfigError(
                f"{key}={now.get(key, '<unset>')!r} but the project was started with {then.get(key, '<unset>')!r}"
                f" ({saved}); a project keeps its data, encoder, model and acquisition settings: drop the"
                " override (only loop.batch, logger, progress and the trainer's pool-inference keys such as"
                " trainer.channels_last may change between calls) or start a new project"
            )


class RoundWriter:
    """The loop's propose hook: writes ``round_NNN/`` for every batch proposed to the lab.

    Args:
        project: the project directory.
        setup: the task's set-up (its ``pool`` is a :class:`dualstream.patches.PatchPool`).
        volume: the input image (read box by box for ``patches.h5``).
        info: the project's ``project.json``.
    """

    def __init__(self, project: Path, setup: Any, volume: Any, info: ProjectInfo):
        self.project, self.pool, self.volume, self.info = project, setup.pool, volume, info
        self.written: list[Path] = []

    def __call__(self, loop: Any, batch: int, selection: Any, view: Any) -> None:
        from dualstream.project.outputs import write_round_outputs
        from dualstream.project.queries import make_queries

        idx = np.asarray(selection.indices, dtype=np.int64)
        folder = round_dir(self.project, batch)
        folder.mkdir(parents=True, exist_ok=True)
        # Before any model (the cold start) uncertainty is NaN; the predicted masks are empty.
        fitted = getattr(loop.task, "module", None) is not None and np.isfinite(view.uncertainty).any()
        predicted = (
            loop.task.predict_masks(idx) if fitted
            else np.zeros((len(idx), self.pool.patch_size, self.pool.patch_size), dtype=np.uint8)
        )
        table = make_queries(
            idx, self.pool.origins[idx], self.info.downsample, self.info.patch_size,
            view.uncertainty[idx], view.typicality[idx], selection.utilities[idx],
        )
        order = {int(q): k for k, q in enumerate(idx)}
        ranked = np.array([order[int(q)] for q in table.query_id], dtype=np.int64)
        candidates = np.flatnonzero(~view.queried)
        write_round_outputs(
            folder, self.volume, table.query_id, np.stack([table.z, table.y, table.x, table.size_y, table.size_x], axis=1), table.utility, predicted[ranked], self.info.downsample,
            view.uncertainty[candidates], view.typicality[candidates], np.isin(candidates, idx),
            self.info.image, self.info.voxel_size, candidate_ids=candidates,
        )
        table.write(folder / QUERIES_FILE)  # last: a round folder with queries.csv is a complete round
        self.written.append(folder)
        log.info("%s: %d queries written", folder, len(idx))


def suggest(cfg: DictConfig) -> Path | None:
    """One suggest call (the Hydra task). Returns the new round's folder, or ``None`` when the pool is used up."""
    from dualstream.runner import run
    from dualstream.validate import load_plugins, validate
    from dualstream.volume import open_volume

    if cfg.get("project") in (None, "", "???"):
        raise ConfigError("project: not set; give the project directory: dualstream-suggest project=DIR data.image=PATH")
    project = Path(str(cfg.project)).resolve()
    load_plugins(cfg)
    info = check_project(cfg, project)
    validate(cfg, project)
    volume = open_volume(cfg.data.image, cfg.data.get("voxel_size"), role="data.image")
    if info is None:
        info = ProjectInfo(
            image=str(cfg.data.image), shape=volume.shape, voxel_size=volume.voxel_size,
            downsample=int(cfg.data.downsample), patch_size=int(cfg.data.patch_size),
            label_threshold=float(cfg.data.get("label_threshold") or 0.0), task=str(cfg.task.name),
        )
        info.write(project)
        (project / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info("new project %s on %s (%s voxels of %s nm)", project, info.image, info.shape, info.voxel_size)
    writer: dict[str, RoundWriter] = {}

    def hook(setup: Any):
        writer["w"] = RoundWriter(project, setup, volume, info)
        return writer["w"]

    results = run(cfg, project, make_hook=hook)
    written = writer["w"].written if "w" in writer else []
    n_answered = len(answered_rounds(project))
    if not written:
        print(f"dualstream-suggest: nothing left to suggest in {project} (the pool is used up: {n_answered} rounds answered)")
        return None
    folder = written[-1]
    score = results.records[-1].score if results.records else float("nan")
    print(
        f"dualstream-suggest: {folder.name}: {int(results.extra.get('waiting_for_answers', 0))} queries in {folder / QUERIES_FILE}"
        f" (why: {folder / 'why.png'}); {n_answered} round(s) answered so far"
        + (f", task model trained on {results.records[-1].n_labeled} patches" if results.records else "")
        + (f", test score {score:.3f}" if np.isfinite(score) else "")
        + f".\n  next: annotate them (dualstream-view {project}), then dualstream-ingest {project} LABELS"
    )
    return folder


def _task(cfg: DictConfig) -> None:
    from dualstream.cli import _fail
    from dualstream.errors import DualstreamError
    from dualstream.trainer import set_progress

    try:
        set_progress(bool(cfg.get("progress", True)))
        suggest(cfg)
    except DualstreamError as err:
        _fail(str(err))


def main() -> None:
    from dualstream.cli import launch

    launch(_task, "suggest", "dualstream-suggest")


if __name__ == "__main__":
    sys.exit(main())
