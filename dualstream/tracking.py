"""Experiment tracking at the edge: wandb (offline by default), CSV, or nothing (``logger=wandb|csv|none``).

Loop-level metrics only (one row per round); the results file is written independently of this.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping


class Tracker:
    """Logs one dict of numbers per round through a Lightning logger (or drops them)."""

    def __init__(self, logger: Any | None):
        self.logger = logger

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self.logger is not None:
            clean = {k: float(v) for k, v in metrics.items() if v is not None}
            self.logger.log_metrics(clean, step=step)

    def finish(self, status: str = "success") -> None:
        if self.logger is not None:
            self.logger.finalize(status)
            if type(self.logger).__name__ == "WandbLogger":
                self.logger.experiment.finish(exit_code=0 if status == "success" else 1)


def make_tracker(cfg: Mapping[str, Any], run_dir: str | Path, run_name: str, config: Mapping[str, Any]) -> Tracker:
    """Build the tracker the ``logger`` config names.

    ``cfg`` keys: ``name`` (wandb/csv/none); for wandb ``project``, ``mode`` (offline/online/disabled),
    ``group``, ``tags``. Offline runs land in ``RUN_DIR/wandb`` and sync later with ``wandb sync``.
    """
    name = cfg.get("name", "none")
    run_dir = Path(run_dir)
    if name == "none":
        return Tracker(None)
    if name == "csv":
        from pytorch_lightning.loggers import CSVLogger

        logger = CSVLogger(save_dir=str(run_dir), name="csv", version="")
        logger.log_hyperparams(dict(config))
        return Tracker(logger)
    if name == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        mode = cfg.get("mode", "offline")
        logger = WandbLogger(
            project=cfg.get("project", "dualstream"),
            name=run_name,
            save_dir=str(run_dir),
            offline=mode == "offline",
            mode=mode,
            group=cfg.get("group"),
            tags=list(cfg.get("tags") or []),
            config=dict(config),
        )
        _ = logger.experiment  # start the run now, so a wandb problem shows before training
        return Tracker(logger)
    raise ValueError(f"logger.name='{name}' is not one of wandb, csv, none")
