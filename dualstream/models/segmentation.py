"""The task stream's model: a U-Net for binary segmentation (2D tiles, or anisotropic 3D blocks with
``ndim=3``), scored by foreground IoU (torchmetrics)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import BinaryJaccardIndex

from dualstream.augment import intensity_jitter, random_dihedral, random_zflip
from dualstream.errors import ConfigError
from dualstream.models.blocks3d import UNet3d
from dualstream.models.networks import UNet


def warmup_share(total_steps: int, share: float = 0.1) -> float:
    """OneCycleLR's ``pct_start`` for ``total_steps``: ``share``, unless that makes a one-step warm-up.

    OneCycleLR ends its warm-up at step ``pct_start * total - 1`` and divides by that length, so a
    warm-up of exactly one step (``total = 10`` at 10%) divides by zero. Such a run gets no warm-up
    instead, as every run under 10 steps already does.
    """
    if abs(share * total_steps - 1.0) < 1e-9:
        return 0.9 / total_steps
    return share


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - Dice`` over the batch; complements BCE when the foreground is a small share of pixels."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1 - (2 * inter + eps) / (prob.sum() + target.sum() + eps)


class SegmentationModule(pl.LightningModule):
    """U-Net trained with BCE + Dice on labelled patches; ``test/iou`` is foreground IoU.

    Batches are ``(image, mask)``, each ``(B, 1, P, P)`` float (``ndim=2``) or ``(B, 1, D, P, P)``
    (``ndim=3``: the anisotropic :class:`~dualstream.models.blocks3d.UNet3d`; the task sets it from
    ``data.patch_depth > 1``). ``predict_step`` returns a dict of per-patch outputs (probabilities,
    task embedding, gradient embedding).
    """

    def __init__(
        self,
        width: int = 16,
        depth: int = 3,
        dropout: float = 0.1,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        augment: bool = True,
        mc_samples: int = 1,
        ndim: int = 2,
    ):
        super().__init__()
        if ndim not in (2, 3):
            raise ConfigError(f"model.module.ndim={ndim}: the U-Net is 2D or 3D; leave it unset (data.patch_depth sets it)")
        self.save_hyperparameters()
        self.net = UNet(width, depth, dropout) if ndim == 2 else UNet3d(width, depth, dropout)
        # Spatial axes of a batch: (Y, X), or (D, Y, X) for 3D blocks.
        self.spatial = (-2, -1) if ndim == 2 else (-3, -2, -1)
        self.test_iou = BinaryJaccardIndex()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.hparams.augment:
            x, y = random_dihedral(x, y)
            if self.hparams.ndim == 3:
                x, y = random_zflip(x, y)
            x = intensity_jitter(x, brightness=0.05, contrast=0.15, gamma=0.15)
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits, y) + soft_dice_loss(logits, y)
        self.log("task/train_loss", loss, prog_bar=True)
        return loss

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_iou.update(torch.sigmoid(self(x)), y.int())
        self.log("test/iou", self.test_iou, on_step=False, on_epoch=True)

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> dict[str, torch.Tensor]:
        """Pool outputs per patch.

        Returns:
            ``probs`` ``(B, T, P, P)`` (3D: ``(B, T, D, P, P)``) foreground probabilities (``T =
            mc_samples``, MC dropout when > 1);
            ``features`` ``(B, F)`` the bottleneck, average-pooled (the task stream's embedding);
            ``grad`` ``(B, w + 1)`` BADGE gradient embedding: the gradient of the BCE loss, with the
            predicted label as target, w.r.t. the last 1x1 conv's weights and bias, averaged over
            pixels (voxels of the block in 3D).
        """
        x = batch[0]
        logits, bottleneck, last = self.net.forward_features(x)
        p = torch.sigmoid(logits)  # (B, 1, P, P) or (B, 1, D, P, P)
        residual = p - (p >= 0.5).float()  # dBCE/dlogit with the hard pseudo-label
        dims = self.spatial
        grad = torch.cat([(residual * last).mean(dim=dims), residual.mean(dim=dims)], dim=1)
        out = {"features": bottleneck.mean(dim=dims), "grad": grad}
        if self.hparams.mc_samples <= 1:
            out["probs"] = p
            return out
        self.net.dropout.train()  # MC dropout: keep only the dropout layer stochastic
        try:
            out["probs"] = torch.cat([torch.sigmoid(self(x)) for _ in range(self.hparams.mc_samples)], dim=1)
        finally:
            self.net.dropout.eval()
        return out

    def configure_optimizers(self):
        # Cosine decay to zero: short per-round trainings end in a settled model, not mid-oscillation.
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=total, pct_start=warmup_share(total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
