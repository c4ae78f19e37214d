"""Zarr v2/v3 stores and OME-Zarr images (through zarr-python 3, which reads and writes both formats).

Specs: ``path.zarr`` (an array, or a group holding one array or an OME-Zarr image) and
``path.zarr/name`` (a node inside a group). An OME-Zarr image is read at its highest resolution
(``multiscales[0].datasets[0]``), with axes mapped by name and the voxel size from that level's
``scale`` in the units its axes give; ``path.ome.zarr/1`` opens another level with its own scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dualstream.errors import DataError
from dualstream.formats.base import Opened, ZYXArray, remove_path, replace_path, tmp_sibling, unit_to_nm
from dualstream.formats.hdf5 import voxel_from_attrs

SUFFIX = ".zarr"


def split_container(spec: str, suffix: str) -> tuple[Path, str | None] | None:
    """``'a/b.zarr/c/d'`` -> ``(Path('a/b.zarr'), 'c/d')``; ``'a/b.zarr'`` -> ``(path, None)``; else None."""
    parts = Path(spec).parts
    for i, part in enumerate(parts):
        if part.lower().endswith(suffix) and len(part) > len(suffix):
            return Path(*parts[: i + 1]), "/".join(parts[i + 1 :]) or None
    return None


def _multiscales(attrs: dict[str, Any]) -> tuple[list[dict], str] | None:
    """OME-NGFF ``multiscales`` and version from group attributes (0.5 nests them under ``ome``)."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return list(ome["multiscales"]), str(ome.get("version", "0.5"))
    if attrs.get("multiscales"):
        ms = list(attrs["multiscales"])
        return ms, str(ms[0].get("version", "0.4")) if isinstance(ms[0], dict) else "?"
    return None


def _scale(transforms: Any) -> list[float] | None:
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale":
            return [float(v) for v in t["scale"]]
    return None


def _ome_view(group: Any, ms: list[dict], version: str, where: str, level: str | None) -> Opened:
    """The ``(z, y, x)`` view of one level of an OME-Zarr image (``level=None``: the first, highest)."""
    m = ms[0]
    datasets = m.get("datasets") or []
    if not datasets:
        raise DataError(f"{where}: OME-Zarr multiscales lists no datasets; the image is empty or damaged")
    ds = datasets[0] if level is None else next((d for d in datasets if d.get("path") == level), datasets[0])
    try:
        arr = group[ds["path"]]
    except KeyError as err:
        raise DataError(f"{where}: OME-Zarr level '{ds['path']}' is listed but missing; the store is incomplete") from err
    axes = m.get("axes")
    ndim = len(arr.shape)
    if axes is None:  # OME-NGFF 0.1-0.3: always t, c, z, y, x
        names = ["t", "c", "z", "y", "x"][-ndim:]
        units: list[str | None] = [None] * ndim
    else:
        names = [a if isinstance(a, str) else str(a.get("name")) for a in axes]
        units = [None if isinstance(a, str) else a.get("unit") for a in axes]
    names = [n.lower() for n in names]
    if len(names) != ndim or "y" not in names or "x" not in names:
        raise DataError(f"{where}: OME-Zarr axes {names} do not fit an array of shape {arr.shape} with y and x")
    z = names.index("z") if "z" in names else None
    y, x = names.index("y"), names.index("x")
    fixed = {}
    for i, n in enumerate(names):
        if i in (z, y, x):
            continue
        if arr.shape[i] != 1:
            raise DataError(
                f"{where}: OME-Zarr axis '{n}' has {arr.shape[i]} entries; dualstream reads one channel and one"
                " time point: save the one you want as its own image (z, y, x)"
            )
        fixed[i] = 0
    voxel, origin = None, ""
    scale = _scale(ds.get("coordinateTransformations"))
    if scale is not None and len(scale) == ndim:
        outer = _scale(m.get("coordinateTransformations"))  # applies to every level
        if outer is not None and len(outer) == ndim:
            scale = [a * b for a, b in zip(scale, outer)]
        nm = [s * unit_to_nm(u, f"{where}: OME-Zarr axis unit") for s, u in zip(scale, units)]
        notes = []
        if any(units[i] is None for i in (z, y, x) if i is not None):
            notes.append("no unit: taken as nm")
        if z is None:
            notes.append("2D: z taken as x")
        zz = nm[z] if z is not None else nm[x]
        voxel = (zz, nm[y], nm[x])
        origin = f"OME-Zarr scale of level '{ds['path']}'" + (f" ({'; '.join(notes)})" if notes else "")
    fmt = f"ome-zarr {version} (zarr v{arr.metadata.zarr_format})"
    view = ZYXArray(arr, z, y, x, fixed=fixed, chunks=arr.chunks)
    return Opened(view, fmt, voxel, origin)


def _arrays_in(group: Any) -> list[str]:
    import zarr

    return sorted(path for path, node in group.members(max_depth=None) if isinstance(node, zarr.Array))


