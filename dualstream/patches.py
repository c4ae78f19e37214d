"""Patches: cut volumes into the candidate pool (what an annotator labels) and a held-out test set.

The pool is a table of square 2D tiles, one row per candidate, with the tile's origin in voxels
(``z, y, x`` of the top-left corner, after downsampling) and its voxel size in nm.
EM sections of the EPFL set are not contiguous, so tiles are 2D by default: one section, ``P x P``
pixels. With ``data.patch_depth = D > 1`` an item is an anisotropic 3D block instead: ``D``
consecutive sections of the same ``P x P`` square, ``(D, P, P)``, its origin ``z`` the first section;
blocks start every ``data.stride_z`` sections (default ``D``: non-overlapping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from dualstream.errors import ConfigError, DataError, EmptyPoolError
from dualstream.volume import Volume, check_aligned, intensity_range, open_volume, sampled_max


@dataclass
class PatchPool:
    """Square 2D patches (or 3D blocks of ``D`` sections) and their ground truth.

    Attributes:
        images: ``(N, P, P)`` float32 in ``[0, 1]``; ``(N, D, P, P)`` for blocks (``data.patch_depth = D > 1``).
            With ``data.pool_store=disk`` a :class:`~dualstream.pool_store.PatchStore` (read lazily,
            indexed like the array; values ``round(255 x) / 255``).
        labels: ``(N, P, P)`` (blocks: ``(N, D, P, P)``) uint8 in ``{0, 1}`` (ground truth; only the
            oracle may read it for the pool); a ``PatchStore`` of the labels on disk.
        ignore_share: ``(N,)`` float32, share of each patch (all voxels of a block) inside the ignore (artifact) mask.
        origins: ``(N, 3)`` int64, ``z, y, x`` of each patch's top-left corner (a block's first
            section), in (downsampled) voxels.
        voxel_size: ``(z, y, x)`` nm of the (downsampled) grid.
        source: where the patches came from, for messages and results.
    """

    images: np.ndarray
    labels: np.ndarray
    ignore_share: np.ndarray
    origins: np.ndarray
    voxel_size: tuple[float, float, float]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def patch_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def depth(self) -> int:
        """Sections per item: 1 for 2D tiles, ``D`` for ``(N, D, P, P)`` blocks."""
        return int(self.images.shape[1]) if self.images.ndim == 4 else 1

    @property
    def origins_nm(self) -> np.ndarray:
        """``(N, 3)`` float64 patch origins in nanometres."""
        return self.origins * np.asarray(self.voxel_size, dtype=np.float64)

    def is_artifact(self, threshold: float = 0.5) -> np.ndarray:
        """``(N,)`` bool: patches lying at least ``threshold`` inside the ignore mask."""
        return self.ignore_share >= threshold


def normalise_intensity(section: np.ndarray, intensity_range: tuple[float, float] | None = None) -> np.ndarray:
    """Map a raw section to float32 ``[0, 1]``.

    With ``intensity_range = (lo, hi)`` (the volume's, see :func:`dualstream.volume.intensity_range`):
    ``(x - lo) / (hi - lo)``, clipped. Without: integer types by their dtype's range, floats clipped.
    """
    if intensity_range is not None:
        lo, hi = float(intensity_range[0]), float(intensity_range[1])
        return np.clip((section.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if np.issubdtype(section.dtype, np.integer):
        info = np.iinfo(section.dtype)
        return ((section.astype(np.float32) - info.min) / float(info.max - info.min)).astype(np.float32)
    return np.clip(section.astype(np.float32), 0.0, 1.0)


def downsample(section: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean downsampling of a ``(y, x)`` float array by an integer factor (edges cropped)."""
    if factor == 1:
        return section
    h, w = (section.shape[0] // factor) * factor, (section.shape[1] // factor) * factor
    blocks = section[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def downsample_mask(labels: np.ndarray, factor: int, label_threshold: float = 0.0) -> np.ndarray:
    """``(y, x)`` label values -> uint8 ``{0, 1}`` mask on the ``factor`` x coarser grid.

    Foreground is ``> label_threshold``; a coarse pixel is foreground when at least half of its block is
    (the rule for the pool's labels, and for a lab's ingested label boxes, so both give the same masks).
    """
    return (downsample((labels > label_threshold).astype(np.float32), factor) >= 0.5).astype(np.uint8)


def tile_origins(shape_yx: tuple[int, int], patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of ``patch x patch`` tiles at ``stride``, all fully inside ``shape_yx``."""
    ys = range(0, shape_yx[0] - patch + 1, stride)
    xs = range(0, shape_yx[1] - patch + 1, stride)
    return [(y, x) for y in ys for x in xs]


def _tiles(section: np.ndarray, origins: Sequence[tuple[int, int]], patch: int) -> np.ndarray:
    return np.stack([section[y : y + patch, x : x + patch] for y, x in origins])


def read_section(
    image: Volume, labels: Volume | None, ignore: Volume | None, z: int, factor: int, label_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Section ``z`` as the model sees it: image float32 ``[0, 1]``, labels uint8 ``{0, 1}``
    (foreground where ``> label_threshold``, re-thresholded at half coverage after downsampling; all 0
    without a label volume), and the float32 share of each pixel in the ignore mask; all ``(y, x)``
    after ``factor`` x downsampling.

    Raises:
        DataError: the section holds NaN or Inf (a float image).
    """
    raw = image.section(z)
    if not np.issubdtype(raw.dtype, np.integer):
        n_bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
        if n_bad:
            raise DataError(f"{image.source}: section {z} holds {n_bad} NaN/Inf voxels; replace them before using the image")
    img = downsample(normalise_intensity(raw, image.intensity), factor)
    lab = (
        downsample_mask(labels.section(z), factor, label_threshold) if labels is not None else np.zeros(img.shape, dtype=np.uint8)
    )
    ign = downsample((ignore.section(z) > 0).astype(np.float32), factor) if ignore is not None else np.zeros_like(img)
    return img, lab, ign


def block_starts(sections: Sequence[int], depth: int, stride_z: int | None = None) -> list[int]:
    """Positions ``i`` in ``sections`` where a block of ``depth`` consecutive sections starts.

    Candidates are every ``stride_z``-th position (default ``depth``: non-overlapping); a candidate
    is kept when ``sections[i : i + depth]`` are ``depth`` consecutive section numbers (a selection
    with gaps, ``data.sections=[0, 2, 5]``, forms no block across a gap).
    """
    step = stride_z or depth
    starts = []
    for i in range(0, len(sections) - depth + 1, step):
        run = [int(s) for s in sections[i : i + depth]]
        if run == list(range(run[0], run[0] + depth)):
            starts.append(i)
    return starts


Piece = tuple[np.ndarray, np.ndarray, np.ndarray, list]
"""Patches of one section (or one group of ``D`` sections): images, labels, ignore shares, origins."""


def _extract_tiles(
    image: Volume, labels: Volume | None, ignore: Volume | None, sections: Sequence[int],
    patch_size: int, stride: int, factor: int, label_threshold: float,
) -> Iterator[Piece]:
    """The 2D part of :func:`extract_patches`: ``(n, P, P)`` tiles, one section at a time."""
    for z in sections:
        img, lab, ign = read_section(image, labels, ignore, z, factor, label_threshold)
        corners = tile_origins(img.shape, patch_size, stride)
        if not corners:
            raise EmptyPoolError(
                f"{image.source}: sections are {img.shape[0]}x{img.shape[1]} pixels after downsampling by {factor},"
                f" smaller than data.patch_size={patch_size}: the pool is empty; lower data.patch_size or data.downsample"
            )
        yield (
            _tiles(img, corners, patch_size), _tiles(lab, corners, patch_size),
            _tiles(ign, corners, patch_size).mean(axis=(1, 2)), [(z, y, x) for y, x in corners],
        )


def _extract_blocks(
    image: Volume, labels: Volume | None, ignore: Volume | None, sections: Sequence[int],
    patch_size: int, stride: int, factor: int, label_threshold: float, depth: int, stride_z: int | None,
) -> Iterator[Piece]:
    """The 3D part of :func:`extract_patches`: ``(n, D, P, P)`` blocks, one group of ``D`` sections at a time."""
    starts = block_starts(sections, depth, stride_z)
    if not starts:
        raise EmptyPoolError(
            f"{image.source}: {len(sections)} sections hold no run of data.patch_depth={depth} consecutive sections,"
            " so the pool (or the test set) is empty; lower data.patch_depth or select more sections (data.sections)"
        )
    cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # sections shared by overlapping blocks
    for i in starts:
        zs = [int(z) for z in sections[i : i + depth]]
        cache = {z: cache[z] if z in cache else read_section(image, labels, ignore, z, factor, label_threshold) for z in zs}
        img, lab, ign = (np.stack([cache[z][k] for z in zs]) for k in range(3))  # each (D, y, x)
        corners = tile_origins(img.shape[1:], patch_size, stride)
        if not corners:
            raise EmptyPoolError(
                f"{image.source}: sections are {img.shape[1]}x{img.shape[2]} pixels after downsampling by {factor},"
                f" smaller than data.patch_size={patch_size}: the pool is empty; lower data.patch_size or data.downsample"
            )
        yield (
            np.stack([img[:, y : y + patch_size, x : x + patch_size] for y, x in corners]),
            np.stack([lab[:, y : y + patch_size, x : x + patch_size] for y, x in corners]),
            np.stack([ign[:, y : y + patch_size, x : x + patch_size] for y, x in corners]).mean(axis=(1, 2, 3)),
            [(zs[0], y, x) for y, x in corners],
        )


def extract_patches(
    image: Volume,
    labels: Volume | None,
    sections: Sequence[int],
    patch_size: int,
    stride: int | None = None,
    factor: int = 1,
    label_threshold: float = 0.0,
    ignore: Volume | None = None,
    depth: int = 1,
    stride_z: int | None = None,
    store: str | Path | None = None,
) -> PatchPool:
    """Tile the given sections of an image volume (and its labels / ignore mask) into a pool.

    Reads one section at a time (one block of ``depth`` sections for 3D), so only the patches are
    held in memory; with ``store`` not even those: each section's patches go straight into a
    :class:`~dualstream.pool_store.PatchStore` file (uint8, ``round(x * 255)``) and the pool's
    ``images`` and ``labels`` read from it lazily.

    Args:
        image, labels: aligned ``(z, y, x)`` volumes; labels are foreground where ``> label_threshold``
            (``None``: an unlabelled pool, all labels 0).
        sections: section indices ``z`` to use.
        patch_size: tile side ``P`` in (downsampled) pixels.
        stride: tile step; defaults to ``patch_size`` (non-overlapping).
        factor: in-plane downsampling factor (block mean; masks re-thresholded at half coverage).
        ignore: optional artifact mask, nonzero = ignore.
        depth: sections per item; 1 gives ``(N, P, P)`` tiles, ``D > 1`` gives ``(N, D, P, P)`` blocks
            of ``D`` consecutive sections (see :func:`block_starts`), origin ``z`` = first section.
        stride_z: section step between blocks (default ``depth``).
        store: ``.h5`` file to write the pool into (``None``: in memory, float32).

    Raises:
        EmptyPoolError: the sections are smaller than one patch, or hold no block of ``depth``.
    """
    if labels is not None:
        check_aligned(image, labels, "labels")
    if ignore is not None:
        check_aligned(image, ignore, "ignore mask")
    stride = stride or patch_size
    if depth > 1:
        pieces = _extract_blocks(image, labels, ignore, sections, patch_size, stride, factor, label_threshold, depth, stride_z)
    else:
        pieces = _extract_tiles(image, labels, ignore, sections, patch_size, stride, factor, label_threshold)
    vz, vy, vx = image.voxel_size
    voxel_size = (vz, vy * factor, vx * factor)
    empty = f"{image.source}: no sections selected, so the pool is empty; check data.sections"
    if store is not None:
        return _extract_to_store(pieces, Path(store), voxel_size, image.source, empty)
    imgs, labs, igns, origins = [], [], [], []
    for img, lab, ign, org in pieces:
        imgs.append(img)
        labs.append(lab)
        igns.append(ign)
        origins.extend(org)
    if not imgs:
        raise EmptyPoolError(empty)
    return PatchPool(
        images=np.concatenate(imgs).astype(np.float32),
        labels=np.concatenate(labs),
        ignore_share=np.concatenate(igns).astype(np.float32),
        origins=np.asarray(origins, dtype=np.int64),
        voxel_size=voxel_size,
        source=image.source,
    )


def _extract_to_store(pieces: Iterator[Piece], path: Path, voxel_size: tuple[float, float, float], source: str, empty: str) -> PatchPool:
    """Write the pieces of :func:`extract_patches` into a store file at ``path``; the pool reads from it."""
    from dualstream.pool_store import PatchStoreWriter

    writer = None
    try:
        for img, lab, ign, org in pieces:
            if writer is None:
                writer = PatchStoreWriter(path, img.shape[1:])
            writer.append(img, lab, ign, np.asarray(org, dtype=np.int64).reshape(-1, 3))
        if writer is None:
            raise EmptyPoolError(empty)
        images = writer.close(voxel_size, source)
    except BaseException:
        if writer is not None and writer.file.id.valid:
            writer.abort()
        raise
    return _store_pool(images)


def open_store_pool(path: str | Path) -> PatchPool:
    """A pool written by :func:`extract_patches` with ``store=path``, opened again (a later run, same data)."""
    from dualstream.pool_store import PatchStore

    return _store_pool(PatchStore(path))


def _store_pool(images: Any) -> PatchPool:
    """The pool of a :class:`~dualstream.pool_store.PatchStore`: its images, labels and small arrays
    (voxel size and source as written with it)."""
    return PatchPool(
        images=images, labels=images.labels, ignore_share=images.read_small("ignore_share"),
        origins=images.read_small("origins"), voxel_size=images.voxel_size, source=images.source,  # type: ignore[arg-type]
    )


def split_sections(n_sections: int, test_fraction: float, block: int = 1) -> tuple[list[int], list[int]]:
    """Hold out the last ``ceil(test_fraction * n)`` sections for testing (a fixed, seed-free split).

    With ``block = D > 1`` (3D items) the held-out count is rounded up to whole blocks of ``D``
    sections, and the pool must keep at least one block.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
    n_test = max(1, math.ceil(test_fraction * n_sections))
    if block > 1:
        n_test = math.ceil(n_test / block) * block
        if n_sections - n_test < block:
            raise ConfigError(
                f"data.patch_depth={block}: {n_sections} sections cannot give both a pool and a test set of whole"
                f" blocks ({n_test} held out); lower data.patch_depth or data.test_fraction, or give data.test_image"
            )
    if n_test >= n_sections:
        raise ConfigError(
            f"data.test_fraction={test_fraction} holds out all {n_sections} sections; give data.test_image"
            " or use more sections"
        )
    return list(range(n_sections - n_test)), list(range(n_sections - n_test, n_sections))


def _select(sections: Any, n: int, where: str) -> list[int]:
    """``None`` -> all; ``[0, 2, 5]`` -> those; ``'0:8'`` -> a slice."""
    if sections is None:
        return list(range(n))
    if isinstance(sections, str):
        parts = [int(p) if p else None for p in sections.split(":")]
        chosen = list(range(n))[slice(*parts)]
    else:
        chosen = [int(s) for s in sections]
    bad = [s for s in chosen if not 0 <= s < n]
    if bad:
        raise ConfigError(f"{where}: sections {bad} are out of range for a volume of {n} sections")
    return chosen


@dataclass(frozen=True)
class DataSplit:
    """The volumes a ``data`` config names and which sections go to the pool and to the test set.

    The test sections carry no ignore mask: artifacts concern the annotator, test items are scored as
    they are.
    """

    image: Volume
    labels: Volume
    ignore: Volume | None
    pool_sections: list[int]
    test_image: Volume
    test_labels: Volume
    test_sections: list[int]


def open_split(data: Any) -> DataSplit:
    """Open the volumes of a ``data`` config and split its sections (shared by every task).

    ``data`` keys: ``image, labels, ignore, test_image, test_labels, voxel_size, test_fraction,
    sections``. Without ``test_image`` the last ``test_fraction`` of the (selected) sections is held out.
    """
    vs = data.get("voxel_size")
    image = open_volume(data.image, vs, role="data.image")
    # One intensity range per run, from the pool image: test sections are normalised like the pool.
    image.intensity = intensity_range(image, data.get("intensity_range"), role="data.image")
    labels = open_volume(data.labels, vs, role="data.labels")
    ignore = open_volume(data.ignore, vs, role="data.ignore") if data.get("ignore") else None
    chosen = _select(data.get("sections"), len(image), "data.sections")
    if data.get("test_image"):
        if not data.get("test_labels"):
            raise ConfigError("data.test_image is set but data.test_labels is not; give both or neither")
        test_image = open_volume(data.test_image, vs, role="data.test_image")
        if data.get("intensity_range") is None:
            intensity_range(test_image, None, role="data.test_image")  # NaN / constant checks only
        test_image.intensity = image.intensity
        test_labels = open_volume(data.test_labels, vs, role="data.test_labels")
        return DataSplit(image, labels, ignore, chosen, test_image, test_labels, list(range(len(test_image))))
    pool_idx, test_idx = split_sections(len(chosen), float(data.get("test_fraction", 0.25)), int(data.get("patch_depth") or 1))
    return DataSplit(image, labels, ignore, [chosen[i] for i in pool_idx], image, labels, [chosen[i] for i in test_idx])


def _int_key(data: Any, key: str, default: Any = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"data.{key}: expected an integer, got {value!r}; e.g. data.{key}={default if default is not None else 64}")
    return value


def depth_keys(data: Any) -> tuple[int, int | None]:
    """``(data.patch_depth, data.stride_z)``, checked: ``(1, None)`` when absent (2D tiles).

    Raises:
        ConfigError: not integers >= 1, or 3D blocks with ``data.inject_artifacts > 0`` (the
            simulated defects are 2D only).
    """
    depth = _int_key(data, "patch_depth", 1)
    if depth < 1:
        raise ConfigError(f"data.patch_depth: must be an integer >= 1 (1 = 2D tiles, D > 1 = blocks of D sections), got {depth}")
    stride_z = data.get("stride_z")
    if stride_z is not None and _int_key(data, "stride_z", depth) < 1:
        raise ConfigError(f"data.stride_z: must be >= 1 or null (= data.patch_depth), got {stride_z}")
    if depth > 1 and float(data.get("inject_artifacts") or 0) > 0:
        raise ConfigError(
            f"data.inject_artifacts={data.get('inject_artifacts')}: simulated artifacts are 2D only and"
            f" data.patch_depth={depth}; set data.inject_artifacts=0 or data.patch_depth=1"
        )
    return depth, stride_z


def grid_keys(data: Any) -> tuple[int, int, int | None]:
    """``(data.patch_size, data.downsample, data.stride)``, checked (stride ``None`` = the patch size)."""
    patch_size = _int_key(data, "patch_size", 64)
    if patch_size < 8:
        raise ConfigError(f"data.patch_size must be at least 8 pixels, got {data.patch_size}")
    factor = _int_key(data, "downsample", 1)
    if factor < 1:
        raise ConfigError(f"data.downsample: must be an integer >= 1 (1 = full resolution), got {factor}")
    stride = data.get("stride")
    if stride is not None and (_int_key(data, "stride", 64) < 1):
        raise ConfigError(f"data.stride: must be >= 1 or null (= data.patch_size), got {stride}")
    return patch_size, factor, stride


def _stored(store_dir: str | Path | None, name: str) -> tuple[Path | None, PatchPool | None]:
    """``(path, pool)`` of part ``name`` in ``store_dir``: the pool when a complete file is there already."""
    if store_dir is None:
        return None, None
    path = Path(store_dir) / f"{name}.h5"
    if path.exists():
        try:
            return path, open_store_pool(path)
        except DataError:  # an unreadable or older file: written again
            path.unlink(missing_ok=True)
    return path, None


def build_pools(data: Any, store_dir: str | Path | None = None) -> tuple[PatchPool, PatchPool]:
    """Open the volumes named by a ``data`` config (see :func:`open_split`) and cut the pool and the test set.

    Further ``data`` keys: ``label_threshold, downsample, patch_size, stride, patch_depth, stride_z``
    (see :func:`depth_keys`; the test set is cut into blocks like the pool).

    With ``store_dir`` both parts are written to disk (``pool.h5``, ``test.h5``, see
    :mod:`dualstream.pool_store`) section by section, or opened when a complete file is there already
    (the caller keys the folder by the data config and files, and holds a lock while building).

    Returns:
        ``(pool, test)``.

    Raises:
        ConfigError: a key of the wrong type or range; no foreground above ``data.label_threshold``
            in the pool or in the test sections (the simulated annotator would paint empty masks and
            the foreground IoU would be 0 whatever the strategy).
    """
    patch_size, factor, stride = grid_keys(data)
    threshold = data.get("label_threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ConfigError(f"data.label_threshold: expected a number, got {threshold!r}; foreground is label > threshold (127 for 0/255 masks)")
    depth, stride_z = depth_keys(data)
    split = open_split(data)
    common = dict(patch_size=patch_size, stride=stride, factor=factor, label_threshold=float(threshold))
    if depth > 1:  # 2D calls stay exactly as they were
        common.update(depth=depth, stride_z=stride_z)
    pool_path, pool = _stored(store_dir, "pool")
    if pool is None:
        pool = extract_patches(split.image, split.labels, split.pool_sections, ignore=split.ignore, store=pool_path, **common)
    test_path, test = _stored(store_dir, "test")
    if test is None:
        test = extract_patches(split.test_image, split.test_labels, split.test_sections, store=test_path, **common)
    for name, part, labels in (("pool", pool, split.labels), ("test", test, split.test_labels)):
        if not part.labels.any():
            raise ConfigError(
                f"data.label_threshold: no {name} patch has a label above {threshold:g} (largest label value in"
                f" {labels.source}: {sampled_max(labels):g}); foreground is label > data.label_threshold:"
                " use 0 for 0/1 masks, 127 for 0/255 masks, or check data.labels and data.sections"
            )
    return pool, test


def build_unlabelled_pool(data: Any, store_dir: str | Path | None = None) -> PatchPool:
    """The pool of a volume nobody has labelled: every selected section, no test split, labels all 0.

    ``data`` keys: ``image, voxel_size, intensity_range, sections, downsample, patch_size, stride``
    (``labels`` null). Used when a lab annotates its own volume (``dualstream-suggest``).
    ``store_dir``: write (or reopen) the pool on disk, as in :func:`build_pools`.
    """
    patch_size, factor, stride = grid_keys(data)
    if depth_keys(data)[0] > 1:
        raise ConfigError(
            f"data.patch_depth={data.get('patch_depth')}: annotating your own volume (dualstream-suggest) is 2D only;"
            " set data.patch_depth=1"
        )
    image = open_volume(data.image, data.get("voxel_size"), role="data.image")
    image.intensity = intensity_range(image, data.get("intensity_range"), role="data.image")
    ignore = open_volume(data.ignore, data.get("voxel_size"), role="data.ignore") if data.get("ignore") else None
    sections = _select(data.get("sections"), len(image), "data.sections")
    path, pool = _stored(store_dir, "pool")
    if pool is not None:
        return pool
    return extract_patches(image, None, sections, patch_size, stride=stride, factor=factor, ignore=ignore, store=path)
