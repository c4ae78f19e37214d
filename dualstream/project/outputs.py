"""What a suggested round writes beside ``queries.csv``: ``patches.h5``, ``neuroglancer.json``, ``why.png``.

All boxes are ``(z, y, x, size_y, size_x)`` in input voxels (top-left corner; one section thick), in
utility order (rank 1 first), as in ``queries.csv`` (see the project-directory contract in
:mod:`dualstream.project`). Every file is written atomically (temporary file, fsync, ``os.replace``),
so an interrupted suggest never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dualstream.errors import DataError

#: Grey candidate points drawn at most in why.png (a strided subsample beyond that: the cloud's shape
#: is what matters, and scattering a million points takes long).
MAX_PLOTTED = 50_000

#: The port the Neuroglancer placeholders assume the user serves the data on.
SERVE_PORT = 8000


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(tmp_path)`` then fsync and ``os.replace`` (no half-written file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def round_number(round_dir: str | Path) -> int | None:
    """``.../round_007`` -> 7; ``None`` when the folder is not named ``round_NNN``."""
    match = re.fullmatch(r"round_(\d+)", Path(round_dir).name)
    return int(match.group(1)) if match else None


def _check_boxes(boxes: np.ndarray, n: int) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.int64)
    if boxes.ndim != 2 or boxes.shape[1] != 5 or len(boxes) != n:
        raise DataError(f"query boxes: expected shape ({n}, 5) = z, y, x, size_y, size_x; got {boxes.shape}")
    return boxes


# ----------------------------------------------------------------------------------------------- patches.h5


def read_boxes(volume: Any, boxes: np.ndarray) -> np.ndarray:
    """The input voxels of every box, ``(B, size_y, size_x)`` in the volume's raw dtype.

    Args:
        volume: a :class:`dualstream.volume.Volume` (uses ``Volume.read_box`` when it has one).
        boxes: ``(B, 5)`` int ``z, y, x, size_y, size_x`` (all boxes the same size).

    Raises:
        DataError: boxes of different sizes, or a box outside the volume.
    """
    boxes = _check_boxes(boxes, len(boxes))
    if len(boxes) and (np.any(boxes[:, 3] != boxes[0, 3]) or np.any(boxes[:, 4] != boxes[0, 4])):
        raise DataError("query boxes: all boxes of a round must have the same size_y, size_x")
    shape = tuple(int(s) for s in volume.data.shape)
    out = []
    for z, y, x, sy, sx in boxes.tolist():
        if not (0 <= z < shape[0] and 0 <= y and y + sy <= shape[1] and 0 <= x and x + sx <= shape[2]):
            raise DataError(
                f"{volume.source}: query box z={z} y={y}:{y + sy} x={x}:{x + sx} lies outside the volume {shape}"
            )
        read_box = getattr(volume, "read_box", None)
        if callable(read_box):
            patch = np.asarray(read_box(z, z + 1, y, y + sy, x, x + sx))
        else:
            patch = np.asarray(volume.data[z, y : y + sy, x : x + sx])
        out.append(patch.reshape(sy, sx))
    if not out:
        return np.zeros((0, 0, 0), dtype=np.dtype(volume.data.dtype))
    return np.stack(out)


def upsample_masks(predicted: np.ndarray, factor: int) -> np.ndarray:
    """``(B, P, P)`` 0/1 masks on the pool grid -> ``(B, P*f, P*f)`` uint8 on input voxels (nearest)."""
    predicted = np.asarray(predicted)
    if predicted.ndim != 3:
        raise DataError(f"predicted masks: expected (B, P, P), got shape {predicted.shape}")
    up = np.repeat(np.repeat(predicted, factor, axis=1), factor, axis=2)
    return (up != 0).astype(np.uint8)


def write_patches(
    path: str | Path,
    query_ids: np.ndarray,
    images: np.ndarray,
    predicted: np.ndarray,
    boxes: np.ndarray,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write ``patches.h5``: ``query_id (B,)`` int64, ``image (B, sy, sx)`` raw dtype, ``predicted (B, sy, sx)``
    uint8 0/1, plus ``box (B, 5)`` int64 (z, y, x, size_y, size_x) so the file describes itself."""
    import h5py

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("query_id", data=np.asarray(query_ids, dtype=np.int64))
            f.create_dataset("image", data=images)
            f.create_dataset("predicted", data=np.asarray(predicted, dtype=np.uint8), compression="gzip")
            f.create_dataset("box", data=np.asarray(boxes, dtype=np.int64))
            for key, value in (attrs or {}).items():
                f.attrs[key] = value

    return atomic_write(Path(path), write)