def open_zarr(root: Path, name: str | None, spec: str, role: str) -> Opened:
    """Open a Zarr array, an array inside a group, or an OME-Zarr image group (see module docstring)."""
    import zarr

    if not root.exists():
        raise DataError(f"{role}: no such Zarr store '{root}' (from '{spec}'); check the path")
    try:
        top = zarr.open(store=str(root), mode="r")
    except Exception as err:  # zarr raises FileNotFound, GroupNotFound, JSON errors ...
        raise DataError(f"{root}: cannot open as Zarr ({type(err).__name__}: {err}); is it a .zarr store?") from err
    node, parent_path = top, ""
    if name is not None:
        if isinstance(top, zarr.Array):
            raise DataError(f"{root}: is a single array, not a group; use '{root}' without '/{name}' in {role}")
        try:
            node = top[name]
        except KeyError:
            raise DataError(
                f"{root}: no array or group '{name}' (arrays: {', '.join(_arrays_in(top)) or 'none'}); fix {role}"
            ) from None
        parent_path = name.rpartition("/")[0]
    if isinstance(node, zarr.Group):
        found = _multiscales(dict(node.attrs))
        if found is not None:
            return _ome_view(node, *found, where=spec, level=None)
        arrays = _arrays_in(node)
        if len(arrays) != 1:
            raise DataError(
                f"{spec}: group holds {len(arrays)} arrays ({', '.join(arrays) or 'none'});"
                f" name one as '{spec}/NAME' in {role}"
            )
        inner = arrays[0]
        parent_path = "/".join(p for p in (name or "", inner.rpartition("/")[0]) if p)
        node = node[inner]
    # An array that is one level of an OME-Zarr image takes its axes and scale from the image.
    level = node.path.rpartition("/")[2]
    parent = top[parent_path] if parent_path else top
    if isinstance(parent, zarr.Group):
        found = _multiscales(dict(parent.attrs))
        if found is not None and any(d.get("path") == level for d in found[0][0].get("datasets", [])):
            return _ome_view(parent, *found, where=spec, level=level)
    attrs = {**(dict(top.attrs) if isinstance(top, zarr.Group) else {}), **dict(node.attrs)}
    voxel, origin = voxel_from_attrs(attrs, spec)
    if node.ndim == 3:
        view = ZYXArray(node, 0, 1, 2, chunks=node.chunks)
    elif node.ndim == 2:
        view = ZYXArray(node, None, 0, 1, chunks=node.chunks)
    else:
        raise DataError(f"{spec}: expected a 3D (z, y, x) or 2D (y, x) array, got shape {node.shape}")
    return Opened(view, f"zarr v{node.metadata.zarr_format}", voxel, origin)


def default_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    """One section deep, up to 512 x 512: dualstream reads sections and patches of one section."""
    return (1, min(int(shape[1]), 512), min(int(shape[2]), 512))


def _ome_attrs(voxel_size: Sequence[float] | None, zarr_format: int, name: str) -> dict[str, Any]:
    scale = [float(v) for v in voxel_size] if voxel_size is not None else [1.0, 1.0, 1.0]
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }
    if zarr_format == 3:  # OME-NGFF 0.5 lives in Zarr v3, under "ome"
        return {"ome": {"version": "0.5", "multiscales": [multiscale]}}
    return {"multiscales": [{"version": "0.4", **multiscale}]}


def write_zarr(
    root: Path,
    name: str | None,
    array: np.ndarray,
    voxel_size: Sequence[float] | None,
    chunks: Sequence[int] | None,
    zarr_format: int = 3,
    ome: bool = False,
) -> None:
    """Write ``array`` as a Zarr array (``name=None``: the store's root), or as an OME-Zarr image.

    Plain arrays carry ``voxel_size`` (z, y, x nm) as an attribute; an OME-Zarr image is one level
    ``0`` with a scale in nanometres (NGFF 0.4 for Zarr v2, 0.5 for v3). A whole store, or an array
    inside a group (a directory), is written beside its final path and renamed into place.
    """
    import zarr

    if zarr_format not in (2, 3):
        raise DataError(f"{root}: zarr_format must be 2 or 3, got {zarr_format}")
    chunks = tuple(int(c) for c in chunks) if chunks is not None else default_chunks(array.shape)
    attrs = {"voxel_size": [float(v) for v in voxel_size]} if voxel_size is not None else {}
    if ome:
        if name is not None:
            raise DataError(f"{root}/{name}: an OME-Zarr image is a whole store; write it as '{root}'")
        tmp = tmp_sibling(root)
        try:
            group = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
            group.attrs.update(_ome_attrs(voxel_size, zarr_format, root.name))
            level = group.create_array(
                "0", shape=array.shape, dtype=array.dtype, chunks=chunks,
                dimension_names=("z", "y", "x") if zarr_format == 3 else None,
            )
            level[...] = array
            replace_path(tmp, root)
        finally:
            remove_path(tmp)
        return
    if name is None:
        target = root
    else:
        if root.exists():
            try:
                group = zarr.open_group(str(root), mode="r+")
            except Exception as err:  # an array, or not a Zarr store at all
                raise DataError(
                    f"{root}: cannot add '{name}' ({type(err).__name__}: {err}); it must be a Zarr group, or write elsewhere"
                ) from err
            zarr_format = group.metadata.zarr_format  # an array joins its group's format
        else:
            group = zarr.open_group(str(root), mode="w", zarr_format=zarr_format)
        parent = name.rpartition("/")[0]
        if parent:
            group.require_group(parent)
        target = root / name
    tmp = tmp_sibling(target)
    try:
        out = zarr.create_array(
            store=str(tmp), shape=array.shape, dtype=array.dtype, chunks=chunks,
            zarr_format=zarr_format, attributes=attrs,
            dimension_names=("z", "y", "x") if zarr_format == 3 and array.ndim == 3 else None,
        )
        out[...] = array
        replace_path(tmp, target)
    finally:
        remove_path(tmp)

