"""Artifact injection: realistic EM defects on a share of pool patches (``data.inject_artifacts``).

Each defect mimics one failure of serial-section EM; affected patches are marked in the ignore mask
(``ignore_share = 1``) so the simulated annotator answers "skip", as an expert would. Defects are drawn
from the run's seed alone, so every acquisition of a seed sees the same corrupted pool.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from dualstream.errors import ConfigError
from dualstream.patches import PatchPool


def missing_section(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blank tile (lost or unimaged section): flat grey with faint detector noise."""
    return np.full_like(x, rng.uniform(0.3, 0.7)) + rng.normal(0, 0.01, x.shape)


def saturation(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Over-exposure: intensities pushed to white, only the darkest structure survives."""
    return (x - x.mean()) * rng.uniform(2.0, 3.0) + rng.uniform(0.85, 1.0)


def strong_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low dose / detector failure: heavy Gaussian noise."""
    return x + rng.normal(0, rng.uniform(0.25, 0.4), x.shape)


def out_of_focus(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Defocus: a wide Gaussian blur."""
    return gaussian_filter(x, sigma=rng.uniform(3.0, 5.0))


def fold(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Section fold: a dark band at a random angle; tissue on one side slips along the band."""
    p = x.shape[0]
    yy, xx = np.mgrid[0:p, 0:p]
    angle = rng.uniform(0, np.pi)
    dist = (xx - p / 2) * np.cos(angle) + (yy - p / 2) * np.sin(angle) + rng.uniform(-p / 4, p / 4)
    width = rng.uniform(0.1, 0.25) * p
    shifted = np.roll(x, int(rng.integers(3, 8)), axis=int(rng.integers(2)))
    out = np.where(dist > 0, shifted, x)
    return np.where(np.abs(dist) < width / 2, rng.uniform(0.02, 0.12), out)


def knife_stripes(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Knife chatter: strong periodic stripes across the section."""
    p = x.shape[0]
    yy, xx = np.mgrid[0:p, 0:p]
    angle = rng.uniform(0, np.pi)
    phase = ((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi) / rng.uniform(6, 14)
    return x * (1 + 0.45 * np.sin(phase))


def charging(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Charging: a bright smooth halo and lost contrast where the beam charged the sample."""
    p = x.shape[0]
    yy, xx = np.mgrid[0:p, 0:p]
    cy, cx = rng.uniform(0, p, 2)
    halo = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (rng.uniform(0.3, 0.6) * p) ** 2))
    return 0.35 * x + 0.65 * halo + 0.2


ARTIFACTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "missing": missing_section,
    "saturation": saturation,
    "noise": strong_noise,
    "blur": out_of_focus,
    "fold": fold,
    "stripe": knife_stripes,
    "charging": charging,
}


def artifact_rng(seed: int) -> np.random.Generator:
    """The generator of ``data.inject_artifacts`` for a run: from the run's seed alone (not the
    acquisition), so every acquisition of a seed sees the same corrupted pool, on every task."""
    return np.random.default_rng([int(seed), 7])


def corrupt_images(
    images: np.ndarray, fraction: float, rng: np.random.Generator, kinds: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``round(fraction * N)`` random images of ``(N, H, W)`` float ``images`` in ``[0, 1]``, one defect each (kinds in turn).

    Returns:
        ``(corrupted copy (N, H, W) float32, kind (N,) object str: "" for clean images)``.

    Raises:
        ConfigError: fraction outside ``[0, 1)`` or an unknown kind.
    """
    kinds = list(kinds or ARTIFACTS)
    unknown = [k for k in kinds if k not in ARTIFACTS]
    if unknown:
        raise ConfigError(f"data.artifact_kinds: unknown {unknown}; choose from {sorted(ARTIFACTS)}")
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"data.inject_artifacts must be a fraction in [0, 1), got {fraction}")
    n = len(images)
    chosen = rng.choice(n, int(round(fraction * n)), replace=False)
    out = np.array(images, dtype=np.float32, copy=True)
    kind_of = np.full(n, "", dtype=object)
    for j, i in enumerate(chosen):
        kind = kinds[j % len(kinds)]
        out[i] = np.clip(ARTIFACTS[kind](out[i], rng), 0.0, 1.0)
        kind_of[i] = kind
    return out, kind_of


def inject_artifacts(
    pool: PatchPool, fraction: float, rng: np.random.Generator, kinds: Sequence[str] | None = None
) -> PatchPool:
    """Corrupt ``round(fraction * N)`` random pool patches, one defect each (kinds in turn).

    Returns:
        A new pool: corrupted ``images``, ``ignore_share = 1`` on them, and ``meta["artifact_kind"]``
        ``(N,)`` str (``""`` for clean patches).

    Raises:
        ConfigError: fraction outside ``[0, 1)`` or an unknown kind.
    """
    images, kind_of = corrupt_images(pool.images, fraction, rng, kinds)
    ignore = np.where(kind_of != "", 1.0, pool.ignore_share).astype(pool.ignore_share.dtype)
    return replace(pool, images=images, ignore_share=ignore, meta={**pool.meta, "artifact_kind": kind_of})
