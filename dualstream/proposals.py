"""Proposal stage of the detection task (``task=detect``; Lin et al., ECCV 2020, verification pipeline).

A detector (the existing :class:`~dualstream.models.segmentation.SegmentationModule`) is trained once on
a few pool patches with painted masks, run over whole sections (tiled, stitched back), thresholded at a
*low* probability so that few objects are missed, and cut into connected components: the proposals.
The annotator then only answers True / False per proposal, and the active-learning loop works on
proposals instead of patches.

Data flow::

    read_sections(data cfg) -> Sections (pool, test)            whole (downsampled) sections
    detector_patches + train_detector -> SegmentationModule     seeded, shared by all acquisitions
    predict_sections -> (S, H, W) probabilities                  overlap-tiled, stitched (+ dihedral_mean)
    build_proposals -> Proposals, GroundTruthObjects            components, crops, matching
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from scipy import ndimage

from dualstream.datamodules import LabeledPatchData
from dualstream.errors import ConfigError, EmptyPoolError
from dualstream.matching import (
    GroundTruthObjects,
    component_centroids,
    iou_table,
    label_components,
    match_proposals,
    section_objects,
)
from dualstream.models.segmentation import SegmentationModule
from dualstream.patches import open_split, read_section, tile_origins
from dualstream.disk_cache import locked
from dualstream.trainer import build_trainer
from dualstream.volume import Volume, check_aligned

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- sections


@dataclass
class Sections:
    """Whole 2D sections, downsampled like the patch pools.

    Attributes:
        images: ``(S, H, W)`` float32 in ``[0, 1]``.
        labels: ``(S, H, W)`` uint8 ``{0, 1}`` ground truth (only the oracle and evaluation read it).
        ignore: ``(S, H, W)`` float32 in ``[0, 1]``: share of each pixel in the artifact mask.
        z: ``(S,)`` int64 section index in the source volume.
        voxel_size: ``(z, y, x)`` nm of the (downsampled) grid.
        source: where the sections came from, for messages.
    """

    images: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    z: np.ndarray
    voxel_size: tuple[float, float, float]
    source: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_sections(
    image: Volume, labels: Volume, sections: list[int], factor: int, label_threshold: float, ignore: Volume | None = None
) -> Sections:
    """Read, normalise and downsample the given sections exactly as :func:`dualstream.patches.extract_patches` does."""
    check_aligned(image, labels, "labels")
    if ignore is not None:
        check_aligned(image, ignore, "ignore mask")
    if not sections:
        raise EmptyPoolError(f"{image.source}: no sections selected; check data.sections")
    imgs, labs, igns = zip(*(read_section(image, labels, ignore, z, factor, label_threshold) for z in sections))
    vz, vy, vx = image.voxel_size
    return Sections(
        images=np.stack(imgs).astype(np.float32),
        labels=np.stack(labs),
        ignore=np.stack(igns).astype(np.float32),
        z=np.asarray(sections, dtype=np.int64),
        voxel_size=(vz, vy * factor, vx * factor),
        source=image.source,
    )


def read_sections(data: Any) -> tuple[Sections, Sections]:
    """The pool and test sections a ``data`` config names (the split of :func:`dualstream.patches.open_split`).

    Returns:
        ``(pool, test)``; the test sections carry no ignore mask (they are scored as they are).
    """
    split = open_split(data)
    common = dict(factor=int(data.get("downsample", 1)), label_threshold=float(data.label_threshold))
    pool = load_sections(split.image, split.labels, split.pool_sections, ignore=split.ignore, **common)
    test = load_sections(split.test_image, split.test_labels, split.test_sections, **common)
    return pool, test


# --------------------------------------------------------------------------- detector


def draw_tiles(
    sections: Sections,
    patch_size: int,
    n: int,
    rng: np.random.Generator,
    positive_share: float = 0.5,
    artifact_threshold: float = 0.5,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``n`` non-overlapping ``P x P`` pool tiles to paint, as indices into :func:`section_tiles`.

    ``round(positive_share * n)`` are drawn among tiles holding some foreground, the rest among the
    remaining tiles (with or without foreground): sparse targets (PSDs cover well under 1% of a section)
    would otherwise often leave the detector without a single positive and no proposals at all. Artifact
    tiles are never drawn (the annotator would have skipped them), nor the tiles in ``exclude`` (those
    already painted for another purpose).

    Returns:
        ``(n',)`` int64 tile indices, ``n' = min(n, usable tiles)``; positives first.
    """
    p = patch_size
    index = section_tiles(sections, p)
    ign = np.array([sections.ignore[s, y : y + p, x : x + p].mean() for s, y, x in index])
    fg = np.array([sections.labels[s, y : y + p, x : x + p].any() for s, y, x in index])
    usable = np.flatnonzero(ign < artifact_threshold)
    if len(usable) == 0:
        raise EmptyPoolError(
            f"{sections.source}: every pool patch is an artifact (>= loop.artifact_threshold={artifact_threshold}"
            " inside data.ignore), so the detector has nothing to train on; check data.ignore"
        )
    if exclude is not None and len(exclude):
        usable = np.setdiff1d(usable, np.asarray(exclude, dtype=np.int64))
    n = min(int(n), len(usable))
    positives = usable[fg[usable]]
    n_pos = min(int(round(positive_share * n)), len(positives))
    chosen = rng.choice(positives, n_pos, replace=False) if n_pos else np.zeros(0, dtype=np.int64)
    rest = np.setdiff1d(usable, chosen)
    return np.concatenate([chosen, rng.choice(rest, n - n_pos, replace=False)]).astype(np.int64)


