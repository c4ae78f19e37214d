"""The detection task's model: a small CNN that says whether a proposal is a real object (True / False).

Input is a proposal crop ``(B, 2, C, C)``: channel 0 the EM image, channel 1 the detector's mask of
*this* proposal, so the network judges the proposed shape in its context (Lin et al., ECCV 2020).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import BinaryAccuracy

from dualstream.augment import intensity_jitter, random_dihedral
from dualstream.models.networks import conv_bn_relu
from dualstream.models.segmentation import warmup_share


class VerificationClassifier(pl.LightningModule):
    """Proposal verifier: three conv+pool levels, global average pool, one logit; BCE loss.

    Batches are ``(crops, answers)``: ``(B, 2, C, C)`` float32 and ``(B,)`` float ``{0, 1}``.
    ``test/accuracy`` is the share of proposals whose True/False it gets right (threshold 0.5);
    ``predict_step`` returns probabilities ``(B,)`` of True.
    """

    def __init__(
        self,
        width: int = 16,
        dropout: float = 0.2,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        augment: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            conv_bn_relu(2, width), nn.MaxPool2d(2),
            conv_bn_relu(width, 2 * width), nn.MaxPool2d(2),
            conv_bn_relu(2 * width, 4 * width), nn.MaxPool2d(2),
            conv_bn_relu(4 * width, 4 * width),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * width, 1)
        self.test_accuracy = BinaryAccuracy()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2, C, C)`` -> ``(B, 4 * width)`` average-pooled features (the head's input)."""
        return self.features(x).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2, C, C)`` -> logits ``(B,)``."""
        return self.head(self.dropout(self.embed(x)))[:, 0]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.hparams.augment:
            (x,) = random_dihedral(x)  # same flip/rotation for image and mask: both channels of one tensor
            x = torch.cat([intensity_jitter(x[:, :1], brightness=0.05, contrast=0.15, gamma=0.15), x[:, 1:]], dim=1)
        loss = F.binary_cross_entropy_with_logits(self(x), y.float())
        self.log("verifier/train_loss", loss, prog_bar=True)
        return loss

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_accuracy.update(torch.sigmoid(self(x)), y.int())
        self.log("test/accuracy", self.test_accuracy, on_step=False, on_epoch=True)

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return torch.sigmoid(self(batch[0]))

    def configure_optimizers(self):
        # One-cycle schedule like the segmentation model: short per-round trainings end settled.
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=total, pct_start=warmup_share(total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
