"""3D counterparts of :mod:`dualstream.models.networks` for anisotropic EM blocks ``(B, 1, D, Y, X)``.

EM voxels are much coarser in z than in-plane (e.g. 4 x 4 x 40 nm) and a block holds only a few
sections (``D = data.patch_depth``, 2-8), so the networks pool in-plane only (``(1, 2, 2)``: ``D``
stays whole at every level) and mix sections with one ``(3, 3, 3)`` conv per block after an in-plane
``(1, 3, 3)`` one. Padding keeps ``D, Y, X`` wherever no pooling happens.
"""

from __future__ import annotations

import torch
from torch import nn

from dualstream.models.networks import UNetBody

#: In-plane pooling / upsampling: z is never halved (D is small and already coarse).
POOL = (1, 2, 2)


def conv_bn_relu3d(c_in: int, c_out: int, kernel: tuple[int, int, int] = (3, 3, 3), stride: tuple[int, int, int] = (1, 1, 1)) -> nn.Sequential:
    """Conv3d + BatchNorm3d + ReLU; padding ``kernel // 2`` per axis."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


def conv_block3d(c_in: int, c_out: int) -> nn.Sequential:
    """An in-plane ``(1, 3, 3)`` conv, then a ``(3, 3, 3)`` one that mixes neighbouring sections."""
    return nn.Sequential(conv_bn_relu3d(c_in, c_out, (1, 3, 3)), conv_bn_relu3d(c_out, c_out, (3, 3, 3)))


class ConvEncoder3d(nn.Module):
    """``(B, 1, D, Y, X)`` -> ``(B, embed_dim)``: the 3D twin of :class:`~dualstream.models.networks.ConvEncoder`.

    An in-plane strided ``(1, 5, 5)`` stem, ``depth - 1`` levels of a ``(3, 3, 3)`` conv and a
    ``(1, 2, 2)`` max pool, a global average over ``D, Y, X``, a linear head. ``Y, X`` must be at
    least ``2**depth``.
    """

    def __init__(self, width: int = 16, depth: int = 4, embed_dim: int = 128):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu3d(1, width, kernel=(1, 5, 5), stride=POOL)]
        c_in = width
        for level in range(depth - 1):
            c_out = width * 2 ** min(level + 1, 4)
            layers += [conv_bn_relu3d(c_in, c_out), nn.MaxPool3d(POOL)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-3, -2, -1)))


class UNet3d(UNetBody):
    """Anisotropic 3D U-Net, ``(B, 1, D, Y, X)`` -> logits ``(B, 1, D, Y, X)``; ``Y, X`` divisible by ``2**depth``.

    Same layout as the 2D :class:`~dualstream.models.networks.UNet` (channels ``width * 2**level``,
    dropout before the bottleneck for MC-dropout), with :func:`conv_block3d` blocks and in-plane
    pooling, so any ``D >= 1`` works.
    """

    def __init__(self, width: int = 16, depth: int = 3, dropout: float = 0.1):
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([conv_block3d(1 if i == 0 else chans[i - 1], chans[i]) for i in range(depth)])
        self.pool = nn.MaxPool3d(POOL)
        self.dropout = nn.Dropout3d(dropout)
        self.bottleneck = conv_block3d(chans[depth - 1], chans[depth])
        self.up = nn.ModuleList([nn.ConvTranspose3d(chans[i + 1], chans[i], POOL, stride=POOL) for i in reversed(range(depth))])
        self.dec = nn.ModuleList([conv_block3d(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.out = nn.Conv3d(chans[0], 1, 1)
