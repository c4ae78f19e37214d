"""``dualstream-view DIR [--round K] [--labels PATH]``: annotate a round's queries in napari.

Layers (bottom to top): the image volume (lazy, read section by section), ``predicted`` (the task
model's masks pasted into the query boxes, from ``patches.h5``), ``queries`` (one rectangle per query on
its section, coloured and numbered by rank) and ``annotation`` (an editable label volume: paint the
foreground of each box, leave a box empty when it holds none). Keys: ``n`` goes to the next query in
rank order, ``Shift-S`` saves the annotation to ``DIR/round_NNN/annotation.h5:labels`` and prints the
``dualstream-ingest`` command that stores it. (``Ctrl-S`` stays napari's own "save layers": its menu
shortcut takes the key before a viewer binding would.)

napari is an optional dependency (``pip install 'dualstream[viewer]'``): it is imported only inside the
functions that need it, so the rest of the package (and :func:`build_layers`) works without it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dualstream.errors import DataError, DualstreamError, ShapeMismatchError
from dualstream.project import layout
from dualstream.project.outputs import atomic_write
from dualstream.project.queries import QueryTable
from dualstream.volume import intensity_range, open_volume

NAPARI_MISSING = "dualstream-view needs napari: pip install 'dualstream[viewer]'"
ANNOTATION_FILE = "annotation.h5"
ANNOTATION_DATASET = "labels"
SAVE_KEY = "Shift-S"
NEXT_KEY = "n"
EXIT_USER_ERROR = 2


def _import_napari():
    try:
        import napari
    except ImportError:
        raise SystemExit(NAPARI_MISSING) from None
    return napari


class _ArrayView:
    """The minimal array interface napari reads (``shape``, ``dtype``, ``ndim``, ``__getitem__``)."""

    def __init__(self, data: Any):
        self._data = data
        self.shape = tuple(int(s) for s in data.shape)
        dtype = getattr(data, "dtype", None)
        self.dtype = np.dtype(dtype) if dtype is not None else np.asarray(data[(0,) * len(self.shape)]).dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._data[key])

    def __array__(self, dtype=None, copy=None):  # napari calls np.asarray on small slices only
        out = np.asarray(self._data[...])
        return out.astype(dtype) if dtype is not None else out


def _napari_array(data: Any) -> Any:
    """``data`` itself when it already looks like an array to napari, else a thin :class:`_ArrayView`."""
    if all(hasattr(data, a) for a in ("shape", "dtype", "ndim", "__getitem__")):
        return data
    return _ArrayView(data)


# ------------------------------------------------------------------------------------------------ the round


def pick_round(project_dir: str | Path, round: int | None = None) -> int:
    """The round to show: ``round`` if given, else the open round, else the latest round with queries.

    Raises:
        DataError: no round with a ``queries.csv`` (run dualstream-suggest first), or ``round`` lacks one.
    """
    project_dir = Path(project_dir)
    rounds = layout.queried_rounds(project_dir)
    if round is not None:
        if int(round) not in rounds:
            have = ", ".join(str(k) for k in rounds) or "none"
            raise DataError(f"{layout.round_dir(project_dir, round)}: no {layout.QUERIES_FILE} (rounds with queries: {have}); pick one with --round K")
        return int(round)
    if not rounds:
        raise DataError(f"{project_dir}: no round with {layout.QUERIES_FILE} yet; run dualstream-suggest first")
    k = layout.open_round(project_dir)
    return rounds[-1] if k is None else k


def query_boxes(queries: QueryTable) -> np.ndarray:
    """``(B, 5)`` int64 ``z, y, x, size_y, size_x`` in input voxels, rank order."""
    return np.stack([queries.z, queries.y, queries.x, queries.size_y, queries.size_x], axis=1).astype(np.int64)


def _read_predicted(path: Path, queries: QueryTable, shape: tuple[int, int, int]) -> np.ndarray:
    """A ``(Z, Y, X)`` uint8 volume with ``patches.h5``'s predicted masks pasted into the boxes (zeros where
    the round has no ``patches.h5``). ``np.zeros`` is lazily allocated: untouched sections cost no memory."""
    out = np.zeros(shape, dtype=np.uint8)
    if not path.is_file():
        return out
    import h5py

    with h5py.File(path, "r") as f:
        if "predicted" not in f or "query_id" not in f:
            raise DataError(f"{path}: no 'predicted'/'query_id' datasets; rerun dualstream-suggest to rewrite the round")
        row = {int(q): i for i, q in enumerate(f["query_id"][:].tolist())}
        predicted = f["predicted"]
        for qid, (z, y, x, sy, sx) in zip(queries.query_id.tolist(), query_boxes(queries).tolist()):
            if qid in row:
                mask = np.asarray(predicted[row[qid]])
                if mask.shape != (sy, sx):
                    raise DataError(f"{path}: predicted mask of query {qid} is {mask.shape}, its box is {(sy, sx)}; rerun dualstream-suggest")
                out[z, y : y + sy, x : x + sx] = mask
    return out


def _read_labels(spec: str, info: layout.ProjectInfo) -> np.ndarray:
    """A label volume to continue from (``--labels``), as uint8 of the image's shape."""
    vol = open_volume(spec, voxel_size=info.voxel_size, role="--labels")
    if vol.shape != tuple(info.shape):
        raise ShapeMismatchError(
            f"{spec}: labels shape {vol.shape} (z, y, x) does not match the project's image {tuple(info.shape)}; give labels of the image's shape"
        )
    data = vol.read()
    if data.dtype == np.uint8:
        return np.array(data)
    if np.issubdtype(data.dtype, np.integer) and data.size and 0 <= data.min() and data.max() <= 255:
        return data.astype(np.uint8)
    return (data > 0).astype(np.uint8)  # floats or ids beyond uint8: keep foreground only


