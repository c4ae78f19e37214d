"""The data stream's model: a SimCLR-style contrastive encoder, trained once on the whole pool, then frozen."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from dualstream.augment import EMAugment
from dualstream.errors import ConfigError
from dualstream.models.blocks3d import ConvEncoder3d
from dualstream.models.networks import ConvEncoder


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy (SimCLR): each view must pick its twin among ``2B - 1``.

    Args:
        z1, z2: ``(B, D)`` projections of two views of the same ``B`` items.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    n = z1.shape[0]
    logits.fill_diagonal_(float("-inf"))  # an item is not its own positive
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


class ContrastiveEncoder(pl.LightningModule):
    """SimCLR on EM patches: two :class:`EMAugment` views per patch, NT-Xent on a projection head.

    ``predict_step`` returns the L2-normalised backbone embedding ``(B, embed_dim)`` used downstream.
    """

    def __init__(
        self,
        width: int = 32,
        depth: int = 4,
        embed_dim: int = 128,
        proj_dim: int = 64,
        temperature: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        augment: dict[str, Any] | None = None,
        ndim: int = 2,
    ):
        super().__init__()
        if ndim not in (2, 3):
            raise ConfigError(f"encoder.module.ndim={ndim}: the encoder is 2D or 3D; leave it unset (data.patch_depth sets it)")
        self.save_hyperparameters()
        # ndim=3 (data.patch_depth > 1): blocks (B, 1, D, Y, X), anisotropic 3D convolutions.
        self.backbone = ConvEncoder(width, depth, embed_dim) if ndim == 2 else ConvEncoder3d(width, depth, embed_dim)
        self.projector = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, proj_dim))
        self.augment = EMAugment(**(augment or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, Y, X)`` (``ndim=3``: ``(B, 1, D, Y, X)``) -> L2-normalised embedding ``(B, embed_dim)``."""
        return F.normalize(self.backbone(x), dim=1)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x = batch[0]
        z1 = self.projector(self.backbone(self.augment(x)))
        z2 = self.projector(self.backbone(self.augment(x)))
        loss = nt_xent(z1, z2, self.hparams.temperature)
        self.log("encoder/loss", loss, prog_bar=True)
        return loss

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
