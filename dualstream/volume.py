"""Volumes: lazy ``z, y, x`` arrays with a voxel size in nanometres, one reader per format.

Supported sources (``spec`` strings, as written in configs):

- ``file.h5:dataset`` (also ``.hdf5``/``.hdf``): an HDF5 dataset, read section by section through h5py,
  so volumes larger than memory never load whole. ``file.h5`` alone works when it holds one dataset.
- a directory of 2D PNG/TIFF sections, sorted by file name (one section per file).
- a multi-page TIFF (one page per section) or a single 2D image (a one-section volume).

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

log = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")


def _read_2d(path: Path) -> np.ndarray:
    """Read one 2D section as ``(y, x)``; colour/alpha images keep their first channel."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            arr = np.asarray(tifffile.imread(path))
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
    except Exception as err:  # PIL and tifffile raise many types for corrupt files
        raise DataError(f"{path}: cannot read as an image ({type(err).__name__}: {err})") from err
    if arr.ndim == 3:  # (y, x, channel): grey+alpha or RGB -> first channel
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2D section, got an array of shape {arr.shape}")
    return arr


def _section_shape(path: Path) -> tuple[int, int]:
    """Shape ``(y, x)`` of a 2D image file, from its header when the format allows."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
            return int(shape[0]), int(shape[1])
        from PIL import Image

        with Image.open(path) as im:
            width, height = im.size
        return height, width
    except Exception as err:
        raise DataError(f"{path}: cannot read as an image ({type(err).__name__}: {err})") from err


class SectionStack:
    """A directory of 2D image files seen as a lazy ``(z, y, x)`` array (one file per section)."""

    def __init__(self, files: Sequence[Path]):
        self.files = list(files)
        shapes = [_section_shape(f) for f in self.files]
        first = shapes[0]
        for f, s in zip(self.files, shapes):
            if s != first:
                raise ShapeMismatchError(
                    f"{f}: section is {s[0]}x{s[1]} (y x) but {self.files[0].name} is {first[0]}x{first[1]};"
                    " all sections of a stack must have the same shape"
                )
        self.shape = (len(self.files), *first)
        self.dtype = _read_2d(self.files[0]).dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return _read_2d(self.files[int(key)])
        if isinstance(key, tuple) and key and isinstance(key[0], (int, np.integer)):
            return _read_2d(self.files[int(key[0])])[key[1:]]
        return np.stack([_read_2d(self.files[z]) for z in range(self.shape[0])])[key]


@dataclass
class Volume:
    """A ``(z, y, x)`` array, possibly lazy (h5py dataset, section stack), plus its voxel size.

    Attributes:
        data: array-like with ``shape`` and ``__getitem__`` (numpy array, h5py.Dataset, SectionStack).
        voxel_size: ``(z, y, x)`` voxel size in nanometres.
        source: the spec it was opened from, for messages.
        intensity: ``(lo, hi)`` raw values mapped to 0 and 1 (see :func:`intensity_range`); ``None``
            scales each section by its dtype (the rule for bare volumes, e.g. in unit tests).
    """

    data: Any
    voxel_size: tuple[float, float, float]
    source: str
    intensity: tuple[float, float] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.shape[0]

    def section(self, z: int) -> np.ndarray:
        """Section ``z`` as a ``(y, x)`` numpy array (reads only that section)."""
        return np.asarray(self.data[int(z)])

    def read(self) -> np.ndarray:
        """The whole volume as a numpy array (only for volumes that fit in memory)."""
        return np.stack([self.section(z) for z in range(self.shape[0])])


def spec_path(spec: str | Path) -> Path:
    """The file or directory a volume spec names (``'a/b.h5:raw'`` -> ``a/b.h5``), without opening it."""
    h5 = _split_hdf5_spec(str(spec))
    return h5[0] if h5 is not None else Path(spec)


def _split_hdf5_spec(spec: str) -> tuple[Path, str | None] | None:
    """``'a/b.h5:raw'`` -> ``(Path('a/b.h5'), 'raw')``; ``'a/b.h5'`` -> ``(path, None)``; else None."""
    path, sep, name = spec.rpartition(":")
    if sep and Path(path).suffix.lower() in HDF5_SUFFIXES:
        return Path(path), name or None
    if Path(spec).suffix.lower() in HDF5_SUFFIXES:
        return Path(spec), None
    return None


def _open_hdf5(path: Path, name: str | None, spec: str, role: str):
    import h5py

    if not path.exists():
        raise DataError(f"{role}: no such file '{path}' (from '{spec}'); check the path")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: cannot open as HDF5 ({err}); is it an .h5 file?") from err
    datasets: list[str] = []
    handle.visititems(lambda k, v: datasets.append(k) if isinstance(v, h5py.Dataset) else None)
    if name is None:
        if len(datasets) != 1:
            raise DataError(
                f"{path}: holds {len(datasets)} datasets ({', '.join(datasets) or 'none'});"
                f" name one as '{path}:NAME' in {role}"
            )
        name = datasets[0]
    if name not in handle or not isinstance(handle[name], h5py.Dataset):
        raise DataError(f"{path}: no dataset '{name}' (has: {', '.join(datasets) or 'none'}); fix {role}")
    dset = handle[name]
    attrs = {**dict(handle.attrs), **dict(dset.attrs)}
    return dset, attrs


def _as_zyx(shape: tuple[int, ...], where: str) -> None:
    if len(shape) == 2:
        return
    if len(shape) != 3:
        raise DataError(f"{where}: expected a 3D (z, y, x) or 2D (y, x) array, got shape {shape}")


class _Promote2D:
    """Wraps a 2D ``(y, x)`` array-like as a one-section ``(1, y, x)`` volume."""

    def __init__(self, data: Any):
        self._data = data
        self.shape = (1, *data.shape)
        self.dtype = data.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._data[()])[None][key]


def open_volume(
    spec: str | Path,
    voxel_size: Sequence[float] | None = None,
    role: str = "data.image",
) -> Volume:
    """Open a volume from a spec string (see module docstring), lazily where the format allows.

    Args:
        spec: path, ``file.h5:dataset``, directory of sections, or (multi-page) TIFF.
        voxel_size: ``(z, y, x)`` in nm; ``None`` reads an HDF5 ``voxel_size``/``resolution``
            attribute if present, else assumes ``(1, 1, 1)``.
        role: the config key this spec came from, named in error messages.

    Raises:
        DataError: missing path, unreadable file, no sections, wrong dimensionality.
        ShapeMismatchError: sections of a directory differ in shape.
    """
    spec = str(spec)
    attrs: dict[str, Any] = {}
    h5 = _split_hdf5_spec(spec)
    if h5 is not None:
        data, attrs = _open_hdf5(h5[0], h5[1], spec, role)
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(f"{role}: no such file or directory '{path}'; check the path")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{path}: directory holds no PNG/TIFF sections; fix {role}")
            data = SectionStack(files)
        elif path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            try:
                with tifffile.TiffFile(path) as tif:
                    axes = tif.series[0].axes
                    data = np.asarray(tif.asarray())
            except Exception as err:
                raise DataError(f"{path}: cannot read as TIFF ({type(err).__name__}: {err})") from err
            if axes.endswith("S"):  # samples per pixel (RGB, grey+alpha): keep the first channel
                data = data[..., 0]
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            data = _read_2d(path)
        else:
            raise DataError(
                f"{path}: unknown volume format '{path.suffix}'; use .h5:NAME, a directory of PNG/TIFF, or a .tif"
            )
    _as_zyx(tuple(data.shape), spec)
    if len(data.shape) == 2:
        data = _Promote2D(data)
    if voxel_size is None:
        found = attrs.get("voxel_size", attrs.get("resolution"))
        if found is None and role.endswith("image"):
            # Distances (patch origins, centroid errors) would be reported in pixels, not nm.
            log.warning(
                "%s: '%s' carries no voxel size; assuming 1 x 1 x 1 nm: set data.voxel_size=[z,y,x] (nm)", role, spec
            )
        voxel_size = tuple(float(v) for v in found) if found is not None else (1.0, 1.0, 1.0)
    if len(voxel_size) != 3:
        raise DataError(f"{role}: voxel_size must have 3 values (z, y, x) in nm, got {list(voxel_size)}")
    return Volume(data=data, voxel_size=tuple(float(v) for v in voxel_size), source=spec)


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