def rank_colours(n: int) -> np.ndarray:
    """``(n, 4)`` RGBA edge colours, rank 1 brightest (matplotlib's plasma, reversed)."""
    from matplotlib import colormaps

    return colormaps["plasma_r"](np.linspace(0.0, 0.85, max(n, 1)))[:n]


def box_rectangles(boxes: np.ndarray) -> list[np.ndarray]:
    """One ``(4, 3)`` rectangle per box on its section, in napari data coordinates ``z, y, x``.

    napari centres voxel ``i`` on ``i``: a box of voxels ``y .. y+sy-1`` spans ``y - 0.5 .. y + sy - 0.5``.
    """
    out = []
    for z, y, x, sy, sx in np.asarray(boxes).tolist():
        y0, x0, y1, x1 = y - 0.5, x - 0.5, y + sy - 0.5, x + sx - 0.5
        out.append(np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], dtype=np.float64))
    return out


def build_layers(project_dir: str | Path, round: int | None = None, labels: str | None = None) -> list[tuple]:
    """napari LayerData tuples ``(data, kwargs, layer_type)`` for a round: image, predicted, queries, annotation.

    Args:
        project_dir: the project directory (holds project.json).
        round: the round to show; ``None`` = the open round, else the latest.
        labels: a label volume spec to continue annotating from (default: all zeros).

    Returns:
        ``[(image, {...}, "image"), (predicted (Z,Y,X) uint8, {...}, "labels"),
        (rectangles, {...}, "shapes"), (annotation (Z,Y,X) uint8, {...}, "labels")]``; every layer has
        ``scale`` = the voxel size (nm), so all share one world. The shapes' ``features`` hold rank,
        query_id, utility, uncertainty, typicality in rank order.
    """
    project_dir = Path(project_dir)
    info = layout.ProjectInfo.read(project_dir)
    k = pick_round(project_dir, round)
    rdir = layout.round_dir(project_dir, k)
    queries = QueryTable.read(rdir / layout.QUERIES_FILE)
    volume = open_volume(info.image, voxel_size=info.voxel_size)
    if volume.shape != tuple(info.shape):
        raise ShapeMismatchError(
            f"{info.image}: image shape {volume.shape} differs from project.json's {tuple(info.shape)}; was the image replaced?"
        )
    shape = volume.shape
    scale = tuple(float(v) for v in info.voxel_size)
    boxes = query_boxes(queries)
    lo, hi = intensity_range(volume)
    image = (_napari_array(volume.data), {"name": "image", "scale": scale, "contrast_limits": [lo, hi], "rgb": False}, "image")
    predicted = (
        _read_predicted(rdir / layout.PATCHES_FILE, queries, shape),
        # cyan, so the model's guess never looks like the annotator's own paint (label 1 in 'annotation')
        {"name": "predicted", "scale": scale, "opacity": 0.4, "colormap": {1: "cyan", None: "transparent"}},
        "labels",
    )
    features = {
        "rank": np.arange(1, len(queries) + 1),
        "query_id": queries.query_id,
        "utility": queries.utility,
        "uncertainty": queries.uncertainty,
        "typicality": queries.typicality,
    }
    shapes = (
        box_rectangles(boxes),
        {
            "name": "queries",
            "scale": scale,
            "shape_type": "rectangle",
            "edge_color": rank_colours(len(queries)),
            "face_color": "transparent",
            "edge_width": max(1.0, float(boxes[:, 3:].max()) / 64) if len(boxes) else 1.0,
            "features": features,
            "text": {"string": "{rank}", "color": "yellow", "anchor": "upper_left", "size": 12},
        },
        "shapes",
    )
    annotation_data = _read_labels(labels, info) if labels else np.zeros(shape, dtype=np.uint8)
    annotation = (annotation_data, {"name": "annotation", "scale": scale, "opacity": 0.6}, "labels")
    return [image, predicted, shapes, annotation]


