"""Lightning Trainers built from the ``trainer`` config group (``trainer=cpu|gpu``)."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any, Mapping

import pytorch_lightning as pl

# Trainers are built every round; their banner ("GPU available: ...") would bury the loop's own log.
for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*Trying to infer the `batch_size`.*")
warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")

log = logging.getLogger(__name__)

#: Whether long fits that ask for it (the encoder) show their progress; the CLI sets it from ``progress``.
_SHOW_PROGRESS = False


def set_progress(enabled: bool) -> None:
    """Show (or hide) the progress of the fits built with ``build_trainer(..., progress=...)``."""
    global _SHOW_PROGRESS
    _SHOW_PROGRESS = bool(enabled)


class StepProgress(pl.Callback):
    """Steps done / total of one fit: a tqdm bar on a terminal, else a log line every 10% with the ETA.

    Lightning's own bar is per epoch and shows validation bars too; this one counts optimiser steps,
    which is what ``encoder.steps`` sets.
    """

    def __init__(self, desc: str, total: int):
        self.desc, self.total = desc, max(1, int(total))
        self.bar: Any = None
        self.start = 0.0
        self.next_report = 0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start = time.perf_counter()
        self.next_report = max(1, self.total // 10)
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit="step", leave=False)
        else:
            log.info("%s: training %d steps", self.desc, self.total)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        done = int(trainer.global_step)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif done >= self.next_report or done == self.total:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / max(done, 1) * (self.total - done)
            log.info("%s: step %d/%d (%d%%), %.0fs elapsed, eta %.0fs", self.desc, done, self.total, 100 * done // self.total, elapsed, eta)
            self.next_report = done + max(1, self.total // 10)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        log.info("%s: %d steps in %.1fs", self.desc, int(trainer.global_step), time.perf_counter() - self.start)


def build_trainer(cfg: Mapping[str, Any], max_steps: int, progress: str | None = None) -> pl.Trainer:
    """A quiet Trainer for one fit of ``max_steps`` steps (one epoch of a fixed-steps loader).

    ``cfg`` keys: ``accelerator`` (cpu/gpu/auto), ``devices``, ``precision``, ``deterministic``.
    ``progress``: a name; when given and progress is on (:func:`set_progress`), the fit reports its steps.
    """
    callbacks = [StepProgress(progress, max_steps)] if progress and _SHOW_PROGRESS else []
    return pl.Trainer(
        accelerator=cfg.get("accelerator", "cpu"),
        devices=cfg.get("devices", 1),
        precision=cfg.get("precision", "32-true"),
        deterministic=cfg.get("deterministic", False),
        max_epochs=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