def section_tiles(sections: Sections, patch_size: int) -> list[tuple[int, int, int]]:
    """Every non-overlapping ``P x P`` tile of the sections as ``(section, y, x)`` corners, section-major."""
    corners = tile_origins(sections.images.shape[1:], patch_size, patch_size)
    if not corners:
        raise EmptyPoolError(
            f"{sections.source}: sections are {sections.images.shape[1]}x{sections.images.shape[2]} pixels,"
            f" smaller than data.patch_size={patch_size}; lower data.patch_size or data.downsample"
        )
    return [(s, y, x) for s in range(len(sections)) for y, x in corners]


def cut_tiles(arr: np.ndarray, tiles: list[tuple[int, int, int]], chosen: np.ndarray, patch_size: int) -> np.ndarray:
    """``(len(chosen), P, P)`` tiles of an ``(S, H, W)`` array (images, masks or probabilities)."""
    p = patch_size
    return np.stack([arr[s, y : y + p, x : x + p] for s, y, x in (tiles[i] for i in chosen)])


def detector_patches(
    sections: Sections,
    patch_size: int,
    n: int,
    rng: np.random.Generator,
    positive_share: float = 0.5,
    artifact_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The detector's training patches: :func:`draw_tiles` cut from the pool sections.

    Returns:
        ``(images, masks)``: ``(n', P, P)`` float32 and uint8, ``n' = min(n, usable tiles)``.
    """
    chosen = draw_tiles(sections, patch_size, n, rng, positive_share, artifact_threshold)
    tiles = section_tiles(sections, patch_size)
    images = cut_tiles(sections.images, tiles, chosen, patch_size)
    masks = cut_tiles(sections.labels, tiles, chosen, patch_size)
    return images.astype(np.float32), masks.astype(np.uint8)


def calibration_tiles(
    sections: Sections, patch_size: int, detector_cfg: Mapping[str, Any], seed: int, artifact_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """The ``detector.calibration_patches`` tiles painted for ``threshold: auto`` and never trained on.

    Drawn by the training draw's rule among the usable tiles outside the training draw (its own
    generator, ``[seed, 11]``, so the training patches, and the cached detector, are unchanged).

    Returns:
        ``(tile_indices, masks)``: ``(m,)`` int64 indices into :func:`section_tiles` and ``(m, P, P)`` uint8.
    """
    share = float(detector_cfg.get("positive_share", 0.5))
    trained = draw_tiles(sections, patch_size, int(detector_cfg["train_patches"]), np.random.default_rng([seed, 7]), share, artifact_threshold)
    m = int(detector_cfg.get("calibration_patches") or 0)
    chosen = draw_tiles(sections, patch_size, m, np.random.default_rng([seed, 11]), share, artifact_threshold, exclude=trained)
    masks = cut_tiles(sections.labels, section_tiles(sections, patch_size), chosen, patch_size) if len(chosen) else np.zeros((0, patch_size, patch_size))
    return chosen, masks.astype(np.uint8)


def train_detector(
    images: np.ndarray, masks: np.ndarray, detector_cfg: Mapping[str, Any], trainer_cfg: Mapping[str, Any], seed: int
) -> SegmentationModule:
    """Train a fresh :class:`SegmentationModule` on ``(n, P, P)`` images and masks (``detector.steps`` steps)."""
    pl.seed_everything(seed, workers=True, verbose=False)
    steps = int(detector_cfg["steps"])
    module = SegmentationModule(**dict(detector_cfg.get("module", {})))
    # The datamodule wants test and pool sets; the detector is never scored or queried, so reuse the train set.
    data = LabeledPatchData(images, masks, images[:1], masks[:1], images[:1], steps=steps, batch_size=int(detector_cfg["batch_size"]))
    build_trainer(trainer_cfg, steps).fit(module, datamodule=data)
    return module


def predict_sections(module: SegmentationModule, images: np.ndarray, patch_size: int, batch_size: int = 64) -> np.ndarray:
    """Foreground probabilities of whole sections, by overlapping ``P x P`` tiles stitched back.

    Tiles step by ``3P / 4`` over the reflect-padded section and each contributes only its central
    ``3P/4 x 3P/4`` block, so every pixel is predicted at least ``P / 8`` away from a tile border (no
    seams from the U-Net's zero padding), at 1.8x the cost of non-overlapping tiles.

    Args:
        images: ``(S, H, W)`` float32 sections.
        patch_size: ``P``, a multiple of 8 (the U-Net's default depth 3 needs that anyway).

    Returns:
        ``(S, H, W)`` float32 probabilities.
    """
    p = int(patch_size)
    if p % 8:
        raise ConfigError(f"data.patch_size must be a multiple of 8 for task=detect (tiles overlap by P/8 each side), got {p}")
    q = p // 8
    step = p - 2 * q
    s, h, w = images.shape
    ny, nx = math.ceil(h / step), math.ceil(w / step)
    pads = ((0, 0), (q, ny * step + q - h), (q, nx * step + q - w))
    mode = "reflect" if min(h, w) > max(pads[1][1], pads[2][1]) else "edge"
    padded = np.pad(images, pads, mode=mode)
    corners = [(y * step, x * step) for y in range(ny) for x in range(nx)]
    out = np.zeros((s, ny * step, nx * step), dtype=np.float32)
    device = next(module.parameters()).device
    module.eval()
    with torch.no_grad():
        for z in range(s):
            tiles = np.stack([padded[z, y : y + p, x : x + p] for y, x in corners])
            probs = []
            for start in range(0, len(tiles), batch_size):
                x = torch.from_numpy(tiles[start : start + batch_size, None]).to(device)
                probs.append(torch.sigmoid(module(x)).float().cpu().numpy()[:, 0])
            centre = np.concatenate(probs)[:, q : q + step, q : q + step]
            for (y, x), block in zip(corners, centre):
                out[z, y : y + step, x : x + step] = block
    return out[:, :h, :w]


def dihedral_mean(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Test-time augmentation: ``predict`` averaged over the 8 flips / 90-degree rotations of the images.

    Each view's prediction is mapped back to the original orientation before averaging, so a false blob
    that one orientation fires on and the others do not is averaged down (BENCHMARKS.md §6: on PSDs it
    lowers the false proposals on 19 of 20 paired seeds and the counts' coefficient of variation, not the
    outlying seeds).

    Args:
        predict: ``(N, H', W') -> (N, H', W')`` float32 probabilities, for either orientation of a
            non-square image.
        images: ``(N, H, W)`` float32.

    Returns:
        ``(N, H, W)`` float32, the mean of the 8 views.
    """
    total = np.zeros(images.shape, dtype=np.float64)
    for turns in range(4):
        for flip in (False, True):
            view = np.rot90(images, turns, axes=(1, 2))
            view = view[:, :, ::-1] if flip else view
            out = predict(np.ascontiguousarray(view))
            out = out[:, :, ::-1] if flip else out
            total += np.rot90(out, -turns, axes=(1, 2))
    return (total / 8).astype(np.float32)


def calibrate_threshold(probs: np.ndarray, masks: np.ndarray, target_recall: float, grid: np.ndarray | None = None) -> float:
    """The highest probability threshold that keeps ``target_recall`` of the foreground pixels.

    Computed on the detector's own training patches (the only labels it has), so a detector that is
    more or less confident on another seed or resolution still proposes a comparable share of the
    objects. Proposals are for recall; the verifier brings precision. The estimate is optimistic: the
    detector has memorised these patches, so the pool keeps less of its foreground than asked (30 PSD
    detectors asked for 0.9 kept 0.51-0.91, median 0.82; BENCHMARKS.md §6). :func:`heldout_threshold`
    applies it to painted tiles outside the training draw instead, which is unbiased.

    Args:
        probs: ``(n, P, P)`` detector probabilities of its training patches.
        masks: ``(n, P, P)`` their 0/1 masks.
        target_recall: share of foreground pixels with ``prob >= threshold``, in ``(0, 1)``.
        grid: candidate thresholds (default 0.02, 0.04, ..., 0.98).

    Returns:
        The threshold; the lowest of the grid when even that misses the target, 0.5 when the patches
        hold no foreground.
    """
    grid = np.arange(0.02, 0.99, 0.02) if grid is None else np.asarray(grid, dtype=np.float64)
    fg = np.asarray(probs)[np.asarray(masks) > 0]
    if fg.size == 0:
        return 0.5
    recall = np.array([(fg >= t).mean() for t in grid])
    ok = grid[recall >= target_recall]
    return round(float(ok.max() if len(ok) else grid.min()), 6)  # 0.3, not np.arange's 0.30000000000000004


@dataclass
class HeldOutCalibration:
    """:func:`calibrate_threshold` on painted tiles the detector never saw (``threshold: auto`` with
    ``calibration_patches > 0``)."""

    threshold: float
    tiles: int
    foreground_tiles: int
    foreground_pixels: int


def heldout_threshold(
    pool_probs: np.ndarray,
    sections: Sections,
    patch_size: int,
    detector_cfg: Mapping[str, Any],
    seed: int,
    target_recall: float,
    artifact_threshold: float = 0.5,
) -> HeldOutCalibration:
    """The threshold keeping ``target_recall`` of the foreground of the :func:`calibration_tiles`.

    Read from the pool probability map itself (the tiles are pool tiles, so no extra prediction and
    the very framing the proposals are cut from). Unlike the training patches, which the detector has
    memorised, these give an unbiased estimate of the pool's recall: on 10 PSD tuning seeds, asked for
    0.6 / 0.7 the pool kept a median 0.62 / 0.72 of its foreground pixels (BENCHMARKS.md §6).

    Args:
        pool_probs: ``(S, H, W)`` detector probabilities of ``sections``.

    Returns:
        The threshold (0.5 when the tiles hold no foreground, as :func:`calibrate_threshold`) and
        what it was computed on.
    """
    chosen, masks = calibration_tiles(sections, patch_size, detector_cfg, seed, artifact_threshold)
    if len(chosen) == 0:
        raise EmptyPoolError(
            f"{sections.source}: no pool tile is left for task.detector.calibration_patches outside the"
            f" {detector_cfg['train_patches']} training tiles; lower task.detector.train_patches or set calibration_patches=0"
        )
    probs = cut_tiles(pool_probs, section_tiles(sections, patch_size), chosen, patch_size)
    return HeldOutCalibration(
        calibrate_threshold(probs, masks, target_recall), len(chosen), int(masks.any(axis=(1, 2)).sum()), int(masks.sum())
    )


def detector_threshold(detector_cfg: Mapping[str, Any], calibrated: float | None) -> float:
    """``task.detector.threshold`` as a number: itself, or the calibrated value when it is ``auto``."""
    value = detector_cfg.get("threshold", 0.3)
    if str(value) == "auto":
        if calibrated is None:
            raise ValueError("threshold=auto but the detector output carries no calibrated threshold")
        return float(calibrated)
    return float(value)


def min_component_size(detector_cfg: Mapping[str, Any], voxel_size: tuple[float, float, float]) -> int:
    """Smallest proposal in pixels: ``min_area_nm2`` over the pixel area when given (the same objects at
    every resolution), else ``min_size`` pixels."""
    area = detector_cfg.get("min_area_nm2")
    if area is None:
        return int(detector_cfg["min_size"])
    return max(1, int(math.ceil(float(area) / (float(voxel_size[1]) * float(voxel_size[2])))))


def _detector_key(pool: Sections, test: Sections, detector_cfg: Mapping[str, Any], patch_size: int, seed: int, artifact_threshold: float) -> str:
    h = hashlib.sha1()
    for arr in (pool.images, pool.labels, pool.ignore, test.images):
        h.update(np.ascontiguousarray(arr).tobytes())
    # Thresholding happens after the cache: tuning threshold / min_size reuses the trained detector.
    trained = {k: v for k, v in dict(detector_cfg).items() if k not in ("threshold", "min_size", "min_area_nm2", "target_recall", "calibration_patches")}
    if int(trained.get("ensemble") or 1) == 1:
        trained.pop("ensemble", None)  # a single detector keeps the key it had before the option existed
    if not trained.get("tta"):
        trained.pop("tta", None)  # the same for test-time augmentation off
    h.update(json.dumps(trained, sort_keys=True, default=str).encode())
    h.update(f"{patch_size}/{seed}/{artifact_threshold}".encode())
    return h.hexdigest()[:16]


@dataclass
class DetectorOutput:
    """Detector probabilities of the pool and test sections (``(S, H, W)`` float32 each)."""

    pool: np.ndarray
    test: np.ndarray
    seconds: float
    from_cache: bool
    key: str
    #: ``(probs, masks)`` of the detector's training patches, for :func:`calibrate_threshold`.
    train_probs: np.ndarray | None = None
    train_masks: np.ndarray | None = None

    def calibrated(self, target_recall: float) -> float | None:
        """:func:`calibrate_threshold` on the training patches (``None`` when they are not kept)."""
        if self.train_probs is None or self.train_masks is None:
            return None
        return calibrate_threshold(self.train_probs, self.train_masks, target_recall)


def run_detector(
    pool: Sections,
    test: Sections,
    detector_cfg: Mapping[str, Any],
    trainer_cfg: Mapping[str, Any],
    patch_size: int,
    seed: int,
    artifact_threshold: float = 0.5,
    cache_dir: str | Path | None = None,
) -> DetectorOutput:
    """Train the detector on ``detector.train_patches`` seeded pool patches and predict every section.

    Cached like the encoder (pixels, config, seed), so every acquisition of a sweep at one seed works
    on the very same proposals: their curves stay paired, and the detector trains once. The key leaves
    out ``threshold`` and ``min_size``, which act on the cached probabilities.

    ``detector.ensemble = K > 1`` trains K detectors on the same patches from different initialisations
    and averages their probabilities (K times the training cost): it removes the variance that comes from
    the initialisation; both move the proposal counts (BENCHMARKS.md §6).

    ``detector.tta = true`` averages every probability map (pool, test, training patches) over the 8
    flips / rotations (:func:`dihedral_mean`): 8x the prediction cost, no extra training.
    """
    key = _detector_key(pool, test, detector_cfg, patch_size, seed, artifact_threshold)
    tta = bool(detector_cfg.get("tta", False))

    def predict(module: SegmentationModule, sections: np.ndarray) -> np.ndarray:
        one = lambda x: predict_sections(module, x, patch_size)  # noqa: E731
        return dihedral_mean(one, sections) if tta else one(sections)

    def predict_patches(module: SegmentationModule, patches: np.ndarray) -> np.ndarray:
        module.eval()

        def one(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                t = torch.sigmoid(module(torch.from_numpy(x[:, None]).to(next(module.parameters()).device)))
            return t.float().cpu().numpy()[:, 0]

        return dihedral_mean(one, patches) if tta else one(patches)

    def compute() -> DetectorOutput:
        start = time.perf_counter()
        rng = np.random.default_rng([seed, 7])
        images, masks = detector_patches(
            pool, patch_size, int(detector_cfg["train_patches"]), rng,
            float(detector_cfg.get("positive_share", 0.5)), artifact_threshold,
        )
        log.info("detector: training on %d patches (%d with foreground)", len(images), int(masks.any(axis=(1, 2)).sum()))
        members = int(detector_cfg.get("ensemble") or 1)
        # Lightning hands the module back on the CPU after fit; predict where the config trains.
        gpu = str(trainer_cfg.get("accelerator", "cpu")) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        sums = None  # running sums of (pool, test, train) probabilities: one member's arrays in memory at a time
        for k in range(members):
            if members > 1:
                log.info("detector: ensemble member %d of %d", k + 1, members)
            # Member 0 keeps the seed of a single detector, so ensemble=1 is exactly the detector it was.
            module = train_detector(images, masks, detector_cfg, trainer_cfg, seed if k == 0 else seed + 100_003 * k)
            module.to("cuda" if gpu else "cpu")
            parts = [predict(module, pool.images), predict(module, test.images), predict_patches(module, images)]
            sums = parts if sums is None else [a + b for a, b in zip(sums, parts)]
        pool_p, test_p, train_p = sums if members == 1 else [a / members for a in sums]
        return DetectorOutput(pool_p, test_p, time.perf_counter() - start, False, key, train_p, masks)

    if cache_dir is None:
        return compute()
    folder = Path(cache_dir) / "detectors" / key
    with locked(folder.with_suffix(".lock")):
        meta_path = folder / "meta.json"
        if meta_path.exists():
            log.info("detector: loaded probabilities %s from cache", key)
            meta = json.loads(meta_path.read_text())
            train = (np.load(folder / "train_probs.npy"), np.load(folder / "train_masks.npy")) if (folder / "train_masks.npy").exists() else (None, None)
            return DetectorOutput(np.load(folder / "pool.npy"), np.load(folder / "test.npy"), float(meta["seconds"]), True, key, *train)
        out = compute()
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "pool.npy", out.pool)
        np.save(folder / "test.npy", out.test)
        np.save(folder / "train_probs.npy", out.train_probs)
        np.save(folder / "train_masks.npy", out.train_masks)
        # meta.json last: its presence marks a complete entry.
        meta_path.write_text(json.dumps({"seconds": out.seconds, "seed": seed, "detector": dict(detector_cfg)}, default=str))
    return out


# --------------------------------------------------------------------------- proposals


@dataclass
class Proposals:
    """Detector proposals (one per connected component of the thresholded probability map).

    Attributes:
        crops: ``(N, 2, C, C)`` float32: ``[image, predicted mask of this proposal]`` centred on the
            centroid, zero-padded past the section border. The mask channel holds only this proposal's
            component, so the verifier knows which object it is asked about.
        boxes: ``(N, 4)`` int64 ``y0, x0, y1, x1`` bounding box in (downsampled) voxels, end exclusive.
        centroids_vox: ``(N, 3)`` float64 ``z, y, x`` centroid in voxels.
        centroids_nm: ``(N, 3)`` float64 the same in nm.
        z: ``(N,)`` int64 section index in the source volume.
        ignore_share: ``(N,)`` float32 share of the proposal's pixels inside the artifact mask.
        areas: ``(N,)`` int64 pixels.
        scores: ``(N,)`` float32 mean detector probability over the proposal.
        object_index: ``(N,)`` int64 matched ground-truth object (``-1``: a False proposal). Ground
            truth: only the simulated annotator and the evaluation read it.
        iou: ``(N,)`` float64 highest IoU with any ground-truth object of its section.
    """

    crops: np.ndarray
    boxes: np.ndarray
    centroids_vox: np.ndarray
    centroids_nm: np.ndarray
    z: np.ndarray
    ignore_share: np.ndarray
    areas: np.ndarray
    scores: np.ndarray
    object_index: np.ndarray
    iou: np.ndarray

    def __len__(self) -> int:
        return int(self.z.shape[0])

    @property
    def truth(self) -> np.ndarray:
        """``(N,)`` uint8: 1 = True proposal (matched to an object), 0 = False."""
        return (self.object_index >= 0).astype(np.uint8)

    @staticmethod
    def concatenate(parts: list["Proposals"], crop_size: int) -> "Proposals":
        if not parts:
            return empty_proposals(crop_size)
        return Proposals(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in Proposals.__dataclass_fields__})


def empty_proposals(crop_size: int) -> Proposals:
    c = int(crop_size)
    return Proposals(
        crops=np.zeros((0, 2, c, c), np.float32), boxes=np.zeros((0, 4), np.int64), centroids_vox=np.zeros((0, 3)),
        centroids_nm=np.zeros((0, 3)), z=np.zeros(0, np.int64), ignore_share=np.zeros(0, np.float32),
        areas=np.zeros(0, np.int64), scores=np.zeros(0, np.float32), object_index=np.zeros(0, np.int64), iou=np.zeros(0),
    )


def centred_crop(arr: np.ndarray, cy: float, cx: float, size: int) -> np.ndarray:
    """``(size, size)`` window of a 2D array centred on ``(cy, cx)``, zero where it leaves the array.

    The centre pixel ``round(cy), round(cx)`` lands at index ``size // 2``.
    """
    h, w = arr.shape
    y0 = int(math.floor(cy + 0.5)) - size // 2
    x0 = int(math.floor(cx + 0.5)) - size // 2
    out = np.zeros((size, size), dtype=arr.dtype)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y0 + size, h), min(x0 + size, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = arr[sy0:sy1, sx0:sx1]
    return out


def section_proposals(
    prob: np.ndarray,
    image: np.ndarray,
    ignore: np.ndarray,
    z: int,
    voxel_size: tuple[float, float, float],
    threshold: float,
    min_size: int,
    crop_size: int,
) -> tuple[Proposals, np.ndarray]:
    """Proposals of one section: components of ``prob >= threshold`` with at least ``min_size`` pixels.

    Args:
        prob, image, ignore: ``(H, W)`` float arrays (detector probability, image, artifact share).

    Returns:
        ``(proposals, labels)``: the proposals (``object_index`` -1 and ``iou`` 0 until matched) and
        the ``(H, W)`` int32 map numbering them ``1..N`` in the same order.
    """
    labels, n = label_components(prob >= threshold, min_size)
    if n == 0:
        return empty_proposals(crop_size), labels
    idx = np.arange(1, n + 1)
    yx = component_centroids(labels, n)
    boxes = np.array([[sl[0].start, sl[1].start, sl[0].stop, sl[1].stop] for sl in ndimage.find_objects(labels, n)], dtype=np.int64)
    crops = np.zeros((n, 2, crop_size, crop_size), dtype=np.float32)
    for i, (cy, cx) in enumerate(yx):
        crops[i, 0] = centred_crop(image, cy, cx, crop_size)
        crops[i, 1] = centred_crop((labels == i + 1).astype(np.float32), cy, cx, crop_size)
    vox = np.column_stack([np.full(n, float(z)), yx])
    props = Proposals(
        crops=crops,
        boxes=boxes,
        centroids_vox=vox,
        centroids_nm=vox * np.asarray(voxel_size, dtype=np.float64),
        z=np.full(n, int(z), dtype=np.int64),
        ignore_share=np.asarray(ndimage.mean(ignore, labels, idx), dtype=np.float32).reshape(n),
        areas=np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64),
        scores=np.asarray(ndimage.mean(prob, labels, idx), dtype=np.float32).reshape(n),
        object_index=np.full(n, -1, dtype=np.int64),
        iou=np.zeros(n, dtype=np.float64),
    )
    return props, labels


def build_proposals(
    probs: np.ndarray, sections: Sections, threshold: float, min_size: int, crop_size: int, match_iou: float
) -> tuple[Proposals, GroundTruthObjects]:
    """Proposals of every section, matched to the ground-truth objects (see :mod:`dualstream.matching`).

    Args:
        probs: ``(S, H, W)`` detector probabilities of ``sections``.

    Returns:
        ``(proposals, objects)``; ``proposals.object_index`` indexes ``objects``.
    """
    if probs.shape != sections.images.shape:
        raise ValueError(f"probabilities {probs.shape} do not match sections {sections.images.shape}")
    parts, objects, offset = [], [], 0
    for s in range(len(sections)):
        z = int(sections.z[s])
        props, pred_labels = section_proposals(
            probs[s], sections.images[s], sections.ignore[s], z, sections.voxel_size, threshold, min_size, crop_size
        )
        objs, gt_labels = section_objects(sections.labels[s], z, sections.voxel_size)
        obj, best = match_proposals(iou_table(pred_labels, len(props), gt_labels, len(objs)), match_iou)
        props.object_index = np.where(obj >= 0, obj + offset, -1)
        props.iou = best
        offset += len(objs)
        parts.append(props)
        objects.append(objs)
    return Proposals.concatenate(parts, crop_size), GroundTruthObjects.concatenate(objects)