# ------------------------------------------------------------------------------------------- save annotation


def save_annotation(layer_data: Any, project_dir: str | Path, round: int) -> Path:
    """Write the annotation to ``DIR/round_NNN/annotation.h5`` dataset ``labels`` ((Z, Y, X) uint8), atomically.

    Args:
        layer_data: a napari Labels layer, or its ``(Z, Y, X)`` array (nonzero = foreground).
        project_dir: the project directory.
        round: the round it answers.

    Returns:
        The file's path; ``dualstream-ingest DIR PATH:labels`` reads it.

    Raises:
        ShapeMismatchError: the array does not have the image's shape (project.json).
    """
    import h5py

    info = layout.ProjectInfo.read(project_dir)
    data = np.asarray(getattr(layer_data, "data", layer_data))
    if data.shape != tuple(info.shape):
        raise ShapeMismatchError(
            f"annotation shape {data.shape} (z, y, x) does not match the project's image {tuple(info.shape)}; save the 'annotation' layer"
        )
    if data.dtype != np.uint8:
        data = data.astype(np.uint8) if data.size == 0 or data.max() <= 255 else (data > 0).astype(np.uint8)
    path = layout.round_dir(project_dir, round) / ANNOTATION_FILE
    chunks = (1, min(data.shape[1], 512), min(data.shape[2], 512)) if data.size else None

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(ANNOTATION_DATASET, data=data, chunks=chunks, compression="gzip" if chunks else None)
            f.attrs["voxel_size"] = np.asarray(info.voxel_size, dtype=np.float64)
            f.attrs["round"] = int(round)

    return atomic_write(path, write)


def empty_queries(data: Any, queries: QueryTable) -> list[int]:
    """Query ids whose box holds no foreground in ``data`` ((Z, Y, X)): ingest stores them as all
    background, which is right only if the annotator looked and found none."""
    out = []
    for qid, (z, y, x, sy, sx) in zip(queries.query_id.tolist(), query_boxes(queries).tolist()):
        if not np.any(np.asarray(data[z, y : y + sy, x : x + sx])):
            out.append(int(qid))
    return out


def ingest_command(project_dir: str | Path, path: Path) -> str:
    """The shell command that stores a saved annotation as the round's answers."""
    return f"dualstream-ingest {shlex.quote(str(project_dir))} {shlex.quote(f'{path}:{ANNOTATION_DATASET}')}"


# ------------------------------------------------------------------------------------------ next query


@dataclass
class QueryTarget:
    """Where to look for one query: rank (1-based), z section index, camera centre (world y, x), zoom."""

    rank: int
    z: int
    center: tuple[float, float]
    zoom: float


def query_target(viewer: Any, boxes: np.ndarray, index: int, scale: tuple[float, float, float]) -> QueryTarget:
    """The view of query ``index`` (0-based, rank order): its section, its centre, a zoom showing it whole.

    Pure: reads ``viewer``'s canvas size only. The box fills about half the smaller canvas side.
    """
    z, y, x, sy, sx = (int(v) for v in np.asarray(boxes)[index])
    center = ((y + (sy - 1) / 2) * scale[1], (x + (sx - 1) / 2) * scale[2])
    canvas = getattr(viewer, "_canvas_size", (600, 800))
    extent = max(sy * scale[1], sx * scale[2])
    return QueryTarget(rank=index + 1, z=z, center=center, zoom=0.5 * min(canvas) / extent)


