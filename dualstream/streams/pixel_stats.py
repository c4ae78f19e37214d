"""Cheap per-item pixel statistics of the pool images, for the ``pixel_veto`` artifact baseline.

Computed once per pool (the images do not change between rounds) and handed to acquisition as
``PoolView.extras["pixel_stats"]`` ``(N, F)``. Each statistic reacts to a different EM defect:
a blank or missing section has SD, gradient and Laplacian near 0 and a saturated share near 1;
noise raises the Laplacian and the high-frequency power share; defocus lowers both; charging and
saturation move the mean and the saturated share.
"""

from __future__ import annotations

import numpy as np

from dualstream.errors import DataError

#: Column names of :func:`pixel_statistics`, in order.
STAT_NAMES = ("mean", "sd", "gradient", "laplacian", "hf_power", "saturated")

#: Radial frequency (cycles / pixel) above which spectral power counts as high-frequency: half the
#: Nyquist limit of 0.5, so the upper half of the frequency band.
HF_CUTOFF = 0.25

#: Saturated pixels: within 0.02 of either end of [0, 1].
SATURATION = (0.02, 0.98)


def pixel_statistics(images: np.ndarray, batch: int = 256) -> np.ndarray:
    """``(N, F)`` float64 statistics of each image (or 3D block), columns :data:`STAT_NAMES` (``F = 6``).

    A block ``(D, H, W)`` (``data.patch_depth > 1``) gets one row over all its voxels: ``mean``,
    ``sd`` and ``saturated`` over the block; ``gradient``, ``laplacian`` and ``hf_power`` in-plane
    (sections are far apart in z), averaged over the block's sections (``hf_power``: the block's
    high-frequency power over its total power, DC of each section removed).

    Columns:
        ``mean``, ``sd``: of the pixel values.
        ``gradient``: mean gradient magnitude ``sqrt(dx^2 + dy^2)`` (forward differences, over the
            ``(H-1, W-1)`` pixels that have both).
        ``laplacian``: mean ``|4-neighbour Laplacian|`` over the ``(H-2, W-2)`` interior.
        ``hf_power``: share of the spectral power (DC removed) at radial frequency above
            :data:`HF_CUTOFF`; 0 for a constant image (no power at all).
        ``saturated``: share of pixels below 0.02 or above 0.98.

    Vectorised over ``batch`` images at a time, so the working memory is ``O(batch H W)`` whatever
    ``N``; time ``O(N H W log(H W))`` (the FFT).

    Args:
        images: ``(N, H, W)`` (or blocks ``(N, D, H, W)``) float in ``[0, 1]`` (float32 is enough), ``H, W >= 3``.
        batch: images per vectorised step.

    Raises:
        DataError: not a stack of 2-D images (or 3-D blocks) of at least 3 x 3 pixels.
    """
    if not hasattr(images, "iter_batches"):  # a pool store (data.pool_store=disk) is read batch by batch below
        images = np.asarray(images)
    if images.ndim not in (3, 4) or images.shape[-2] < 3 or images.shape[-1] < 3:
        raise DataError(f"pixel_statistics needs (N, H, W) images or (N, D, H, W) blocks with H, W >= 3, got shape {images.shape}")
    if images.ndim == 4:
        return _block_statistics(images, batch)
    n, h, w = images.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    high = np.sqrt(fy**2 + fx**2) > HF_CUTOFF  # (H, W//2+1)
    # rfft2 stores each column pair (+f, -f) once, except the DC column and (even W) the Nyquist
    # column: weight the others twice so the shares equal those of the full two-sided spectrum.
    twice = np.full(fx.shape[1], 2.0)
    twice[0] = 1.0
    if w % 2 == 0:
        twice[-1] = 1.0
    out = np.empty((n, len(STAT_NAMES)))
    lo, hi = SATURATION
    for b0 in range(0, n, max(1, int(batch))):
        x = images[b0 : b0 + max(1, int(batch))].astype(np.float64)
        mean = x.mean(axis=(1, 2))
        out[b0 : b0 + len(x), 0] = mean
        out[b0 : b0 + len(x), 1] = x.std(axis=(1, 2))
        dx = x[:, :-1, 1:] - x[:, :-1, :-1]
        dy = x[:, 1:, :-1] - x[:, :-1, :-1]
        out[b0 : b0 + len(x), 2] = np.sqrt(dx**2 + dy**2).mean(axis=(1, 2))
        lap = x[:, 1:-1, 2:] + x[:, 1:-1, :-2] + x[:, 2:, 1:-1] + x[:, :-2, 1:-1] - 4.0 * x[:, 1:-1, 1:-1]
        out[b0 : b0 + len(x), 3] = np.abs(lap).mean(axis=(1, 2))
        power = np.abs(np.fft.rfft2(x - mean[:, None, None])) ** 2 * twice
        total = power.sum(axis=(1, 2))
        hf = (power * high).sum(axis=(1, 2))
        # A constant image has no power: call its high-frequency share 0 rather than 0 / 0.
        out[b0 : b0 + len(x), 4] = np.divide(hf, total, out=np.zeros_like(hf), where=total > 1e-12 * (h * w) ** 2)  # SD > 1e-6
        out[b0 : b0 + len(x), 5] = ((x < lo) | (x > hi)).mean(axis=(1, 2))
    return out


def _high_frequency(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask ``(H, W//2+1)`` of rfft2 bins above :data:`HF_CUTOFF`, and each column's weight (1 or 2)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    twice = np.full(fx.shape[1], 2.0)
    twice[0] = 1.0
    if w % 2 == 0:
        twice[-1] = 1.0
    return np.sqrt(fy**2 + fx**2) > HF_CUTOFF, twice


def _block_statistics(blocks: np.ndarray, batch: int) -> np.ndarray:
    """:func:`pixel_statistics` of ``(N, D, H, W)`` blocks: one row per block (see there)."""
    n, _, h, w = blocks.shape
    high, twice = _high_frequency(h, w)
    out = np.empty((n, len(STAT_NAMES)))
    lo, hi = SATURATION
    step = max(1, int(batch))
    for b0 in range(0, n, step):
        x = blocks[b0 : b0 + step].astype(np.float64)  # (b, D, H, W)
        rows = slice(b0, b0 + len(x))
        out[rows, 0] = x.mean(axis=(1, 2, 3))
        out[rows, 1] = x.std(axis=(1, 2, 3))
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        out[rows, 2] = np.sqrt(dx**2 + dy**2).mean(axis=(1, 2, 3))
        lap = x[..., 1:-1, 2:] + x[..., 1:-1, :-2] + x[..., 2:, 1:-1] + x[..., :-2, 1:-1] - 4.0 * x[..., 1:-1, 1:-1]
        out[rows, 3] = np.abs(lap).mean(axis=(1, 2, 3))
        power = np.abs(np.fft.rfft2(x - x.mean(axis=(-2, -1), keepdims=True))) ** 2 * twice
        total = power.sum(axis=(1, 2, 3))
        hf = (power * high).sum(axis=(1, 2, 3))
        out[rows, 4] = np.divide(hf, total, out=np.zeros_like(hf), where=total > 1e-12 * x[0].size**2)
        out[rows, 5] = ((x < lo) | (x > hi)).mean(axis=(1, 2, 3))
    return out
