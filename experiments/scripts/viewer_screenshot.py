"""A screenshot of ``dualstream-view`` on a project, for the README (docs/img/viewer.png).

    xvfb-run -a -s "-screen 0 1600x1000x24" python experiments/scripts/viewer_screenshot.py PROJECT_DIR OUT.png
    python experiments/scripts/viewer_screenshot.py --make-sample /tmp/ds_sample /tmp/ds_sample docs/img/viewer.png

napari draws with OpenGL: on a machine without a display run it under ``xvfb-run`` (Debian packages
``xvfb`` plus the xcb libraries PyQt5's ``xcb`` plugin links: ``libxcb-icccm4 libxcb-keysyms1
libxcb-xinerama0``). ``QT_QPA_PLATFORM=offscreen`` gets no GL context there.

``--make-sample DIR`` first writes a small illustrative project on the bundled EPFL sample
(``dualstream/sample_data``): round 0 holds the 8 pool items with the most mitochondria, scores are
synthetic, and the "predicted" masks are the ground truth downsampled (a stand-in for a trained model:
the picture shows the layout, not a result). The annotation layer gets the rank-1 box painted from the
ground truth, as if the annotator had just done it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "dualstream" / "sample_data" / "epfl_hippocampus_sample.h5"


def busiest_section(z: np.ndarray) -> int:
    """The section holding the most queries (the lowest such z on ties)."""
    values, counts = np.unique(np.asarray(z), return_counts=True)
    return int(values[np.argmax(counts)])


def make_sample_project(folder: Path, factor: int = 2, patch: int = 32, batch: int = 8) -> Path:
    """Write a one-round project on the bundled sample into ``folder``; returns a ``--labels`` spec to show."""
    import h5py

    from dualstream.patches import downsample
    from dualstream.project.layout import ProjectInfo, round_dir
    from dualstream.project.outputs import write_round_outputs
    from dualstream.project.queries import make_queries
    from dualstream.volume import open_volume

    folder.mkdir(parents=True, exist_ok=True)
    image_spec = f"{SAMPLE}:image"
    volume = open_volume(image_spec)
    with h5py.File(SAMPLE, "r") as f:
        mito = f["mitochondrion"][:] > 0
    info = ProjectInfo(image=image_spec, shape=volume.shape, voxel_size=volume.voxel_size, downsample=factor, patch_size=patch)
    info.write(folder)
    # The pool: non-overlapping P x P tiles of every section on the pool grid.
    pool_masks = np.stack([downsample(m.astype(np.float32), factor) >= 0.5 for m in mito])
    nz, ny, nx = pool_masks.shape
    origins = np.array([(z, y, x) for z in range(nz) for y in range(0, ny - patch + 1, patch) for x in range(0, nx - patch + 1, patch)])
    tiles = np.stack([pool_masks[z, y : y + patch, x : x + patch] for z, y, x in origins]).astype(np.uint8)
    rng = np.random.default_rng(0)
    fg = tiles.mean(axis=(1, 2))
    uncertainty = np.clip(fg + rng.normal(0, 0.05, len(fg)), 0, 1)
    typicality = rng.uniform(0, 1, len(fg))
    # Most of the batch on one section, so one screenshot shows several boxes: the richest section's
    # best items, then the best of the rest (a real batch spreads more; this is a picture of the layout).
    richest = int(np.argmax([fg[origins[:, 0] == z].sum() for z in range(nz)]))
    on = np.flatnonzero(origins[:, 0] == richest)
    off = np.flatnonzero(origins[:, 0] != richest)
    first = on[np.argsort(-fg[on], kind="stable")[: batch - batch // 3]]
    chosen = np.concatenate([first, off[np.argsort(-fg[off], kind="stable")[: batch - len(first)]]])
    utility = uncertainty[chosen] * typicality[chosen]
    table = make_queries(chosen, origins[chosen], factor, patch, uncertainty[chosen], typicality[chosen], utility)
    rdir = round_dir(folder, 0)
    rdir.mkdir(exist_ok=True)
    boxes = np.stack([table.z, table.y, table.x, table.size_y, table.size_x], axis=1)
    write_round_outputs(
        rdir, volume, table.query_id, boxes, table.utility, tiles[table.query_id], factor,
        uncertainty, typicality, np.isin(np.arange(len(fg)), chosen), image_spec, volume.voxel_size,
        candidate_ids=np.arange(len(fg)),
    )
    table.write(rdir / "queries.csv")
    # An annotation in progress: the best-ranked box on the section the screenshot shows, painted.
    labels = np.zeros(volume.shape, np.uint8)
    z, y, x, sy, sx = boxes[int(np.flatnonzero(table.z == busiest_section(table.z))[0])].tolist()
    labels[z, y : y + sy, x : x + sx] = mito[z, y : y + sy, x : x + sx]
    with h5py.File(folder / "demo_annotation.h5", "w") as f:
        f["labels"] = labels
    return f"{folder / 'demo_annotation.h5'}:labels"


def screenshot(project: Path, out: Path, round: int | None, labels: str | None, size: tuple[int, int]) -> Path:
    """Open the viewer hidden, show the rank-1 query's section, save a screenshot of the window."""
    import warnings

    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari
    from qtpy.QtWidgets import QApplication

    from dualstream.project import viewer as dview
    from dualstream.project.layout import QUERIES_FILE, round_dir
    from dualstream.project.queries import QueryTable

    k = dview.pick_round(project, round)
    layers = dview.build_layers(project, k, labels)
    queries = QueryTable.read(round_dir(project, k) / QUERIES_FILE)
    viewer = napari.Viewer(show=False, title=f"dualstream: round {k:03d}")
    added = dview.add_layers(viewer, layers)
    viewer.layers.selection.active = added[-1]
    added[1].editable = False
    dview.show_help(viewer, k, len(queries))
    viewer.window._qt_window.resize(*size)
    viewer.window._qt_window.show()  # hidden windows are not laid out; under xvfb nothing is seen anyway
    QApplication.processEvents()
    # A whole section, the one with the most queries (several boxes in view), not the zoomed-in 'n' view.
    viewer.dims.set_current_step(0, busiest_section(queries.z))
    viewer.reset_view()
    for _ in range(5):
        QApplication.processEvents()
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # the PyQt5 deprecation notice would cover the canvas corner
    QApplication.processEvents()
    image = viewer.screenshot(canvas_only=False, flash=False)
    viewer.close()
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image)).save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="project directory")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--round", type=int, default=None)
    parser.add_argument("--labels", default=None, help="label volume for the annotation layer")
    parser.add_argument("--make-sample", type=Path, default=None, metavar="DIR", help="first write the sample project into DIR")
    parser.add_argument("--size", type=int, nargs=2, default=(1400, 900), metavar=("W", "H"))
    args = parser.parse_args(argv)
    labels = args.labels
    if args.make_sample is not None:
        demo = make_sample_project(args.make_sample)
        labels = labels or demo
    out = screenshot(args.project, args.out, args.round, labels, tuple(args.size))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