def go_to(viewer: Any, target: QueryTarget) -> None:
    """Move the z slider and the camera to ``target`` (2D view: the camera centre is y, x)."""
    viewer.dims.set_current_step(0, target.z)
    viewer.camera.center = target.center
    viewer.camera.zoom = target.zoom


class QueryNavigator:
    """``n``: the next query in rank order (wraps around); the first press goes to rank 1."""

    def __init__(self, boxes: np.ndarray, scale: tuple[float, float, float], queries: QueryTable | None = None):
        self.boxes = np.asarray(boxes)
        self.scale = scale
        self.queries = queries
        self.index = -1

    def __call__(self, viewer: Any) -> QueryTarget | None:
        if not len(self.boxes):
            return None
        self.index = (self.index + 1) % len(self.boxes)
        target = query_target(viewer, self.boxes, self.index, self.scale)
        go_to(viewer, target)
        if self.queries is not None:
            q = self.queries
            i = self.index
            viewer.status = (
                f"query rank {target.rank}/{len(self.boxes)}: id {int(q.query_id[i])}, utility {float(q.utility[i]):.4g}"
            )
        return target


# ------------------------------------------------------------------------------------------------- main


def add_layers(viewer: Any, layers: list[tuple]) -> list[Any]:
    """Add LayerData tuples to a napari viewer (or ViewerModel); returns the layers in order."""
    return [getattr(viewer, f"add_{kind}")(data, **kwargs) for data, kwargs, kind in layers]


def show_help(viewer: Any, round: int, n_queries: int) -> None:
    """Axis names and a corner line with the round and the keys (napari >= 0.9: ``canvas.overlays.text``)."""
    viewer.dims.axis_labels = ("z", "y", "x")
    canvas = getattr(viewer, "canvas", None)
    overlay = canvas.overlays.text if canvas is not None and hasattr(canvas, "overlays") else viewer.text_overlay
    overlay.visible = True
    overlay.position = "bottom_left"
    overlay.text = f"round {round:03d}, {n_queries} queries  |  {NEXT_KEY}: next query  |  {SAVE_KEY}: save annotation"


def main(argv: list[str] | None = None) -> int:
    """Console script ``dualstream-view``; exits 2 with one line on a user error."""
    parser = argparse.ArgumentParser(
        prog="dualstream-view",
        description=f"Annotate a round's queries in napari: '{NEXT_KEY}' = next query, {SAVE_KEY} = save the annotation for dualstream-ingest.",
    )
    parser.add_argument("project", metavar="DIR", help="the project directory (holds project.json)")
    parser.add_argument("--round", type=int, default=None, metavar="K", help="round to show (default: the open round)")
    parser.add_argument("--labels", default=None, metavar="PATH", help="label volume to continue from (e.g. a saved annotation.h5:labels)")
    args = parser.parse_args(argv)
    napari = _import_napari()
    try:
        k = pick_round(args.project, args.round)
        layers = build_layers(args.project, k, args.labels)
        queries = QueryTable.read(layout.round_dir(args.project, k) / layout.QUERIES_FILE)
    except DualstreamError as err:
        print(f"dualstream-view: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    viewer = napari.Viewer(title=f"dualstream: {args.project} round {k:03d}")
    added = add_layers(viewer, layers)
    added[1].editable = False  # the model's prediction is shown, not edited
    annotation = added[-1]
    viewer.layers.selection.active = annotation
    scale = layers[0][1]["scale"]
    navigate = QueryNavigator(query_boxes(queries), scale, queries)

    @viewer.bind_key(NEXT_KEY, overwrite=True)
    def _next(v):
        navigate(v)

    @viewer.bind_key(SAVE_KEY, overwrite=True)
    def _save(v):
        try:
            path = save_annotation(annotation, args.project, k)
        except DualstreamError as err:
            v.status = f"not saved: {err}"
            print(f"dualstream-view: error: {err}", file=sys.stderr)
            return
        command = ingest_command(args.project, path)
        empty = empty_queries(annotation.data, queries)
        v.status = f"saved {path}; now run: {command}"
        print(f"saved {path}\nstore it as the round's answers with:\n  {command}", flush=True)
        if empty:
            print(
                f"note: {len(empty)} of {len(queries)} boxes hold no foreground (query ids {','.join(map(str, empty))});"
                " they are stored as background; add --skip ID,... for boxes you did not judge",
                flush=True,
            )

    show_help(viewer, k, len(queries))
    navigate(viewer)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
