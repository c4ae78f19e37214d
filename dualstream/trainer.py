"""Lightning Trainers built from the ``trainer`` config group (``trainer=cpu|gpu``)."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Mapping

import pytorch_lightning as pl

# Trainers are built every round; their banner ("GPU available: ...") would bury the loop's own log.
for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*Trying to infer the `batch_size`.*")


def build_trainer(cfg: Mapping[str, Any], max_steps: int) -> pl.Trainer:
    """A quiet Trainer for one fit of ``max_steps`` steps (one epoch of a fixed-steps loader).

    ``cfg`` keys: ``accelerator`` (cpu/gpu/auto), ``devices``, ``precision``, ``deterministic``.
    """
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
    )
warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")
