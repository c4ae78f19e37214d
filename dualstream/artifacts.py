"""Artifact injection: realistic EM defects on a share of pool patches (``data.inject_artifacts``).

Each defect mimics one failure of serial-section EM; affected patches are marked in the ignore mask
(``ignore_share = 1``) so the simulated annotator answers "skip", as an expert would. Defects are drawn
from one generator per run (:func:`artifact_rng`: ``data.artifact_seed``, else the run's seed), so
every acquisition of a seed sees the same corrupted pool.

The ``data`` keys (read by :func:`inject_from_config`; defaults reproduce the original benchmark bit
for bit):

- ``inject_artifacts`` (0.0): share of the pool corrupted, in ``[0, 1)``.
- ``artifact_kinds`` (the seven pixel defects): a list from :data:`KINDS`, used in turn.
- ``artifact_seed`` (null): seed of the injection; null uses the run's ``seed``. A benchmark preset
  fixes it so every run seed sees the same corrupted pool.
- ``artifact_layout`` (``scattered``): ``scattered`` = isolated random tiles, each its own draw;
  ``sections`` = whole sections (all tiles with the same ``origins[:, 0]``), one draw (kind and
  parameters) per section, so the defects form a dense cluster of near-identical items; the number
  of sections is the one whose tile count is nearest to the share (ties round up), at least one and
  never all of them. ``clustered`` = compact blocks of 4-9 neighbouring tiles of one section (a fold
  or stain across tiles), one draw per block, until the share is reached exactly.
- ``artifact_extent`` (``[1.0, 1.0]``): share of each corrupted tile's area that is affected, drawn
  uniformly in ``[lo, hi]``; a partial defect covers a half-plane or a band at a random angle and
  leaves the rest of the tile untouched. Partial tiles are still skipped (``ignore_share = 1``): an
  expert does not paint a tile that is 20-80% fold or blur, the labels there cannot be trusted.
- ``artifact_strength`` (``strong``): ``strong`` = the visible defects of :data:`ARTIFACTS`;
  ``mild`` = :data:`MILD`, parameters inside the SimCLR encoder's augmentation ranges
  (``conf/encoder/simclr.yaml`` ``module.augment``: brightness +-0.1, contrast x[0.75, 1.25], gamma
  exponent exp(+-0.3), blur sigma <= 1.5, noise SD <= 0.05, crop-resize zoom <= 2), so the encoder
  was trained to be invariant to them. The mild ranges are listed on each ``mild_*`` function.

The ``foreign`` kind ("foreign tissue") replaces the tile by EM content at another resolution: the
centre ``1/s`` of another random pool tile upsampled ``s`` x (``s`` in ``[2, 3]``, bilinear), or a
2x2 mosaic of four other tiles each downsampled 2x. Only the EPFL dataset is available locally, so
"a tile from another EM dataset" is approximated by the same tissue at 2-3x another magnification.
Mild foreign tiles are zoomed ``s`` in ``[1.5, 2]`` only (inside the encoder's crop-resize range).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from dualstream.errors import ConfigError
from dualstream.patches import PatchPool

if TYPE_CHECKING:
    from dualstream.proposals import Proposals

# A defect: (tile (P, P) float32, parameter rng, noise rng or None = the parameter rng) -> tile (unclipped).
# Parameters (level, sigma, angle...) come from the first generator and pixel noise from the second, so a
# section-wide defect shares its parameters across tiles while each tile keeps its own noise.
Defect = Callable[..., np.ndarray]


def _or(noise: np.random.Generator | None, rng: np.random.Generator) -> np.random.Generator:
    return rng if noise is None else noise


def missing_section(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Blank tile (lost or unimaged section): flat grey with faint detector noise."""
    level = rng.uniform(0.3, 0.7)
    return np.full_like(x, level) + _or(noise, rng).normal(0, 0.01, x.shape)


