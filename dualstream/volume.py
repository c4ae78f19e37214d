"""Volumes: lazy ``z, y, x`` arrays with a voxel size in nanometres, in the formats labs hold.

Supported sources (``spec`` strings, as written in configs):

- ``file.h5:dataset`` (also ``.hdf5``/``.hdf``): an HDF5 dataset, read by hyperslab through h5py.
  ``file.h5`` alone works when it holds one dataset.
- ``path.zarr`` (Zarr v2 or v3: an array, or a group holding one array) and ``path.zarr/name`` (an
  array inside a group). An OME-Zarr image group (``path.ome.zarr``) is read at its highest
  resolution, axes mapped by name (singleton ``c``/``t`` dropped), voxel size from its ``scale``.
- ``path.n5/dataset`` (or ``path.n5`` holding one dataset): N5 through TensorStore, stored ``x, y, z``
  and reversed here.
- a directory of 2D PNG/TIFF sections, sorted by file name (one section per file).
- a multi-page TIFF (one page per section, memory-mapped or read page by page) or a single 2D image
  (a one-section volume).

Every volume is read by box (:meth:`Volume.read_box`) or section (:meth:`Volume.section`); nothing
loads whole unless asked (:meth:`Volume.read`). :func:`write_volume` writes HDF5, Zarr (v2/v3), OME-Zarr,
N5 and TIFF. The per-format code lives in :mod:`dualstream.formats`.

Voxel sizes (``z, y, x`` nm) come from the caller (``data.voxel_size``), else from the file: HDF5 and
Zarr attributes ``voxel_size`` or ``resolution`` (z, y, x nm); OME-Zarr ``scale`` with axis units; N5
``resolution``/``pixelResolution`` (x, y, z); ImageJ or OME-TIFF metadata. Without any, 1 nm is
assumed (and said). :attr:`Volume.voxel_size_from` records which.

Axis order is fixed here, at the reader: everything downstream sees ``z, y, x``.
Colour or grey+alpha images keep their first (grey) channel, as the EPFL masks need.

Intensities are mapped to ``[0, 1]`` by a range taken once per volume (:func:`intensity_range`), from
``data.intensity_range`` when given, else from the data, not from the dtype alone: a 12-bit
acquisition stored as uint16, or a float image holding 0-255, would otherwise be squashed or clipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dualstream.errors import ConfigError, DataError, ShapeMismatchError
from dualstream.formats import hdf5, images, n5, zarr_store
from dualstream.formats.base import Opened
from dualstream.formats.images import IMAGE_SUFFIXES, TIFF_SUFFIXES, SectionStack

__all__ = [
    "Volume", "SectionStack", "open_volume", "write_volume", "spec_path", "check_aligned",
    "intensity_range", "sampled_max", "sampled_sections",
]

log = logging.getLogger(__name__)

HDF5_SUFFIXES = hdf5.SUFFIXES
#: Said by :attr:`Volume.voxel_size_from` when the file records no voxel size.
NOT_RECORDED = "not recorded: assuming 1 nm"


@dataclass
class Volume:
    """A ``(z, y, x)`` array, possibly lazy (h5py dataset, zarr/N5/TIFF view, section stack), plus its voxel size.

    Attributes:
        data: array-like with ``shape``, ``dtype`` and ``__getitem__`` (numpy array, h5py.Dataset,
            :class:`~dualstream.formats.base.ZYXArray`, SectionStack).
        voxel_size: ``(z, y, x)`` voxel size in nanometres.
        source: the spec it was opened from, for messages.
        intensity: ``(lo, hi)`` raw values mapped to 0 and 1 (see :func:`intensity_range`); ``None``
            scales each section by its dtype (the rule for bare volumes, e.g. in unit tests).
        format: the format read (``"hdf5"``, ``"zarr v3"``, ``"ome-zarr 0.4 (zarr v2)"``, ``"n5"``, ...).
        voxel_size_from: where ``voxel_size`` came from (``"given"``, a metadata key, or
            :data:`NOT_RECORDED`).
    """

    data: Any
    voxel_size: tuple[float, float, float]
    source: str
    intensity: tuple[float, float] | None = None
    format: str = "array"
    voxel_size_from: str = "given"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def chunks(self) -> tuple[int, int, int] | None:
        """The storage chunk (block, tile) shape ``(z, y, x)``, or None when stored contiguously."""
        chunks = getattr(self.data, "chunks", None)
        return tuple(int(c) for c in chunks) if chunks else None  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Size of the whole volume in memory (uncompressed), in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def section(self, z: int) -> np.ndarray:
        """Section ``z`` as a ``(y, x)`` numpy array (reads only that section)."""
        return np.asarray(self.data[int(z)])

    def read_box(self, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The box ``[z0:z1, y0:y1, x0:x1]`` as a ``(z1-z0, y1-y0, x1-x0)`` array, reading only that box.

        Raises:
            DataError: the box is not inside the volume (``0 <= start <= stop <= size`` on each axis).
        """
        bounds = [(int(z0), int(z1)), (int(y0), int(y1)), (int(x0), int(x1))]
        if not all(0 <= a <= b <= n for (a, b), n in zip(bounds, self.shape)):
            box = ", ".join(f"{ax} {a}:{b}" for ax, (a, b) in zip("zyx", bounds))
            raise DataError(
                f"{self.source}: box ({box}) is not inside the volume of shape {self.shape} (z, y, x);"
                " check that the boxes and the volume belong together"
            )
        (z0, z1), (y0, y1), (x0, x1) = bounds
        reader = getattr(self.data, "read_box", None)
        if reader is not None:
            return np.asarray(reader(z0, z1, y0, y1, x0, x1))
        return np.asarray(self.data[z0:z1, y0:y1, x0:x1])

    def read(self) -> np.ndarray:
        """The whole volume as a numpy array (only for volumes that fit in memory)."""
        return self.read_box(0, self.shape[0], 0, self.shape[1], 0, self.shape[2])