# ----------------------------------------------------------------------------------------- neuroglancer.json


def neuroglancer_source(image_spec: str) -> tuple[str, str]:
    """A Neuroglancer data-source URL for the project's image, and a note saying how to make it load.

    Neuroglancer reads only served data (http), and not HDF5, TIFF or PNG: Zarr and N5 get a URL that
    works once their parent folder is served on ``localhost:8000``; other formats get a ``precomputed``
    placeholder and a note to convert first.
    """
    spec = str(image_spec)
    for suffix, scheme in ((".zarr", "zarr"), (".n5", "n5")):
        match = re.search(re.escape(suffix) + r"(?=$|[/:])", spec, flags=re.IGNORECASE)
        if match:
            root = Path(spec[: match.end()]).expanduser().resolve()
            inner = spec[match.end() :].lstrip("/:")
            url = f"{scheme}://http://localhost:{SERVE_PORT}/{root.name}" + (f"/{inner}" if inner else "")
            note = (
                f"Neuroglancer reads only served data: serve {root.parent} with CORS on port {SERVE_PORT}"
                f" (e.g. `npx http-server --cors -p {SERVE_PORT} {root.parent}`), then load this state."
            )
            return url, note
    path = Path(re.sub(r"\.(h5|hdf5|hdf):.*$", r".\1", spec, flags=re.IGNORECASE)).expanduser().resolve()
    url = f"precomputed://http://localhost:{SERVE_PORT}/{path.stem}"
    note = (
        f"Placeholder image source: Neuroglancer cannot read {path.name} ({spec}). Convert the volume to"
        f" Zarr or precomputed (z, y, x as stored; voxel size as in project.json), serve its folder with CORS"
        f" on port {SERVE_PORT} (e.g. `npx http-server --cors -p {SERVE_PORT} FOLDER`), and edit the image"
        f" layer's source to match. The annotation layer works without it."
    )
    return url, note


def neuroglancer_state(
    query_ids: Sequence[int],
    boxes: np.ndarray,
    utilities: Sequence[float],
    image_source: str,
    voxel_size: Sequence[float],
) -> dict[str, Any]:
    """A Neuroglancer viewer state (JSON-able dict): the image and one bounding box per query.

    Neuroglancer orders axes x, y, z; everything here arrives as z, y, x and is reversed. A box covers
    its section: ``pointA = (x, y, z)``, ``pointB = (x + size_x, y + size_y, z + 1)`` in input voxels.

    Args:
        query_ids: ``(B,)`` pool indices, rank order.
        boxes: ``(B, 5)`` int ``z, y, x, size_y, size_x`` in input voxels.
        utilities: ``(B,)`` floats (NaN allowed).
        image_source: the image spec from project.json.
        voxel_size: ``(z, y, x)`` in nm.
    """
    boxes = _check_boxes(boxes, len(query_ids))
    vz, vy, vx = (float(v) for v in voxel_size)
    # Neuroglancer's canonical unit is the metre; nm values are scaled by 1e-9.
    dimensions = {"x": [vx * 1e-9, "m"], "y": [vy * 1e-9, "m"], "z": [vz * 1e-9, "m"]}
    url, note = neuroglancer_source(image_source)
    annotations = []
    for rank, (qid, box, util) in enumerate(zip(query_ids, boxes.tolist(), utilities), start=1):
        z, y, x, sy, sx = box
        u = float(util)
        annotations.append(
            {
                "type": "axis_aligned_bounding_box",
                "id": f"q{int(qid)}",
                "pointA": [x, y, z],
                "pointB": [x + sx, y + sy, z + 1],
                "description": f"rank {rank}, id {int(qid)}, utility {u:.4g}",
                # Strict JSON has no NaN: a missing utility reads 0 here (the description says nan).
                "props": [rank, int(qid), u if np.isfinite(u) else 0.0],
            }
        )
    if len(boxes):
        z, y, x, sy, sx = boxes[0].tolist()
        position = [x + sx / 2, y + sy / 2, z + 0.5]
    else:
        position = [0.0, 0.0, 0.0]
    return {
        "_dualstream_note": note,
        "dimensions": dimensions,
        "position": position,
        "crossSectionScale": 1,
        "projectionScale": 1024,
        "layers": [
            {"type": "image", "name": "image", "source": url},
            {
                "type": "annotation",
                "name": "queries",
                "source": {"url": "local://annotations", "transform": {"outputDimensions": dimensions}},
                "annotationColor": "#ffcc00",
                "annotationProperties": [
                    {"id": "rank", "type": "uint32", "description": "1 = most useful"},
                    {"id": "query_id", "type": "uint32", "description": "pool index (queries.csv)"},
                    {"id": "utility", "type": "float32"},
                ],
                "annotations": annotations,
            },
        ],
        "selectedLayer": {"layer": "queries", "visible": True},
        "layout": "xy",
    }


