"""Experiment tracking at the edge: wandb (offline by default), CSV, or nothing (``logger=wandb|csv|none``).

Loop-level metrics only (one row per round); the results file is written independently of this.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from dualstream.errors import ConfigError

#: ``logger.name`` values (conf/logger/NAME.yaml).
LOGGERS = ("wandb", "csv", "none")
#: ``logger.mode`` values of the wandb logger.
WANDB_MODES = ("offline", "online", "disabled")

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
    if name not in LOGGERS:
        raise ConfigError(f"logger.name: unknown logger {name!r}; choose one of {', '.join(LOGGERS)} (e.g. logger=csv)")
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
        if mode not in WANDB_MODES:
            raise ConfigError(f"logger.mode: unknown wandb mode {mode!r}; choose one of {', '.join(WANDB_MODES)}")
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
    raise AssertionError(f"logger {name!r} listed in LOGGERS but not built")
