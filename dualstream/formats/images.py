"""Images: multi-page TIFF (lazy: memory map or tifffile's zarr view), directories of 2D sections, single images.

Voxel sizes come from ImageJ metadata (``spacing`` and ``unit``, with the XResolution/YResolution tags
in pixels per unit) or OME-TIFF ``PhysicalSize{X,Y,Z}`` (+ ``...Unit``, default micrometre). PNG and
directories of sections record none.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dualstream.errors import DataError, ShapeMismatchError
from dualstream.formats.base import BoxIndexed, Opened, ZYXArray, replace_path, tmp_sibling, unit_to_nm

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
#: dtypes ImageJ can hold; others are written as OME-TIFF.
IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)


def read_2d(path: Path) -> np.ndarray:
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


def section_shape(path: Path) -> tuple[int, int]:
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


class SectionStack(BoxIndexed):
    """A directory of 2D image files seen as a lazy ``(z, y, x)`` array (one file per section).

    A box read opens only the files of its z range.
    """

    def __init__(self, files: Sequence[Path]):
        self.files = list(files)
        shapes = [section_shape(f) for f in self.files]
        first = shapes[0]
        for f, s in zip(self.files, shapes):
            if s != first:
                raise ShapeMismatchError(
                    f"{f}: section is {s[0]}x{s[1]} (y x) but {self.files[0].name} is {first[0]}x{first[1]};"
                    " all sections of a stack must have the same shape"
                )
        self.shape = (len(self.files), *first)
        self.dtype = read_2d(self.files[0]).dtype
        self.chunks = (1, *first)

    def read_box(self, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if z1 <= z0:
            return np.zeros((0, max(0, y1 - y0), max(0, x1 - x0)), self.dtype)
        return np.stack([read_2d(self.files[z])[y0:y1, x0:x1] for z in range(z0, z1)])


def open_directory(path: Path, role: str) -> Opened:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: directory holds no PNG/TIFF sections; fix {role}")
    return Opened(SectionStack(files), "directory of sections")


def open_image(path: Path) -> Opened:
    """A single 2D PNG/JPEG/BMP as a one-section volume (read whole: it is one section)."""
    arr = read_2d(path)
    return Opened(ZYXArray(arr, None, 0, 1), f"{path.suffix.lower().lstrip('.')} image")


def _rational(value: Any) -> float | None:
    try:
        num, den = value
        return float(den) / float(num) if num else None  # pixels per unit -> units per pixel
    except (TypeError, ValueError):
        return None


def _tidy(v: float) -> float:
    # Rational tags store 1/size: 6 significant digits undo the rounding without losing real precision.
    return float(f"{v:.6g}")


def tiff_voxel_size(tif: Any, path: Path) -> tuple[tuple[float, float, float] | None, str]:
    """``(z, y, x)`` nm from OME or ImageJ metadata, and where it came from; ``(None, "")`` if neither."""
    if tif.is_ome and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
        except ET.ParseError:
            root = None
        pixels = next((e for e in root.iter() if e.tag.split("}")[-1] == "Pixels"), None) if root is not None else None
        if pixels is not None and "PhysicalSizeX" in pixels.attrib:
            sizes = []
            for ax in ("Z", "Y", "X"):
                value = pixels.attrib.get(f"PhysicalSize{ax}", pixels.attrib.get("PhysicalSizeX"))
                unit = pixels.attrib.get(f"PhysicalSize{ax}Unit", "\u00b5m")
                sizes.append(float(value) * unit_to_nm(unit, f"{path}: OME PhysicalSize{ax}Unit"))
            note = "" if "PhysicalSizeZ" in pixels.attrib else " (no PhysicalSizeZ: z taken as x)"
            return (sizes[0], sizes[1], sizes[2]), f"OME-TIFF PhysicalSize{note}"
    meta = tif.imagej_metadata if tif.is_imagej else None
    if meta and str(meta.get("unit", "")).strip() not in ("", "pixel", "pixels"):
        factor = unit_to_nm(str(meta["unit"]), f"{path}: ImageJ unit")
        tags = tif.pages[0].tags
        x = _rational(tags["XResolution"].value) if "XResolution" in tags else None
        y = _rational(tags["YResolution"].value) if "YResolution" in tags else None
        if x is not None:
            y = x if y is None else y
            z = meta.get("spacing")
            note = "" if z is not None else " (no spacing: z taken as x)"
            z = float(z) if z is not None else x
            voxel = (_tidy(z * factor), _tidy(y * factor), _tidy(x * factor))
            return voxel, f"ImageJ metadata (spacing, resolution, unit){note}"
    return None, ""


def open_tiff(path: Path) -> Opened:
    """A (multi-page) TIFF, lazily: a memory map when the pixels are stored plainly, else a zarr view.

    Axes come from tifffile's series (``ZYX``, ``IYX``, ``YXS``, ImageJ ``TZCYX`` ...): trailing samples
    keep the first channel, singleton axes are dropped, and at most one other axis (the sections) may
    remain besides y and x.
    """
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        axes, shape = series.axes, tuple(series.shape)
        voxel, where = tiff_voxel_size(tif, path)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: cannot read as TIFF ({type(err).__name__}: {err})") from err
    if "Y" not in axes or "X" not in axes:
        raise DataError(f"{path}: TIFF axes {axes!r} have no Y and X; expected images")
    # Trailing samples (RGB, grey+alpha) keep the first channel; leading ones (planar "SYX", how tifffile
    # writes a 3-4 page stack without photometric=) are sections, as they always were read here.
    fixed = {i: 0 for i, a in enumerate(axes) if (a == "S" and i == len(axes) - 1) or (a not in "YX" and shape[i] == 1)}
    others = [i for i, a in enumerate(axes) if a not in "YX" and i not in fixed]
    if len(others) > 1:
        what = ", ".join(f"{axes[i]}={shape[i]}" for i in others)
        raise DataError(
            f"{path}: TIFF has axes {axes} of shape {shape}, with more than one besides y, x ({what});"
            " save one channel/time point per file (z, y, x)"
        )
    z = others[0] if others else None
    data: Any = None
    chunks = None
    try:
        mm = tifffile.memmap(path, mode="r")
        if tuple(mm.shape) == shape:
            data = mm
    except Exception:  # compressed or tiled pages cannot be memory-mapped: use the zarr view
        data = None
    if data is None:
        try:
            import zarr

            data = zarr.open(series.aszarr(level=0), mode="r")
            chunks = data.chunks
        except Exception:  # an odd layout tifffile cannot view: read it whole (as before)
            data = np.asarray(tif.asarray())
    fmt = "ome-tiff" if tif.is_ome else ("imagej tiff" if tif.is_imagej else "tiff")
    if isinstance(data, np.ndarray):  # memory map or loaded; a zarr view reads through the open file
        tif.close()
    arr = ZYXArray(data, z, axes.index("Y"), axes.index("X"), fixed=fixed, chunks=chunks)
    return Opened(arr, fmt, voxel, where)


def write_tiff(path: Path, array: np.ndarray, voxel_size: Sequence[float] | None, chunks: Sequence[int] | None) -> None:
    """A multi-page TIFF, one page per section, uncompressed (so readers can memory-map it).

    The voxel size goes in ImageJ metadata (``spacing``, resolution in pixels per nm, ``unit: nm``) for
    the dtypes ImageJ holds, else in OME-TIFF ``PhysicalSize`` (nm). ``chunks`` become TIFF tiles when
    their y, x are multiples of 16 (TIFF's rule), else pages are written whole.
    """
    import tifffile

    kwargs: dict[str, Any] = {}
    if chunks is not None and all(int(c) % 16 == 0 for c in list(chunks)[-2:]):
        kwargs["tile"] = tuple(int(c) for c in list(chunks)[-2:])
    tmp = tmp_sibling(path)
    try:
        if array.dtype in [np.dtype(d) for d in IMAGEJ_DTYPES]:
            meta: dict[str, Any] = {"axes": "ZYX"}
            if voxel_size is not None:
                z, y, x = (float(v) for v in voxel_size)
                meta.update(spacing=z, unit="nm")
                kwargs["resolution"] = (1.0 / x, 1.0 / y)
            tifffile.imwrite(tmp, array, imagej=True, metadata=meta, **kwargs)
        else:
            meta = {"axes": "ZYX"}
            if voxel_size is not None:
                for ax, v in zip("ZYX", voxel_size):
                    meta[f"PhysicalSize{ax}"] = float(v)
                    meta[f"PhysicalSize{ax}Unit"] = "nm"
            tifffile.imwrite(tmp, array, ome=True, photometric="minisblack", metadata=meta, **kwargs)
        replace_path(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