def write_neuroglancer(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a viewer state as JSON (NaN written as null: strict JSON)."""
    text = json.dumps(state, indent=1, allow_nan=False)

    def write(tmp: Path) -> None:
        tmp.write_text(text + "\n")

    return atomic_write(Path(path), write)


# --------------------------------------------------------------------------------------------------- why.png


def _subsample(n: int) -> np.ndarray:
    """Indices of at most :data:`MAX_PLOTTED` of ``n`` items (strided, deterministic)."""
    step = max(1, int(np.ceil(n / MAX_PLOTTED)))
    return np.arange(0, n, step)


def chosen_ranks(chosen_mask: np.ndarray, query_ids: Sequence[int], candidate_ids: np.ndarray | None) -> np.ndarray:
    """Candidate index of each query, in rank order: ``(B,)`` int (positions in the candidate arrays).

    With ``candidate_ids`` (``(M,)`` pool indices) queries are matched by id; without, the chosen
    candidates are taken in candidate order (the caller then passes candidates sorted by rank).
    """
    chosen_mask = np.asarray(chosen_mask, dtype=bool)
    if candidate_ids is None:
        return np.flatnonzero(chosen_mask)
    position = {int(c): i for i, c in enumerate(np.asarray(candidate_ids).tolist())}
    missing = [int(q) for q in query_ids if int(q) not in position]
    if missing:
        raise DataError(f"why.png: queries {missing[:5]} are not among the candidates; pass the candidates scored")
    return np.array([position[int(q)] for q in query_ids], dtype=np.int64)


def plot_why(
    path: str | Path,
    uncertainty: np.ndarray,
    typicality: np.ndarray,
    chosen: np.ndarray,
    round_index: int | None = None,
) -> Path:
    """Draw why.png: every candidate's uncertainty (y) against typicality (x), the batch numbered by rank.

    When no candidate has a finite uncertainty (the cold start: no model yet) the figure is a histogram
    of typicality with the batch marked on a strip below it (and vice versa when typicality is missing).

    Args:
        path: the PNG to write.
        uncertainty, typicality: ``(M,)`` float scores of every candidate (NaN allowed).
        chosen: ``(B,)`` int positions in the candidate arrays, in rank order.
        round_index: the round number, for the title.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    unc = np.asarray(uncertainty, dtype=np.float64)
    typ = np.asarray(typicality, dtype=np.float64)
    chosen = np.asarray(chosen, dtype=np.int64)
    if unc.shape != typ.shape:
        raise DataError(f"why.png: uncertainty {unc.shape} and typicality {typ.shape} must have one value per candidate")
    title = f"round {round_index:03d}: " if round_index is not None else ""
    title += f"batch of {len(chosen)} from {len(unc)} candidates"
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    has_unc, has_typ = bool(np.isfinite(unc).any()), bool(np.isfinite(typ).any())
    if has_unc and has_typ:
        ax = fig.add_subplot()
        shown = _subsample(len(unc))
        ax.scatter(typ[shown], unc[shown], s=4, c="0.7", lw=0, label=f"candidates ({len(unc)})", rasterized=True)
        ax.scatter(typ[chosen], unc[chosen], s=40, c="tab:red", edgecolors="k", lw=0.5, label="batch", zorder=3)
        for rank, i in enumerate(chosen.tolist(), start=1):
            if np.isfinite(typ[i]) and np.isfinite(unc[i]):
                ax.annotate(str(rank), (typ[i], unc[i]), xytext=(4, 4), textcoords="offset points", fontsize=8, zorder=4)
        ax.set_xlabel("typicality (higher = more representative)")
        ax.set_ylabel("uncertainty (higher = model less sure)")
        ax.legend(loc="best", fontsize=8)
    elif has_unc or has_typ:
        values, name = (typ, "typicality") if has_typ else (unc, "uncertainty")
        missing = "uncertainty" if has_typ else "typicality"
        ax, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [4, 1]})
        ax.hist(values[np.isfinite(values)], bins=50, color="0.7")
        ax.set_ylabel("candidates")
        ax.set_title(f"no {missing} yet (cold start): {name} only", fontsize=9)
        strip.scatter(values[chosen], np.zeros(len(chosen)), marker="|", s=200, c="tab:red")
        for rank, i in enumerate(chosen.tolist(), start=1):
            if np.isfinite(values[i]):
                strip.annotate(str(rank), (values[i], 0), xytext=(0, 8), textcoords="offset points", fontsize=7, ha="center")
        strip.set_yticks([])
        strip.set_ylim(-1, 1.5)
        strip.set_ylabel("batch")
        strip.set_xlabel(name)
    else:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no uncertainty or typicality scores\n(batch chosen without them)", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    return atomic_write(Path(path), write)


