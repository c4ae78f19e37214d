"""Small plain-PyTorch networks (no torchvision): a convolutional encoder and a 2D U-Net."""

from __future__ import annotations

import copy

import torch
from torch import nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv + BatchNorm + ReLU; padding keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ConvEncoder(nn.Module):
    """``(B, 1, Y, X)`` -> ``(B, embed_dim)``: strided stem, ``depth - 1`` conv+pool levels, global pool, linear.

    Kept light on purpose (one conv per level, a stride-2 stem): it is trained once per pool on a CPU.
    """

    def __init__(self, width: int = 16, depth: int = 4, embed_dim: int = 128):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(1, width, kernel=5, stride=2)]
        c_in = width
        for level in range(depth - 1):
            c_out = width * 2 ** min(level + 1, 4)
            layers += [conv_bn_relu(c_in, c_out), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))


class UNetBody(nn.Module):
    """The U-Net's data flow, shared by the 2D and 3D networks; a subclass builds the layers
    (``down``, ``pool``, ``dropout``, ``bottleneck``, ``up``, ``dec``, ``out``) for its dimensionality."""

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits ``(B, 1, *S)``, bottleneck ``(B, 2^depth w, *S')`` (``S'`` pooled ``depth`` times),
        last features ``(B, w, *S)``; ``S`` = ``(Y, X)`` or ``(D, Y, X)``."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        bottleneck = self.bottleneck(self.dropout(x))
        x = bottleneck
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.out(x), bottleneck, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class UNet(UNetBody):
    """2D U-Net, ``(B, 1, Y, X)`` -> logits ``(B, 1, Y, X)``; ``Y, X`` divisible by ``2**depth``.

    Dropout sits before the bottleneck so that MC-dropout sampling perturbs the deepest features.
    """

    def __init__(self, width: int = 16, depth: int = 3, dropout: float = 0.1):
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([conv_block(1 if i == 0 else chans[i - 1], chans[i]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout2d(dropout)
        self.bottleneck = conv_block(chans[depth - 1], chans[depth])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))])
        self.dec = nn.ModuleList([conv_block(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.out = nn.Conv2d(chans[0], 1, 1)



def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (in eval mode) with every BatchNorm that directly follows a convolution folded into it.

    Within each ``nn.Sequential``, a ``Conv{1,2,3}d`` immediately followed by a ``BatchNorm{1,2,3}d``
    becomes one convolution with scaled weights and a bias (the BatchNorm is replaced by ``nn.Identity``),
    using the BatchNorm's running statistics: inference only. The output equals the unfolded network's
    up to float rounding (about 1e-6 relative), and inference skips one full pass over every activation.
    ``net`` itself is left untouched (its ``state_dict`` keys and values do not change).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(net).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and isinstance(bn, nn.modules.batchnorm._BatchNorm):
                if bn.track_running_stats and bn.running_mean is not None:
                    seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                    seq._modules[b] = nn.Identity()
    return folded


def pool_before_relu(net: nn.Module) -> nn.Module:
    """``net`` with every ReLU that ends a block directly followed by a max-pool moved after the pool (in place).

    ``maxpool(relu(x)) == relu(maxpool(x))`` exactly (both pick values, ReLU is monotonic), and the
    ReLU then touches a quarter of the values (2D, 2x2 pools). Within an ``nn.Sequential``, an element
    whose last module is a ReLU (itself a Sequential, e.g. a conv-BN-ReLU block) followed by a
    ``MaxPool{1,2,3}d`` becomes that block without the ReLU, then ``Sequential(pool, ReLU)``. Blocks
    whose activation is also used elsewhere (the U-Net's skips) are never in that position.
    Returns ``net``.
    """
    pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
    for seq in list(net.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            block, pool = seq._modules[a], seq._modules[b]
            if isinstance(pool, pools) and isinstance(block, nn.Sequential) and len(block) and isinstance(block[-1], nn.ReLU):
                block[len(block) - 1] = nn.Identity()
                seq._modules[b] = nn.Sequential(pool, nn.ReLU(inplace=True))
    return net
