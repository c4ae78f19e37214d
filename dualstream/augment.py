"""EM augmentations on batched tensors ``(B, 1, Y, X)`` in ``[0, 1]``, in plain torch (GPU friendly).

EM has no colour and no canonical in-plane orientation, so the label-preserving transforms are the
dihedral group (flips, rot90), intensity changes (brightness, contrast, gamma), blur (focus), noise
(dose), scale (crop-resize), and section defects (missing / low-contrast section). No colour jitter.

3D blocks ``(B, 1, D, Y, X)`` (``data.patch_depth > 1``) get one random draw per block, applied to
every section of it (a block is one piece of tissue: a flip or a contrast change must not differ
between its sections), plus an optional z-flip (:func:`random_zflip`). 2D batches draw exactly as
before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` -> ``(B, 1, ...)`` broadcastable against ``like`` (4D tiles or 5D blocks)."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def _spatial(x: torch.Tensor) -> tuple[int, ...]:
    """Axes one image spans: ``(Y, X)`` of a tile, ``(D, Y, X)`` of a block."""
    return (-2, -1) if x.ndim == 4 else (-3, -2, -1)


def random_dihedral(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Apply one random flip/rot90 per sample, the same one to every tensor (image and mask).

    The transform acts in-plane (last two axes), so a 3D block's sections all turn alike.

    Args:
        tensors: each ``(B, C, Y, X)`` or ``(B, C, D, Y, X)`` with ``Y == X`` and the same ``B``.
    """
    b = tensors[0].shape[0]
    dev = tensors[0].device
    k = torch.randint(0, 4, (b,), device=dev)
    flip = torch.rand(b, device=dev) < 0.5
    out = []
    for t in tensors:
        t = torch.where(_per_sample(flip, t), t.flip(-1), t)
        rotated = torch.stack([torch.rot90(t, int(r), dims=(-2, -1)) for r in range(4)])  # (4, B, C, Y, X)
        out.append(rotated[k, torch.arange(b, device=dev)])
    return tuple(out)


def random_zflip(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Reverse the section order of half the blocks, the same ones in every tensor (image and mask).

    Args:
        tensors: each ``(B, C, D, Y, X)`` with the same ``B``.
    """
    flip = torch.rand(tensors[0].shape[0], device=tensors[0].device) < 0.5
    return tuple(torch.where(_per_sample(flip, t), t.flip(-3), t) for t in tensors)


def intensity_jitter(x: torch.Tensor, brightness: float, contrast: float, gamma: float) -> torch.Tensor:
    """Per-sample brightness shift, contrast scale about the mean, and gamma, clipped to ``[0, 1]``.

    ``x``: ``(B, 1, Y, X)``, or ``(B, 1, D, Y, X)`` (one draw and one mean per block).
    """
    b = x.shape[0]
    ones = [1] * (x.ndim - 1)

    def draw(width: float) -> torch.Tensor:
        return (torch.rand(b, *ones, device=x.device) * 2 - 1) * width

    mean = x.mean(dim=_spatial(x), keepdim=True)
    x = (x - mean) * (1 + draw(contrast)) + mean + draw(brightness)
    x = x.clamp(0, 1) ** torch.exp(draw(gamma))
    return x.clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each sample with its own sigma (pixels); ``sigma`` is ``(B,)``, 0 means unchanged.

    In-plane only; a block ``(B, C, D, Y, X)`` blurs every section with its sample's sigma (focus).
    """
    radius = int(torch.ceil(3 * sigma.max()).item()) if sigma.numel() else 0
    if radius == 0:
        return x
    if x.ndim == 5:  # sections as extra channels: the grouped conv below gives them the sample's kernel
        b, c, d, h, w = x.shape
        return gaussian_blur(x.reshape(b, c * d, h, w), sigma).reshape(b, c, d, h, w)
    grid = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(grid[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
    b, c, h, w = x.shape
    # Grouped conv: each sample (and channel) gets its own separable kernel.
    flat = x.reshape(1, b * c, h, w)
    kx = kernel.repeat_interleave(c, 0)[:, None, None, :]
    ky = kernel.repeat_interleave(c, 0)[:, None, :, None]
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kx, groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), ky, groups=b * c)
    return flat.reshape(b, c, h, w)


def random_resized_crop(x: torch.Tensor, min_scale: float) -> torch.Tensor:
    """Crop a random square of side ``s * Y`` (``s`` in ``[min_scale, 1]``) per sample, resized back.

    A block ``(B, C, D, Y, X)`` is cropped in-plane, the same square in each of its sections.
    """
    if x.ndim == 5:
        b, c, d, h, w = x.shape
        # Sections side by side as channels: one affine grid per block resamples them all alike.
        flat = random_resized_crop(x.reshape(b, c * d, h, w), min_scale)
        return flat.reshape(b, c, d, h, w)
    b = x.shape[0]
    scale = min_scale + (1 - min_scale) * torch.rand(b, device=x.device, dtype=x.dtype)
    shift = (torch.rand(b, 2, device=x.device, dtype=x.dtype) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@dataclass
class EMAugment:
    """A random EM view of a batch: the contrastive encoder's two views are two calls of this.

    Probabilities and strengths are per sample. ``p_missing`` (blank section) and ``p_low_contrast``
    default to 0 for the data stream: teaching the encoder that a blank patch equals a normal one
    would hide exactly the artifacts the typicality stream must flag.
    """

    min_scale: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.25
    gamma: float = 0.3
    p_blur: float = 0.3
    max_sigma: float = 1.5
    p_noise: float = 0.3
    max_noise: float = 0.05
    p_missing: float = 0.0
    p_low_contrast: float = 0.0
    z_flip: bool = True  # 3D blocks only: reverse the section order of half the blocks

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, 1, Y, X)`` or ``(B, 1, D, Y, X)`` in ``[0, 1]`` -> augmented view, same shape.

        A block gets one draw of every transform, applied to all its sections (noise: one level per
        block, fresh values per voxel).
        """
        b = x.shape[0]
        dev = x.device
        ones = [1] * (x.ndim - 1)

        def chosen(p: float) -> torch.Tensor:
            return (torch.rand(b, device=dev) < p).reshape(b, *ones)

        if self.min_scale < 1:
            x = random_resized_crop(x, self.min_scale)
        (x,) = random_dihedral(x)
        if x.ndim == 5 and self.z_flip:
            (x,) = random_zflip(x)
        x = intensity_jitter(x, self.brightness, self.contrast, self.gamma)
        if self.p_blur > 0:
            sigma = torch.rand(b, device=dev) * self.max_sigma * (torch.rand(b, device=dev) < self.p_blur)
            x = gaussian_blur(x, sigma)
        if self.p_noise > 0:
            std = torch.rand(b, *ones, device=dev) * self.max_noise
            x = torch.where(chosen(self.p_noise), x + std * torch.randn_like(x), x)
        if self.p_low_contrast > 0:
            mean = x.mean(dim=_spatial(x), keepdim=True)
            x = torch.where(chosen(self.p_low_contrast), mean + 0.2 * (x - mean), x)
        if self.p_missing > 0:
            x = torch.where(chosen(self.p_missing), torch.full_like(x, 0.5), x)
        return x.clamp(0, 1)
