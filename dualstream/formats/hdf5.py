"""HDF5 (``file.h5:dataset``) through h5py: lazy datasets read by hyperslab, and a writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dualstream.errors import DataError
from dualstream.formats.base import Opened, ZYXArray, replace_path, tmp_sibling

SUFFIXES = (".h5", ".hdf5", ".hdf")


def split_spec(spec: str) -> tuple[Path, str | None] | None:
    """``'a/b.h5:raw'`` -> ``(Path('a/b.h5'), 'raw')``; ``'a/b.h5'`` -> ``(path, None)``; else None."""
    path, sep, name = spec.rpartition(":")
    if sep and Path(path).suffix.lower() in SUFFIXES:
        return Path(path), name or None
    if Path(spec).suffix.lower() in SUFFIXES:
        return Path(spec), None
    return None


def voxel_from_attrs(attrs: dict[str, Any], where: str) -> tuple[tuple[float, float, float] | None, str]:
    """``voxel_size`` (else ``resolution``) from merged attributes, ``(z, y, x)`` nm, and its key."""
    for key in ("voxel_size", "resolution"):
        if key in attrs and attrs[key] is not None:
            values = np.asarray(attrs[key], dtype=float).ravel().tolist()
            if len(values) != 3:
                raise DataError(f"{where}: attribute '{key}' = {values} must hold 3 values (z, y, x) in nm")
            return (values[0], values[1], values[2]), f"attribute '{key}'"
    return None, ""


def open_hdf5(path: Path, name: str | None, spec: str, role: str) -> Opened:
    """Open ``path:name`` lazily; the bare file works when it holds one dataset.

    The voxel size comes from a ``voxel_size`` attribute, else ``resolution``, each looked up on the
    dataset first and then on the file, with ``voxel_size`` on either beating ``resolution``.
    """
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
    voxel, where = voxel_from_attrs(attrs, f"{path}:{name}")
    if dset.ndim == 3:  # h5py reads the (z, y, x) hyperslab; the view gives every format the same indexing
        data: Any = ZYXArray(dset, 0, 1, 2, chunks=dset.chunks)
    elif dset.ndim == 2:
        data = ZYXArray(dset, None, 0, 1, chunks=dset.chunks)
    else:
        raise DataError(f"{spec}: expected a 3D (z, y, x) or 2D (y, x) array, got shape {dset.shape}")
    return Opened(data, "hdf5", voxel, where)


def write_hdf5(
    path: Path, name: str, array: np.ndarray, voxel_size: Sequence[float] | None, chunks: Sequence[int] | None
) -> None:
    """Write ``array`` as dataset ``name`` (attribute ``voxel_size``, z, y, x nm).

    A new file is written beside and renamed into place; into an existing file the dataset is
    added (or replaced) in place.
    """
    import h5py

    def fill(f: "h5py.File") -> None:
        if name in f:
            del f[name]
        dset = f.create_dataset(
            name, data=array, chunks=tuple(chunks) if chunks else None, compression="gzip" if chunks else None
        )
        if voxel_size is not None:
            dset.attrs["voxel_size"] = np.asarray(voxel_size, dtype=float)

    if path.exists():
        with h5py.File(path, "a") as f:
            fill(f)
        return
    tmp = tmp_sibling(path)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        replace_path(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