def saturation(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Over-exposure: intensities pushed to white, only the darkest structure survives."""
    return (x - x.mean()) * rng.uniform(2.0, 3.0) + rng.uniform(0.85, 1.0)


def strong_noise(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Low dose / detector failure: heavy Gaussian noise (SD 0.25-0.4)."""
    sd = rng.uniform(0.25, 0.4)
    return x + _or(noise, rng).normal(0, sd, x.shape)


def out_of_focus(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Defocus: a wide Gaussian blur (sigma 3-5 px)."""
    return gaussian_filter(x, sigma=rng.uniform(3.0, 5.0))


def _line_distance(p: int, rng: np.random.Generator, spread: float) -> np.ndarray:
    """``(p, p)`` signed distance to a line at a random angle, offset up to ``spread * p`` from the centre."""
    yy, xx = np.mgrid[0:p, 0:p]
    angle = rng.uniform(0, np.pi)
    return (xx - p / 2) * np.cos(angle) + (yy - p / 2) * np.sin(angle) + rng.uniform(-spread * p, spread * p)


def fold(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Section fold: a dark band at a random angle; tissue on one side slips along the band."""
    p = x.shape[0]
    dist = _line_distance(p, rng, 0.25)
    width = rng.uniform(0.1, 0.25) * p
    shifted = np.roll(x, int(rng.integers(3, 8)), axis=int(rng.integers(2)))
    out = np.where(dist > 0, shifted, x)
    return np.where(np.abs(dist) < width / 2, rng.uniform(0.02, 0.12), out)


def _stripes(p: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:p, 0:p]
    angle = rng.uniform(0, np.pi)
    return np.sin(((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi) / rng.uniform(6, 14))


def knife_stripes(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Knife chatter: strong periodic stripes across the section (+-45% intensity)."""
    return x * (1 + 0.45 * _stripes(x.shape[0], rng))


def _halo(p: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:p, 0:p]
    cy, cx = rng.uniform(0, p, 2)
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (rng.uniform(0.3, 0.6) * p) ** 2))


def charging(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Charging: a bright smooth halo and lost contrast where the beam charged the sample."""
    return 0.35 * x + 0.65 * _halo(x.shape[0], rng) + 0.2


ARTIFACTS: dict[str, Defect] = {
    "missing": missing_section,
    "saturation": saturation,
    "noise": strong_noise,
    "blur": out_of_focus,
    "fold": fold,
    "stripe": knife_stripes,
    "charging": charging,
}


# Mild versions: every parameter inside the encoder's augmentation ranges (see the module docstring);
# tests/test_artifacts.py checks these against conf/encoder/simclr.yaml.
MILD_RANGES: dict[str, tuple[float, float]] = {
    "contrast": (0.75, 0.85),  # factor about the tile mean (augment: 1 +- 0.25)
    "brightness": (-0.1, 0.1),  # additive shift (augment: +- 0.1)
    "brighten": (0.05, 0.1),  # additive shift of over-exposure (augment: +- 0.1)
    "gamma": (0.75, 0.85),  # exponent (augment: exp(+-0.3) = [0.74, 1.35])
    "noise_sd": (0.04, 0.05),  # Gaussian noise SD (augment: <= 0.05)
    "blur_sigma": (1.0, 1.5),  # px (augment: <= 1.5)
    "crease_darkening": (0.75, 0.85),  # intensity factor in a thin fold band (augment contrast: >= 0.75)
    "stripe_amplitude": (0.05, 0.1),  # relative (brightness-sized)
    "halo_amplitude": (0.05, 0.1),  # additive (augment: brightness <= 0.1)
    "foreign_zoom": (1.5, 2.0),  # magnification (augment: crop side >= min_scale 0.5, i.e. zoom <= 2)
}
def mild_missing(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Faded section (partial charge-up / thin section): contrast x[0.75, 0.85] about the mean, brightness +-0.1."""
    mean = x.mean()
    return (x - mean) * rng.uniform(*MILD_RANGES["contrast"]) + mean + rng.uniform(*MILD_RANGES["brightness"])


def mild_saturation(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Slight over-exposure: brightness +[0.05, 0.1], then gamma exponent [0.75, 0.85] (brightens)."""
    return np.clip(x + rng.uniform(*MILD_RANGES["brighten"]), 0.0, 1.0) ** rng.uniform(*MILD_RANGES["gamma"])


def mild_noise(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Slightly low dose: Gaussian noise SD [0.04, 0.05]."""
    sd = rng.uniform(*MILD_RANGES["noise_sd"])
    return x + _or(noise, rng).normal(0, sd, x.shape)


def mild_blur(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Slight defocus: Gaussian blur sigma [1.0, 1.5] px."""
    return gaussian_filter(x, sigma=rng.uniform(*MILD_RANGES["blur_sigma"]))


def mild_fold(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Faint crease: a thin band (3-8% of the tile) darkened x[0.75, 0.85], no slip of the tissue."""
    p = x.shape[0]
    dist = _line_distance(p, rng, 0.25)
    width = rng.uniform(0.03, 0.08) * p
    return np.where(np.abs(dist) < width / 2, x * rng.uniform(*MILD_RANGES["crease_darkening"]), x)


def mild_stripe(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Faint knife chatter: periodic stripes of +-[5, 10]% intensity."""
    amplitude = rng.uniform(*MILD_RANGES["stripe_amplitude"])
    return x * (1 + amplitude * _stripes(x.shape[0], rng))


def mild_charging(x: np.ndarray, rng: np.random.Generator, noise: np.random.Generator | None = None) -> np.ndarray:
    """Faint charging: a smooth halo adding at most [0.05, 0.1] brightness."""
    amplitude = rng.uniform(*MILD_RANGES["halo_amplitude"])
    return x + amplitude * _halo(x.shape[0], rng)


MILD: dict[str, Defect] = {
    "missing": mild_missing,
    "saturation": mild_saturation,
    "noise": mild_noise,
    "blur": mild_blur,
    "fold": mild_fold,
    "stripe": mild_stripe,
    "charging": mild_charging,
}

KINDS: tuple[str, ...] = (*ARTIFACTS, "foreign")
LAYOUTS = ("scattered", "sections", "clustered")
STRENGTHS = ("strong", "mild")
FOREIGN_ZOOM = {"strong": (2.0, 3.0), "mild": MILD_RANGES["foreign_zoom"]}  # magnification of a foreign tile
CLUSTER_TILES = (4, 9)  # tiles of one ``clustered`` block, drawn uniformly (inclusive)


def _resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2D array to exactly ``shape`` (scipy's zoom may miss by one pixel)."""
    out = zoom(a, (shape[0] / a.shape[0], shape[1] / a.shape[1]), order=1)
    out = out[: shape[0], : shape[1]]
    return np.pad(out, [(0, shape[0] - out.shape[0]), (0, shape[1] - out.shape[1])], mode="edge")


def foreign_tissue(
    x: np.ndarray,
    rng: np.random.Generator,
    noise: np.random.Generator | None = None,
    *,
    sources: np.ndarray,
    index: int,
    strength: str = "strong",
) -> np.ndarray:
    """Foreign tissue: EM content at another resolution instead of the tile.

    Strong: with probability 1/2 the centre ``1/s`` of another tile of ``sources`` upsampled ``s`` x
    (``s`` uniform in ``[2, 3]``: 2-3x higher magnification), else a 2x2 mosaic of four other tiles
    each downsampled 2x (coarser resolution). Mild: the zoom only, ``s`` in ``[1.5, 2]``.

    Args:
        sources: ``(N, P, P)`` original tiles to take the content from; tile ``index`` is never used.
    """
    n, p = len(sources), x.shape[0]
    if n < 2:
        raise ConfigError("data.artifact_kinds: 'foreign' needs at least 2 pool tiles to take content from")
    mosaic = strength == "strong" and rng.random() < 0.5
    s = rng.uniform(*FOREIGN_ZOOM[strength])
    others = _or(noise, rng).choice(n - 1, 4 if mosaic else 1, replace=n - 1 < 4)
    others = others + (others >= index)  # skip the tile itself
    if not mosaic:
        side = max(2, int(round(p / s)))
        lo = (p - side) // 2
        return _resize(sources[others[0]][lo : lo + side, lo : lo + side], (p, p))
    half = (p // 2, p - p // 2)
    out = np.empty_like(x)
    for q, j in enumerate(others):
        ys, xs = (0, half[0]) if q < 2 else (half[0], p), (0, half[0]) if q % 2 == 0 else (half[0], p)
        small = gaussian_filter(sources[j], 0.5)  # anti-alias before the 2x downsampling
        out[ys[0] : ys[1], xs[0] : xs[1]] = _resize(small, (ys[1] - ys[0], xs[1] - xs[0]))
    return out


def region_mask(p: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """``(p, p)`` bool: a half-plane or a band at a random angle covering ``round(share * p * p)`` pixels.

    The region is the pixels nearest to a random line (band) or on one side of it (half-plane),
    ranked, so its area is exact whatever the angle.
    """
    dist = _line_distance(p, rng, 0.25)
    if rng.random() < 0.5:
        dist = np.abs(dist)  # band around the line
    order = np.argsort(dist, axis=None, kind="stable")
    mask = np.zeros(p * p, dtype=bool)
    mask[order[: int(round(share * p * p))]] = True
    return mask.reshape(p, p)


def artifact_rng(seed: int) -> np.random.Generator:
    """The generator of ``data.inject_artifacts`` for a run: from one seed alone (``data.artifact_seed``,
    else the run's seed; not the acquisition), so every acquisition sees the same corrupted pool, on every task."""
    return np.random.default_rng([int(seed), 7])


@dataclass(frozen=True)
class ArtifactSettings:
    """The ``data.*artifact*`` keys, checked (see the module docstring for their meaning)."""

    fraction: float = 0.0
    kinds: tuple[str, ...] = tuple(ARTIFACTS)
    seed: int | None = None
    layout: str = "scattered"
    extent: tuple[float, float] = (1.0, 1.0)
    strength: str = "strong"

    KEYS = ("inject_artifacts", "artifact_kinds", "artifact_seed", "artifact_layout", "artifact_extent", "artifact_strength")

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"data.inject_artifacts must be a fraction in [0, 1), got {self.fraction}")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ConfigError(f"data.artifact_kinds: unknown {unknown}; choose from {sorted(KINDS)}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0):
            raise ConfigError(f"data.artifact_seed must be null or an integer >= 0, got {self.seed!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"data.artifact_layout must be one of {list(LAYOUTS)}, got {self.layout!r}")
        lo, hi = self.extent
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"data.artifact_extent must be [lo, hi] with 0 < lo <= hi <= 1, got {[lo, hi]}")
        if self.strength not in STRENGTHS:
            raise ConfigError(f"data.artifact_strength must be one of {list(STRENGTHS)}, got {self.strength!r}")

    @classmethod
    def from_config(cls, data: Any) -> "ArtifactSettings":
        """Read a ``data`` config (mapping or DictConfig); absent keys take the defaults.

        Raises:
            ConfigError: a bad value, or an unknown ``data.artifact_*`` key (a typo would silently do nothing).
        """
        get = data.get
        stray = sorted(k for k in data.keys() if str(k).startswith("artifact_") and k not in cls.KEYS)
        if stray:
            raise ConfigError(f"data.{stray[0]}: unknown key; the artifact keys are {list(cls.KEYS)}")
        extent = get("artifact_extent")
        if extent is None:
            extent = (1.0, 1.0)
        elif isinstance(extent, (int, float)):
            extent = (extent, extent)
        try:
            lo, hi = (float(v) for v in extent)
        except (TypeError, ValueError):
            raise ConfigError(f"data.artifact_extent must be [lo, hi] with 0 < lo <= hi <= 1, got {extent!r}") from None
        try:
            fraction = float(get("inject_artifacts") or 0.0)
        except (TypeError, ValueError):
            raise ConfigError(f"data.inject_artifacts must be a fraction in [0, 1), got {get('inject_artifacts')!r}") from None
        kinds = get("artifact_kinds")
        if isinstance(kinds, str):
            raise ConfigError(f"data.artifact_kinds must be a list of kinds, e.g. [{kinds}], got {kinds!r}")
        return cls(
            fraction=fraction,
            kinds=tuple(str(k) for k in (kinds or ARTIFACTS)),
            seed=get("artifact_seed"),
            layout=str(get("artifact_layout") or "scattered"),
            extent=(lo, hi),
            strength=str(get("artifact_strength") or "strong"),
        )

    def rng(self, run_seed: int) -> np.random.Generator:
        """The injection's generator: ``artifact_seed`` when set, else the run's seed."""
        return artifact_rng(self.seed if self.seed is not None else run_seed)


def _pick_sections(section: np.ndarray, target: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Whole sections in random order while adding one brings the tile count nearer ``target`` (ties: add).

    At least one section, never all of them (the annotator must have something to label).
    """
    ids = np.unique(section)
    if len(ids) < 2:
        raise ConfigError("data.artifact_layout=sections needs at least 2 pool sections (one stays clean); use clustered or scattered")
    groups: list[np.ndarray] = []
    count = 0
    for s in rng.permutation(ids)[: len(ids) - 1]:
        tiles = np.flatnonzero(section == s)
        if not groups or abs(count + len(tiles) - target) <= abs(count - target):
            groups.append(tiles)
            count += len(tiles)
    return groups


def _pick_blocks(origins: np.ndarray, target: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Compact blocks of neighbouring tiles of one section (4-9 each) until ``target`` tiles are taken."""
    free = np.ones(len(origins), dtype=bool)
    groups: list[np.ndarray] = []
    count = 0
    while count < target:
        centre = rng.choice(np.flatnonzero(free))
        cand = np.flatnonzero(free & (origins[:, 0] == origins[centre, 0]))
        dist = np.hypot(*(origins[cand, 1:] - origins[centre, 1:]).T.astype(np.float64))
        size = min(int(rng.integers(CLUSTER_TILES[0], CLUSTER_TILES[1] + 1)), target - count, len(cand))
        block = cand[np.lexsort((rng.random(len(cand)), dist))[:size]]  # nearest tiles, random tie-break
        free[block] = False
        groups.append(np.sort(block))
        count += len(block)
    return groups


def corrupt_images(
    images: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    kinds: Sequence[str] | None = None,
    *,
    layout: str = "scattered",
    extent: tuple[float, float] = (1.0, 1.0),
    strength: str = "strong",
    origins: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt a share of ``(N, H, W)`` float ``images`` in ``[0, 1]`` (kinds in turn); see :func:`corrupt_images_detailed`.

    Returns:
        ``(corrupted copy (N, H, W) float32, kind (N,) object str: "" for clean images)``.
    """
    out, kind_of, _ = corrupt_images_detailed(
        images, fraction, rng, kinds, layout=layout, extent=extent, strength=strength, origins=origins
    )
    return out, kind_of


def corrupt_images_detailed(
    images: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    kinds: Sequence[str] | None = None,
    *,
    layout: str = "scattered",
    extent: tuple[float, float] = (1.0, 1.0),
    strength: str = "strong",
    origins: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Corrupt a share of ``(N, H, W)`` float ``images`` in ``[0, 1]``, one draw per group (kinds in turn).

    ``scattered``: ``round(fraction * N)`` random images, each its own group (the original benchmark,
    bit for bit with the default extent and strength). ``sections`` / ``clustered`` need ``origins``
    ``(N, 3)`` int (``z, y, x``) and corrupt whole sections / blocks of neighbours; every tile of a group
    gets the same kind and parameters (and the same partial region), its own pixel noise.

    Returns:
        ``(corrupted copy (N, H, W) float32, kind (N,) object str ("" = clean), affected share (N,) float32)``.

    Raises:
        ConfigError: a bad setting (see :class:`ArtifactSettings`), or a grouped layout without origins.
    """
    settings = ArtifactSettings(float(fraction), tuple(kinds or ARTIFACTS), None, layout, tuple(extent), strength)
    n = len(images)
    target = int(round(settings.fraction * n))
    out = np.array(images, dtype=np.float32, copy=True)
    kind_of = np.full(n, "", dtype=object)
    share = np.zeros(n, dtype=np.float32)
    if layout == "scattered":
        groups = [np.array([i]) for i in rng.choice(n, target, replace=False)]
    elif origins is None or len(origins) != n:
        raise ConfigError(f"data.artifact_layout={layout} needs the (N, 3) tile origins; use artifact_layout=scattered")
    elif target == 0:
        groups = []
    elif layout == "sections":
        groups = _pick_sections(np.asarray(origins)[:, 0], target, rng)
    else:
        groups = _pick_blocks(np.asarray(origins), target, rng)
    defects = MILD if strength == "mild" else ARTIFACTS
    sources = np.array(images, dtype=np.float32, copy=True) if "foreign" in settings.kinds else None
    lo, hi = settings.extent
    p = out.shape[-1]
    for j, group in enumerate(groups):
        kind = settings.kinds[j % len(settings.kinds)]
        # One parameter draw per group: scattered tiles draw from ``rng`` itself (the original order);
        # a group replays one seeded generator on each tile, while pixel noise keeps coming from ``rng``.
        group_seed = None if layout == "scattered" else int(rng.integers(2**63))
        for i in group:
            prng = rng if group_seed is None else np.random.default_rng(group_seed)
            if kind == "foreign":
                defect = partial(foreign_tissue, sources=sources, index=int(i), strength=strength)
            else:
                defect = defects[kind]
            corrupted = np.clip(defect(out[i], prng, rng), 0.0, 1.0)
            a = 1.0
            if (lo, hi) != (1.0, 1.0):
                a = prng.uniform(lo, hi) if lo < hi else lo
                corrupted = np.where(region_mask(p, a, prng), corrupted, out[i])
            out[i] = corrupted
            kind_of[i] = kind
            share[i] = a
    return out, kind_of, share


def inject_artifacts(
    pool: PatchPool,
    fraction: float,
    rng: np.random.Generator,
    kinds: Sequence[str] | None = None,
    *,
    layout: str = "scattered",
    extent: tuple[float, float] = (1.0, 1.0),
    strength: str = "strong",
) -> PatchPool:
    """Corrupt a share of the pool patches (see :func:`corrupt_images_detailed`; ``pool.origins`` give the sections).

    Returns:
        A new pool: corrupted ``images``, ``ignore_share = 1`` on them (partial ones too), and
        ``meta["artifact_kind"]`` ``(N,)`` str (``""`` for clean patches), ``meta["artifact_extent"]``
        ``(N,)`` float32 share of each patch's area affected (0 for clean patches).

    Raises:
        ConfigError: a bad setting.
    """
    images, kind_of, share = corrupt_images_detailed(
        pool.images, fraction, rng, kinds, layout=layout, extent=extent, strength=strength, origins=pool.origins
    )
    ignore = np.where(kind_of != "", 1.0, pool.ignore_share).astype(pool.ignore_share.dtype)
    meta = {**pool.meta, "artifact_kind": kind_of, "artifact_extent": share}
    return replace(pool, images=images, ignore_share=ignore, meta=meta)


def inject_from_config(pool: PatchPool, data: Any, seed: int) -> PatchPool:
    """``data.inject_artifacts`` and the other ``data.artifact_*`` keys applied to a patch pool.

    Args:
        data: the ``data`` config (DictConfig or mapping).
        seed: the run's seed, used when ``data.artifact_seed`` is null.

    Raises:
        ConfigError: a bad or unknown key, named.
    """
    s = ArtifactSettings.from_config(data)
    return inject_artifacts(pool, s.fraction, s.rng(seed), s.kinds, layout=s.layout, extent=s.extent, strength=s.strength)


def corrupt_proposals_from_config(pool: "Proposals", data: Any, seed: int) -> "Proposals":
    """``data.inject_artifacts`` on the detect task: a share of pool proposals lands on an EM defect.

    The image channel of the chosen proposal crops is corrupted (the detector's mask channel is kept:
    the detector fired there) and their ``ignore_share`` set to 1, so the annotator answers "skip".
    Proposals have no tile grid, so only ``data.artifact_layout=scattered`` applies; kinds, extent,
    strength and seed do.

    Raises:
        ConfigError: a grouped layout, or a bad or unknown key, named.
    """
    s = ArtifactSettings.from_config(data)
    if s.layout != "scattered":
        raise ConfigError(
            f"data.artifact_layout={s.layout} does not apply to task=detect (proposal crops have no section grid); use scattered"
        )
    images, kind = corrupt_images(pool.crops[:, 0], s.fraction, s.rng(seed), s.kinds, extent=s.extent, strength=s.strength)
    crops = pool.crops.copy()
    crops[:, 0] = images
    ignore = np.where(kind != "", 1.0, pool.ignore_share).astype(np.float32)
    return replace(pool, crops=crops, ignore_share=ignore)