def spec_path(spec: str | Path) -> Path:
    """The file or directory a volume spec names, without opening it.

    ``'a/b.h5:raw'`` -> ``a/b.h5``; ``'a/b.zarr/raw'`` -> ``a/b.zarr``; ``'a/b.n5/raw'`` -> ``a/b.n5``.
    """
    text = str(spec)
    for split in (hdf5.split_spec(text), zarr_store.split_container(text, zarr_store.SUFFIX),
                  zarr_store.split_container(text, n5.SUFFIX)):
        if split is not None:
            return split[0]
    return Path(spec)


def _open_any(spec: str, role: str) -> Opened:
    h5 = hdf5.split_spec(spec)
    if h5 is not None:
        return hdf5.open_hdf5(h5[0], h5[1], spec, role)
    zs = zarr_store.split_container(spec, zarr_store.SUFFIX)
    if zs is not None:
        return zarr_store.open_zarr(zs[0], zs[1], spec, role)
    ns = zarr_store.split_container(spec, n5.SUFFIX)
    if ns is not None:
        return n5.open_n5(ns[0], ns[1], spec, role)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{role}: no such file or directory '{path}'; check the path")
    if path.is_dir():
        return images.open_directory(path, role)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return images.open_tiff(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return images.open_image(path)
    raise DataError(
        f"{path}: unknown volume format '{path.suffix}'; use .h5:NAME, .zarr[/NAME], .n5/NAME,"
        " a directory of PNG/TIFF, or a .tif"
    )


def open_volume(
    spec: str | Path,
    voxel_size: Sequence[float] | None = None,
    role: str = "data.image",
) -> Volume:
    """Open a volume from a spec string (see module docstring), lazily.

    Args:
        spec: ``file.h5:dataset``, ``path.zarr[/name]``, ``path.n5[/name]``, directory of sections,
            or a (multi-page) TIFF / single image.
        voxel_size: ``(z, y, x)`` in nm; ``None`` reads it from the file's metadata if present,
            else assumes ``(1, 1, 1)``.
        role: the config key this spec came from, named in error messages.

    Raises:
        DataError: missing path, unreadable file, no sections, wrong dimensionality.
        ShapeMismatchError: sections of a directory differ in shape.
    """
    spec = str(spec)
    opened = _open_any(spec, role)
    data = opened.data
    if len(data.shape) != 3:
        raise DataError(f"{spec}: expected a 3D (z, y, x) or 2D (y, x) array, got shape {tuple(data.shape)}")
    origin = "given"
    if voxel_size is None:
        if opened.voxel_size is None:
            if role.endswith("image"):
                # Distances (patch origins, centroid errors) would be reported in pixels, not nm.
                log.warning(
                    "%s: '%s' carries no voxel size; assuming 1 x 1 x 1 nm: set data.voxel_size=[z,y,x] (nm)", role, spec
                )
            voxel_size, origin = (1.0, 1.0, 1.0), NOT_RECORDED
        else:
            voxel_size, origin = opened.voxel_size, opened.voxel_from
    if len(voxel_size) != 3:
        raise DataError(f"{role}: voxel_size must have 3 values (z, y, x) in nm, got {list(voxel_size)}")
    return Volume(
        data=data, voxel_size=tuple(float(v) for v in voxel_size), source=spec,  # type: ignore[arg-type]
        format=opened.format, voxel_size_from=origin,
    )


def write_volume(
    spec: str | Path,
    array: Any,
    voxel_size: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None,
    zarr_format: int = 3,
) -> None:
    """Write a ``(z, y, x)`` array (a 2D one as one section) where ``spec`` says, readable by :func:`open_volume`.

    Specs: ``file.h5:name``; ``path.zarr`` (an array) or ``path.zarr/name`` (an array in a group);
    ``path.ome.zarr`` (an OME-Zarr image, one level, scale in nm); ``path.n5/name``; ``file.tif``
    (multi-page, voxel size in ImageJ metadata). Files and whole stores are written beside their
    path and renamed into place, so a reader never sees half a volume.

    Args:
        array: ``(z, y, x)`` or ``(y, x)``; bool is stored as uint8.
        voxel_size: ``(z, y, x)`` in nm, recorded in the format's own metadata; None records none.
        chunks: ``(z, y, x)`` chunk shape (default: one section, up to 512 x 512; HDF5 contiguous).
        zarr_format: 2 or 3, for ``.zarr`` specs (OME-Zarr: NGFF 0.4 in v2, 0.5 in v3).

    Raises:
        DataError: an unknown format, a missing dataset name, or an array that is not 2D/3D.
    """
    spec = str(spec)
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"{spec}: can only write a 3D (z, y, x) or 2D array, got shape {arr.shape}")
    if voxel_size is not None and len(voxel_size) != 3:
        raise DataError(f"{spec}: voxel_size must have 3 values (z, y, x) in nm, got {list(voxel_size)}")
    if chunks is not None and len(chunks) != 3:
        raise DataError(f"{spec}: chunks must have 3 values (z, y, x), got {list(chunks)}")
    h5 = hdf5.split_spec(spec)
    zs = zarr_store.split_container(spec, zarr_store.SUFFIX)
    ns = zarr_store.split_container(spec, n5.SUFFIX)
    root = (h5 or zs or ns or (Path(spec), None))[0]
    root.parent.mkdir(parents=True, exist_ok=True)
    if h5 is not None:
        if h5[1] is None:
            raise DataError(f"{spec}: name the dataset to write, as '{spec}:NAME'")
        hdf5.write_hdf5(h5[0], h5[1], arr, voxel_size, chunks)
    elif zs is not None:
        ome = zs[0].name.lower().endswith(".ome.zarr")
        zarr_store.write_zarr(zs[0], zs[1], arr, voxel_size, chunks, zarr_format=zarr_format, ome=ome)
    elif ns is not None:
        n5.write_n5(ns[0], ns[1], arr, voxel_size, chunks)
    elif Path(spec).suffix.lower() in TIFF_SUFFIXES:
        images.write_tiff(Path(spec), arr, voxel_size, chunks)
    else:
        raise DataError(f"{spec}: cannot write this format; use .h5:NAME, .zarr[/NAME], .ome.zarr, .n5/NAME or .tif")


