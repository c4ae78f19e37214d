"""What every reader shares: the lazy ``(z, y, x)`` array view, unit conversion, atomic replacement."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dualstream.errors import DataError

#: Length units as OME-NGFF, ImageJ and N5 write them -> nanometres.
UNIT_NM = {
    "nanometer": 1.0, "nanometre": 1.0, "nm": 1.0,
    "micrometer": 1e3, "micrometre": 1e3, "micron": 1e3, "um": 1e3, "\u00b5m": 1e3, "\u03bcm": 1e3,
    "millimeter": 1e6, "millimetre": 1e6, "mm": 1e6,
    "centimeter": 1e7, "cm": 1e7,
    "meter": 1e9, "metre": 1e9, "m": 1e9,
    "angstrom": 0.1, "\u00e5": 0.1, "\u212b": 0.1, "a": 0.1,
    "picometer": 1e-3, "pm": 1e-3,
}


def unit_to_nm(unit: str | None, where: str) -> float:
    """Nanometres per ``unit`` (``None``/empty: the value is taken as nm already).

    Raises:
        DataError: a unit that is not a length (e.g. ``"second"``) or unknown.
    """
    if unit is None or str(unit).strip() == "":
        return 1.0
    key = str(unit).strip().replace("\\u00B5", "\u00b5").lower()
    if key not in UNIT_NM:
        raise DataError(f"{where}: unknown length unit '{unit}'; expected one of nanometer, micrometer, angstrom, ...")
    return UNIT_NM[key]


@dataclass
class Opened:
    """What a reader returns.

    Attributes:
        data: lazy ``(z, y, x)`` array-like (``shape``, ``dtype``, ``__getitem__``; ``read_box`` if it has one).
        format: short format name shown by ``dualstream-info`` (``"hdf5"``, ``"zarr v3"``, ``"ome-zarr 0.4"``, ...).
        voxel_size: ``(z, y, x)`` nm from the file's metadata, or ``None`` when it records none.
        voxel_from: where ``voxel_size`` was read (e.g. ``"attribute 'resolution'"``); ``""`` when None.
    """

    data: Any
    format: str
    voxel_size: tuple[float, float, float] | None = None
    voxel_from: str = ""


def _index(array: Any, key: tuple) -> np.ndarray:
    """The default backend read: NumPy-style indexing (numpy, h5py, zarr)."""
    return np.asarray(array[key])


class BoxIndexed:
    """NumPy-style indexing of a lazy ``(z, y, x)`` array built on its ``read_box``.

    Ints, slices (any step) and ``...`` become one box read of step-1, non-negative slices (TensorStore
    reads negative indices literally; h5py and zarr refuse negative steps); anything else (index arrays,
    masks) reads the whole volume first. Subclasses set ``shape``, ``dtype`` and define ``read_box``.
    """

    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: tuple[int, int, int] | None = None

    def read_box(self, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (3 - len(key))
        if len(key) != 3:
            raise IndexError(f"too many indices for a (z, y, x) volume: {key}")
        if not all(isinstance(k, (int, np.integer, slice)) for k in key):
            return self.read_box(0, self.shape[0], 0, self.shape[1], 0, self.shape[2])[key]
        box, local = [], []
        for k, n in zip(key, self.shape):
            if isinstance(k, slice):
                idx = range(*k.indices(n))
                if len(idx) == 0:
                    box.append((0, 0))
                    local.append(slice(None))
                    continue
                lo, hi = min(idx[0], idx[-1]), max(idx[0], idx[-1]) + 1
                box.append((lo, hi))
                # Steps are taken here, from the bounding box: every backend then sees step-1 slices.
                local.append(slice(idx[0] - lo, None, idx.step))
            else:
                i = int(k) + n if int(k) < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {int(k)} is out of bounds for an axis of size {n}")
                box.append((i, i + 1))
                local.append(0)
        block = self.read_box(*box[0], *box[1], *box[2])
        return block[tuple(local)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[...]
        return arr.astype(dtype) if dtype is not None else arr


class ZYXArray(BoxIndexed):
    """An N-d array-like seen as ``(z, y, x)``: axes picked by position, other axes fixed at an index.

    Every format's array goes through this view, so indexing behaves the same everywhere (see
    :class:`BoxIndexed`).

    Args:
        array: the backend array (h5py/zarr/numpy/TensorStore), indexable by a tuple of ints and slices.
        z, y, x: positions of those axes in ``array``; ``z=None`` makes a 2D array one section.
        fixed: position -> index for the other axes (singleton channel/time, the first colour channel).
        read: ``read(array, key) -> np.ndarray`` (default ``np.asarray(array[key])``).
        chunks: the backend's chunk shape in ``array``'s own axis order, or None.
    """

    def __init__(
        self,
        array: Any,
        z: int | None,
        y: int,
        x: int,
        fixed: dict[int, int] | None = None,
        read: Callable[[Any, tuple], np.ndarray] | None = None,
        chunks: Sequence[int] | None = None,
        dtype: Any = None,
    ):
        self.array = array
        self.axes = (z, y, x)
        self.fixed = dict(fixed or {})
        self._read = read or _index
        full = tuple(int(n) for n in array.shape)
        self.ndim_source = len(full)
        self.shape = (full[z] if z is not None else 1, full[y], full[x])
        self.dtype = np.dtype(dtype if dtype is not None else array.dtype)
        self.chunks = None
        if chunks is not None:
            c = tuple(int(v) for v in chunks)
            self.chunks = (c[z] if z is not None else 1, c[y], c[x])

    def read_box(self, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The box ``[z0:z1, y0:y1, x0:x1]`` (in bounds, step 1) as ``(z1-z0, y1-y0, x1-x0)``."""
        z, y, x = self.axes
        out_shape = (z1 - z0, y1 - y0, x1 - x0)
        if 0 in out_shape:
            return np.zeros(out_shape, self.dtype)
        key: list[Any] = [0] * self.ndim_source
        for pos, idx in self.fixed.items():
            key[pos] = idx
        for pos, (a, b) in zip((z, y, x), ((z0, z1), (y0, y1), (x0, x1))):
            if pos is not None:
                key[pos] = slice(a, b)
        block = np.asarray(self._read(self.array, tuple(key)))
        # The block keeps the source's order of the kept axes: put them in z, y, x order.
        kept = sorted(p for p in (z, y, x) if p is not None)
        block = block.transpose([kept.index(p) for p in (z, y, x) if p is not None])
        if z is None:
            block = block[None]
        return block.astype(self.dtype, copy=False)


def replace_path(tmp: Path, final: Path) -> None:
    """Move a finished ``tmp`` file or directory to ``final``, replacing what was there.

    Files are replaced atomically (``os.replace``). A directory cannot be replaced in one step when
    ``final`` exists: the old one is renamed aside first, so ``final`` is missing only for an instant.
    """
    if tmp.is_dir() and final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    else:
        os.replace(tmp, final)


def tmp_sibling(path: Path) -> Path:
    """A fresh name beside ``path`` for writing before :func:`replace_path` (same filesystem)."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def remove_path(path: Path) -> None:
    """Delete a leftover temporary file or directory, if any."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
