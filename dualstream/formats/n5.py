"""N5 datasets through TensorStore: ``path.n5/dataset``, or ``path.n5`` when it holds one dataset.

N5 lists dimensions fastest-varying first, i.e. ``x, y, z``, and TensorStore keeps that order: the view
here reverses it to ``z, y, x``. Voxel sizes are read from the dataset's (else the container's)
``resolution`` (``x, y, z``, with optional ``units``) or ``pixelResolution``
(``{"dimensions": [x, y, z], "unit": "um"}``, the BigDataViewer/n5-viewer form).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dualstream.errors import DataError
from dualstream.formats.base import Opened, ZYXArray, remove_path, replace_path, tmp_sibling, unit_to_nm

SUFFIX = ".n5"


def _attributes(path: Path) -> dict[str, Any]:
    file = path / "attributes.json"
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{file}: cannot read N5 attributes ({err})") from err


def find_datasets(root: Path) -> list[str]:
    """Paths (relative to ``root``) of the N5 datasets under it, without walking into their blocks."""
    found = []
    for here, dirs, _files in os.walk(root):
        if "dimensions" in _attributes(Path(here)):
            found.append(Path(here).relative_to(root).as_posix())
            dirs[:] = []  # a dataset's subdirectories are its blocks
        dirs.sort()
    return found


def _voxel(attrs: dict[str, Any], where: str) -> tuple[tuple[float, float, float] | None, str]:
    """``(z, y, x)`` nm from N5 ``resolution``/``pixelResolution`` (stored ``x, y, z``)."""
    pix = attrs.get("pixelResolution")
    if isinstance(attrs.get("resolution"), list):
        values, key = attrs["resolution"], "resolution"
        given = attrs.get("units")
        units = list(given) if isinstance(given, list) else [given] * len(values)
    elif isinstance(pix, dict) and "dimensions" in pix:
        values, units, key = pix["dimensions"], [pix.get("unit")] * len(pix["dimensions"]), "pixelResolution"
    elif isinstance(pix, list):
        values, units, key = pix, [None] * len(pix), "pixelResolution"
    else:
        return None, ""
    if len(values) not in (2, 3):
        raise DataError(f"{where}: N5 attribute '{key}' = {values} must hold 2 or 3 values (x, y[, z])")
    nm = [float(v) * unit_to_nm(u, f"{where}: N5 unit") for v, u in zip(values, units)]
    note = " (x, y, z order)" + ("; no unit: taken as nm" if all(u is None for u in units) else "")
    zz = nm[2] if len(nm) == 3 else nm[0]
    return (zz, nm[1], nm[0]), f"N5 attribute '{key}'{note}"


def _read(store: Any, key: tuple) -> np.ndarray:
    return store[key].read().result()


def open_n5(root: Path, name: str | None, spec: str, role: str) -> Opened:
    """Open an N5 dataset lazily (see module docstring)."""
    import tensorstore as ts

    if not root.is_dir():
        raise DataError(f"{role}: no such N5 container '{root}' (from '{spec}'); check the path")
    if name is None:
        datasets = find_datasets(root)
        scales = [d for d in datasets if re.fullmatch(r"(.*/)?s\d+", d)]
        if len(datasets) > 1 and len(scales) == len(datasets) and len({d.rpartition("/")[0] for d in datasets}) == 1:
            # one scale pyramid (s0, s1, ...): s0 is full resolution
            datasets = [d for d in datasets if d.rpartition("/")[2] == "s0"] or datasets
        if len(datasets) != 1:
            raise DataError(
                f"{root}: holds {len(datasets)} N5 datasets ({', '.join(datasets) or 'none'});"
                f" name one as '{root}/NAME' in {role}"
            )
        name = None if datasets[0] == "." else datasets[0]
    path = root / name if name else root
    attrs = _attributes(path) if path.is_dir() else {}
    if "dimensions" not in attrs:
        raise DataError(
            f"{root}: no N5 dataset '{name}' (has: {', '.join(find_datasets(root)) or 'none'}); fix {role}"
        )
    try:
        store = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(path)}}, read=True, open=True).result()
    except Exception as err:  # tensorstore raises ValueError with its own status text
        raise DataError(f"{path}: cannot open as N5 ({type(err).__name__}: {err})") from err
    ndim = len(store.shape)
    block = attrs.get("blockSize")
    if ndim == 3:
        view = ZYXArray(store, 2, 1, 0, read=_read, chunks=block, dtype=store.dtype.numpy_dtype)
    elif ndim == 2:
        view = ZYXArray(store, None, 1, 0, read=_read, chunks=block, dtype=store.dtype.numpy_dtype)
    else:
        raise DataError(f"{spec}: expected a 3D (x, y, z) or 2D N5 dataset, got dimensions {list(store.shape)}")
    voxel, origin = _voxel(attrs, spec)
    if voxel is None and path != root:
        voxel, origin = _voxel(_attributes(root), f"{root}")
        origin = f"{origin}, of the container" if voxel is not None else ""
    return Opened(view, "n5", voxel, origin)


def write_n5(
    root: Path, name: str | None, array: np.ndarray, voxel_size: Sequence[float] | None, chunks: Sequence[int] | None
) -> None:
    """Write ``array`` (z, y, x) as an N5 dataset (gzip blocks, dimensions stored x, y, z).

    The voxel size is written as ``resolution`` (x, y, z) with ``units`` ``nm``, and as
    ``pixelResolution`` for BigDataViewer. The dataset is written beside its path and renamed in.
    """
    import tensorstore as ts

    from dualstream.formats.zarr_store import default_chunks

    if not name:
        raise DataError(f"{root}: name the dataset to write, as '{root}/NAME'")
    chunks = tuple(int(c) for c in chunks) if chunks is not None else default_chunks(array.shape)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "attributes.json").exists():
        (root / "attributes.json").write_text(json.dumps({"n5": "2.0.0"}))
    target = root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(target)
    try:
        spec = {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(tmp)},
            "metadata": {
                "dimensions": list(array.shape[::-1]),
                "blockSize": list(chunks[::-1]),
                "dataType": np.dtype(array.dtype).name,
                "compression": {"type": "gzip"},
            },
            "create": True,
        }
        store = ts.open(spec).result()
        store.write(np.ascontiguousarray(array.T)).result()
        if voxel_size is not None:
            xyz = [float(v) for v in voxel_size][::-1]
            attrs = _attributes(tmp)
            attrs.update(resolution=xyz, units=["nm"] * 3, pixelResolution={"dimensions": xyz, "unit": "nm"})
            (tmp / "attributes.json").write_text(json.dumps(attrs))
        replace_path(tmp, target)
    finally:
        remove_path(tmp)