# ----------------------------------------------------------------------------------------------------- round


def write_round_outputs(
    round_dir: str | Path,
    volume: Any,
    query_ids: np.ndarray,
    boxes: np.ndarray,
    utilities: np.ndarray,
    predicted: np.ndarray,
    factor: int,
    candidates_uncertainty: np.ndarray,
    candidates_typicality: np.ndarray,
    chosen_mask: np.ndarray,
    image_source: str,
    voxel_size: Sequence[float],
    candidate_ids: np.ndarray | None = None,
) -> dict[str, Path]:
    """Write ``patches.h5``, ``neuroglancer.json`` and ``why.png`` into ``round_dir`` (which must exist).

    Args:
        round_dir: ``DIR/round_NNN``.
        volume: the input image (:class:`dualstream.volume.Volume`), read box by box.
        query_ids: ``(B,)`` int pool indices, in utility order (rank 1 first).
        boxes: ``(B, 5)`` int ``z, y, x, size_y, size_x`` in input voxels, same order.
        utilities: ``(B,)`` float.
        predicted: ``(B, P, P)`` uint8 0/1 on the pool grid (zeros at the cold start).
        factor: the pool's downsampling factor ``f`` (``size_y == P * f``).
        candidates_uncertainty, candidates_typicality: ``(M,)`` float scores of every candidate (NaN allowed).
        chosen_mask: ``(M,)`` bool, True for the B candidates chosen.
        image_source: the image spec (project.json's ``image``), for the Neuroglancer placeholder.
        voxel_size: ``(z, y, x)`` nm.
        candidate_ids: optional ``(M,)`` pool indices of the candidates; used to number the batch in
            why.png by rank. Without it the chosen candidates are numbered in candidate order.

    Returns:
        ``{"patches": path, "neuroglancer": path, "why": path}``.

    Raises:
        DataError: inconsistent shapes, a box outside the volume, or a predicted mask that does not
            match the box size at this factor.
    """
    round_dir = Path(round_dir)
    query_ids = np.asarray(query_ids, dtype=np.int64)
    boxes = _check_boxes(boxes, len(query_ids))
    utilities = np.asarray(utilities, dtype=np.float64)
    if utilities.shape != query_ids.shape:
        raise DataError(f"utilities: expected shape {query_ids.shape}, got {utilities.shape}")
    factor = int(factor)
    masks = upsample_masks(predicted, factor)
    images = read_boxes(volume, boxes)
    if len(query_ids) and masks.shape != images.shape:
        raise DataError(
            f"predicted masks {np.shape(predicted)} x factor {factor} = {masks.shape[1:]} do not match the"
            f" boxes' size {images.shape[1:]} (size_y, size_x); size_y must be P * factor"
        )
    chosen = chosen_ranks(chosen_mask, query_ids, candidate_ids)
    if len(chosen) != len(query_ids):
        raise DataError(f"chosen_mask marks {len(chosen)} candidates but the round has {len(query_ids)} queries")
    index = round_number(round_dir)
    attrs = {"voxel_size": np.asarray(voxel_size, dtype=np.float64), "image": str(image_source), "factor": factor}
    if index is not None:
        attrs["round"] = index
    return {
        "patches": write_patches(round_dir / "patches.h5", query_ids, images, masks, boxes, attrs),
        "neuroglancer": write_neuroglancer(
            round_dir / "neuroglancer.json",
            neuroglancer_state(query_ids.tolist(), boxes, utilities.tolist(), image_source, voxel_size),
        ),
        "why": plot_why(round_dir / "why.png", candidates_uncertainty, candidates_typicality, chosen, index),
    }