def check_aligned(image: Volume, other: Volume, what: str) -> None:
    """Raise :class:`ShapeMismatchError` unless ``other`` (labels, mask) has the image's shape."""
    if image.shape != other.shape:
        raise ShapeMismatchError(
            f"{other.source}: {what} shape {other.shape} (z, y, x) does not match image"
            f" {image.source} shape {image.shape}; {what} must cover the image voxel for voxel"
        )


#: Sections read to take a volume's intensity range (evenly spaced), and pixels kept per section for
#: the percentiles (a strided subsample: the range, not the exact quantile, is what matters).
RANGE_SECTIONS = 8
RANGE_PIXELS = 512 * 512
#: Percentiles of the data range: robust to a few hot or dead pixels.
RANGE_PERCENTILES = (0.1, 99.9)


def sampled_sections(volume: Volume, n: int = RANGE_SECTIONS) -> list[int]:
    """Up to ``n`` evenly spaced section indices of ``volume`` (all of them when it has fewer)."""
    return sorted(set(np.linspace(0, len(volume) - 1, min(n, len(volume))).round().astype(int).tolist()))


def intensity_range(volume: Volume, configured: Sequence[float] | None = None, role: str = "data.image") -> tuple[float, float]:
    """The raw values ``(lo, hi)`` mapped to 0 and 1, from ``configured`` or from a sample of sections.

    The rule (``data.intensity_range: null``), on up to :data:`RANGE_SECTIONS` evenly spaced sections:

    - integer dtypes whose largest sampled value exceeds half the dtype's maximum keep the dtype's
      range (8-bit EM spanning ~0-255 is scaled by 255 exactly as before);
    - other integers (12-bit data in uint16, a dark 8-bit image) use the data's range;
    - floats already inside ``[0, 1]`` are kept as they are (``(0, 1)``); other floats (0-255 stored
      as float, signed data) use the data's range.

    The data's range is the 0.1 and 99.9 percentiles of the sampled pixels (min and max when those
    coincide). Values outside the range are clipped.

    Raises:
        DataError: the sampled sections hold NaN/Inf, or a single value (a blank or constant image).
        ConfigError: ``configured`` is not two numbers ``lo < hi``.
    """
    if configured is not None:
        values = list(configured)
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"data.intensity_range: expected [lo, hi] (two numbers) or null, got {values}")
        lo, hi = float(values[0]), float(values[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ConfigError(f"data.intensity_range: needs lo < hi, got [{lo:g}, {hi:g}]; give the raw values of black and white")
        return lo, hi
    dtype = np.dtype(volume.data.dtype)
    chosen = sampled_sections(volume)
    pixels, n_bad, n_total = [], 0, 0
    for z in chosen:
        sec = volume.section(z)
        if not np.issubdtype(sec.dtype, np.integer):
            finite = np.isfinite(sec)
            n_bad += int(sec.size - np.count_nonzero(finite))
        n_total += sec.size
        step = max(1, int(np.ceil(np.sqrt(sec.size / RANGE_PIXELS))))
        pixels.append(np.asarray(sec[::step, ::step], dtype=np.float64).ravel())
    if n_bad:
        raise DataError(
            f"{volume.source}: {n_bad} of {n_total} voxels in {len(chosen)} sampled sections are NaN or Inf;"
            f" replace them (e.g. with the background value) before using it as {role}"
        )
    values = np.concatenate(pixels)
    vmin, vmax = float(values.min()), float(values.max())
    if vmin == vmax:
        raise DataError(
            f"{volume.source}: every sampled voxel of {role} is {vmin:g} (a blank or constant image);"
            f" check the file and the dataset name"
        )
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if vmax > 0.5 * info.max:
            return float(info.min), float(info.max)
    elif vmin >= 0.0 and vmax <= 1.0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, RANGE_PERCENTILES))
    if hi <= lo:  # nearly constant, with a few outliers: the percentiles coincide
        lo, hi = vmin, vmax
    log.info("%s: intensity range [%g, %g] taken from the data (%s); set data.intensity_range to override", role, lo, hi, dtype)
    return lo, hi


def sampled_max(volume: Volume) -> float:
    """The largest value in a sample of sections (for messages about thresholds)."""
    return float(max(np.max(volume.section(z)) for z in sampled_sections(volume)))
