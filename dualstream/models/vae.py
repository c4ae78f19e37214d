"""An alternative data-stream model: a small convolutional VAE on EM patches (``encoder=vae``).

The ablation question is whether the contrastive (SimCLR) embedding matters, or whether any
unsupervised density of the pool would do. A VAE learns its latent space by reconstruction instead
of invariance; its posterior mean ``mu`` plays the role of the SimCLR embedding downstream.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from dualstream.augment import random_dihedral
from dualstream.models.networks import conv_bn_relu


def _up_block(c_in: int, c_out: int) -> nn.Sequential:
    """2x upsampling: 4x4 stride-2 transposed conv + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, 1))`` summed over the latent, ``(B,)``."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


class PatchVAE(pl.LightningModule):
    """Convolutional VAE on ``(B, 1, P, P)`` patches in ``[0, 1]``; ``P`` a multiple of ``2**depth``.

    Encoder: ``depth`` stride-2 conv levels (``P -> P / 2**depth``), flatten, linear to
    ``(mu, logvar)`` of ``latent_dim``. Decoder: linear back to the bottleneck grid, ``depth``
    transposed-conv levels, pixel logits ``(B, 1, P, P)``. Loss per patch: reconstruction (``bce``
    on the ``[0, 1]`` pixels, or ``mse``), summed over pixels, ``+ beta * KL``, averaged over the batch.
    Training views are random flips / rot90 only (EM has no canonical orientation; heavier
    augmentation would ask the decoder to reproduce it).

    ``predict_step`` returns the L2-normalised posterior mean ``(B, latent_dim)``, so typicality and
    the k-means diversity step treat it exactly like the SimCLR embedding.
    """

    def __init__(
        self,
        patch_size: int = 64,
        width: int = 16,
        depth: int = 4,
        latent_dim: int = 32,
        beta: float = 1.0,
        recon: str = "bce",
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        augment: bool = True,
    ):
        super().__init__()
        if depth < 1 or patch_size % 2**depth:
            raise ValueError(f"patch_size {patch_size} must be a multiple of 2**depth = {2**depth} (depth={depth})")
        if recon not in ("bce", "mse"):
            raise ValueError(f"recon must be 'bce' or 'mse', got {recon!r}")
        self.save_hyperparameters()
        chans = [width * 2 ** min(i, 3) for i in range(depth)]  # capped at 8 x width
        self.grid = patch_size // 2**depth
        down: list[nn.Module] = []
        c_in = 1
        for c in chans:
            down.append(conv_bn_relu(c_in, c, kernel=3, stride=2))
            c_in = c
        self.down = nn.Sequential(*down)
        flat = chans[-1] * self.grid**2
        self.to_stats = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, flat), nn.ReLU(inplace=True))
        up: list[nn.Module] = []
        for i in reversed(range(1, depth)):
            up.append(_up_block(chans[i], chans[i - 1]))
        up.append(nn.ConvTranspose2d(chans[0], 1, 4, stride=2, padding=1))
        self.up = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, P, P)`` -> ``(mu, logvar)``, each ``(B, latent_dim)``."""
        h = self.down(x).flatten(1)
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> pixel logits ``(B, 1, P, P)``."""
        h = self.from_latent(z).view(z.shape[0], -1, self.grid, self.grid)
        return self.up(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, P, P)`` -> L2-normalised posterior mean ``(B, latent_dim)``."""
        return F.normalize(self.encode(x)[0], dim=1)

    def loss_terms(self, x: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        """Batch-mean ``loss``, ``recon`` and ``kl`` for ``x``; ``sample=False`` decodes ``mu`` (deterministic)."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        logits = self.decode(z)
        if self.hparams.recon == "bce":
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            recon = (torch.sigmoid(logits) - x).pow(2)
        recon = recon.flatten(1).sum(dim=1).mean()
        kl = kl_divergence(mu, logvar).mean()
        return {"loss": recon + self.hparams.beta * kl, "recon": recon, "kl": kl}

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x = batch[0]
        if x.shape[0] == 1:  # a one-item pool: batch norm needs two samples, so train on two copies of it
            x = x.repeat(2, *([1] * (x.ndim - 1)))
        if self.hparams.augment:
            (x,) = random_dihedral(x)
        terms = self.loss_terms(x.clamp(0, 1))
        self.log("encoder/loss", terms["loss"], prog_bar=True)
        self.log("encoder/kl", terms["kl"])
        return terms["loss"]

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
