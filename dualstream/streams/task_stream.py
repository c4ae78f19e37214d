"""The task stream: retrain the segmentation model each round, score the test set and the pool."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch

from dualstream.datamodules import LabeledPatchData
from dualstream.models.segmentation import SegmentationModule
from dualstream.streams.uncertainty import patch_uncertainty
from dualstream.trainer import build_trainer


class TaskStream:
    """Holds the current round's segmentation model and what it says about the pool.

    Args:
        model_cfg: the ``model`` config (``steps``, ``batch_size``, ``module``, ``uncertainty``).
        trainer_cfg: the ``trainer`` config.
        pool_images: ``(N, P, P)`` float32 candidates.
        test_images, test_masks: ``(T, P, P)`` held-out patches.
    """

    def __init__(
        self,
        model_cfg: Mapping[str, Any],
        trainer_cfg: Mapping[str, Any],
        pool_images: np.ndarray,
        test_images: np.ndarray,
        test_masks: np.ndarray,
    ):
        self.model_cfg, self.trainer_cfg = model_cfg, trainer_cfg
        self.pool_images, self.test_images, self.test_masks = pool_images, test_images, test_masks
        self.module: SegmentationModule | None = None
        self.trainer: pl.Trainer | None = None
        self.data: LabeledPatchData | None = None

    def fit(self, images: np.ndarray, masks: np.ndarray, seed: int) -> float:
        """Train a fresh model on ``(L, P, P)`` labelled images and masks; return the last train loss."""
        pl.seed_everything(seed, workers=True, verbose=False)
        steps = int(self.model_cfg["steps"])
        self.module = SegmentationModule(**dict(self.model_cfg.get("module", {})))
        self.data = LabeledPatchData(
            images, masks, self.test_images, self.test_masks, self.pool_images,
            steps=steps, batch_size=int(self.model_cfg["batch_size"]),
        )
        self.trainer = build_trainer(self.trainer_cfg, steps)
        self.trainer.fit(self.module, datamodule=self.data)
        return float(self.trainer.callback_metrics.get("task/train_loss", torch.tensor(float("nan"))))

    def score(self) -> float:
        """Foreground IoU of the current model on the test set."""
        assert self.trainer is not None, "fit() first"
        return float(self.trainer.test(self.module, datamodule=self.data, verbose=False)[0]["test/iou"])

    def _predict_pool(self) -> dict[str, np.ndarray]:
        assert self.trainer is not None, "fit() first"
        outs = self.trainer.predict(self.module, datamodule=self.data)
        return {k: torch.cat([o[k] for o in outs]).float().cpu().numpy() for k in outs[0]}  # type: ignore[index]

    def pool_probabilities(self) -> np.ndarray:
        """``(N, T, P, P)`` float32 foreground probabilities of the pool (``T`` MC samples)."""
        return self._predict_pool()["probs"]

    def pool_uncertainty(self) -> np.ndarray:
        """``(N,)`` per-patch uncertainty, reduced as the ``model.uncertainty`` config says.

        The same pass fills :meth:`pool_extras`: ``margin`` and ``least_confidence`` (identical
        rankings for a binary task: least confidence is half the margin score per pixel), ``bald``
        (with MC dropout), ``task_embedding`` ``(N, F)``, ``grad_embedding`` ``(N, w + 1)`` and
        ``foreground`` ``(N,)`` (share of each patch's pixels predicted foreground).
        """
        u = dict(self.model_cfg.get("uncertainty", {}))
        reduction, topk = u.get("reduction", "mean"), u.get("topk", 0.1)
        out = self._predict_pool()
        probs = out["probs"]
        self._extras = {
            "margin": patch_uncertainty(probs, "margin", reduction, topk),
            "least_confidence": 0.5 * patch_uncertainty(probs, "margin", reduction, topk),
            "task_embedding": out["features"],
            "grad_embedding": out["grad"],
            # (N,) predicted foreground share (pixels with mean p >= 0.5), for foreground_random
            "foreground": (probs.mean(axis=1) >= 0.5).mean(axis=(-2, -1)).astype(np.float64),
        }
        if probs.shape[1] > 1:
            self._extras["bald"] = patch_uncertainty(probs, "bald", reduction, topk)
        return patch_uncertainty(probs, u.get("measure", "entropy"), reduction, topk)

    def pool_extras(self) -> dict[str, np.ndarray]:
        """Arrays computed by the last :meth:`pool_uncertainty` call, for ``PoolView.extras``."""
        return dict(getattr(self, "_extras", {}))
