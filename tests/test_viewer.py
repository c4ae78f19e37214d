"""dualstream-view's layers, saving and navigation, headless (napari's ViewerModel: no Qt, no window)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

pytest.importorskip("napari")
from napari.components import ViewerModel  # noqa: E402

from dualstream.errors import DataError, ShapeMismatchError  # noqa: E402
from dualstream.project import viewer as dview  # noqa: E402
from dualstream.volume import open_volume  # noqa: E402

SHAPE = (4, 24, 40)  # z, y, x: non-square so a y/x swap shows
VOXEL = (30.0, 8.0, 4.0)
P, F = 4, 2
HEADER = "query_id,z,y,x,size_y,size_x,uncertainty,typicality,utility"
# rank order: rank 1 = id 21 on z=3, rank 2 = id 5 on z=0, rank 3 = id 12 on z=1
QUERIES = [(21, 3, 8, 24, 8, 8, 0.9, 0.2, 0.7), (5, 0, 0, 0, 8, 8, 0.1, 0.8, 0.5), (12, 1, 16, 8, 8, 8, float("nan"), 0.5, 0.1)]


@pytest.fixture
def project(tmp_path):
    """A tiny project as the contract lays it out: project.json, an HDF5 image, round_000 with queries
    and patches.h5 (query 21's predicted mask is its top-left pool pixel)."""
    image = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)
    with h5py.File(tmp_path / "img.h5", "w") as f:
        f.create_dataset("raw", data=image)
    info = {
        "version": 1, "image": f"{tmp_path / 'img.h5'}:raw", "shape": list(SHAPE), "voxel_size": list(VOXEL),
        "downsample": F, "patch_size": P, "label_threshold": 0.0, "task": "segment", "created": "2026-12-01T00:00:00",
    }
    (tmp_path / "project.json").write_text(json.dumps(info))
    rdir = tmp_path / "round_000"
    rdir.mkdir()
    rows = [",".join(str(v) if isinstance(v, int) else repr(float(v)) for v in q) for q in QUERIES]
    (rdir / "queries.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    predicted = np.zeros((3, P * F, P * F), np.uint8)
    predicted[0, :F, :F] = 1
    with h5py.File(rdir / "patches.h5", "w") as f:
        f["query_id"] = np.array([q[0] for q in QUERIES], np.int64)
        f["image"] = np.stack([image[z, y : y + sy, x : x + sx] for _, z, y, x, sy, sx, *_ in QUERIES])
        f["predicted"] = predicted
    return tmp_path


def _model(layers):
    viewer = ViewerModel()
    dview.add_layers(viewer, layers)
    return viewer


def test_layers_in_a_viewer_model(project):
    layers = dview.build_layers(project)
    viewer = _model(layers)
    names = [layer.name for layer in viewer.layers]
    assert names == ["image", "predicted", "queries", "annotation"]
    kinds = [type(layer).__name__ for layer in viewer.layers]
    assert kinds == ["Image", "Labels", "Shapes", "Labels"]
    image, predicted, shapes, annotation = viewer.layers
    assert image.data.shape == SHAPE and tuple(image.scale) == VOXEL
    assert predicted.data.shape == SHAPE and predicted.data.dtype == np.uint8
    assert annotation.data.shape == SHAPE and annotation.data.dtype == np.uint8 and not annotation.data.any()
    # predicted mask pasted at query 21's box: z=3, y 8:10, x 24:26 and nowhere else
    assert predicted.data[3, 8:10, 24:26].all() and predicted.data.sum() == F * F


def test_query_boxes_match_the_queries_in_rank_order(project):
    shapes = _model(dview.build_layers(project)).layers["queries"]
    assert len(shapes.data) == len(QUERIES)
    for rect, (_, z, y, x, sy, sx, *_) in zip(shapes.data, QUERIES):
        assert np.all(rect[:, 0] == z)
        # napari centres voxel i on i: the rectangle frames voxels y..y+sy-1, x..x+sx-1
        assert rect[:, 1].min() == y - 0.5 and rect[:, 1].max() == y + sy - 0.5
        assert rect[:, 2].min() == x - 0.5 and rect[:, 2].max() == x + sx - 0.5
    features = shapes.features
    assert features["rank"].tolist() == [1, 2, 3]
    assert features["query_id"].tolist() == [21, 5, 12]
    assert features["utility"].tolist() == [0.7, 0.5, 0.1]
    assert np.isnan(features["uncertainty"][2]) and features["typicality"].tolist() == [0.2, 0.8, 0.5]
    assert shapes.text.values.tolist() == ["1", "2", "3"]


def test_save_annotation_round_trips_through_open_volume(project):
    layers = dview.build_layers(project)
    annotation = _model(layers).layers["annotation"]
    annotation.data[0, 0:8, 0:8] = 1
    annotation.data[1, 20, 39] = 3
    path = dview.save_annotation(annotation, project, 0)
    assert path == project / "round_000" / "annotation.h5"
    back = open_volume(f"{path}:labels").read()
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, annotation.data)
    assert "dualstream-ingest" in dview.ingest_command(project, path) and "annotation.h5:labels" in dview.ingest_command(project, path)
    # continue from the saved file
    again = dview.build_layers(project, labels=f"{path}:labels")[-1][0]
    np.testing.assert_array_equal(again, annotation.data)


def test_save_annotation_rejects_a_wrong_shape(project):
    with pytest.raises(ShapeMismatchError, match="does not match"):
        dview.save_annotation(np.zeros((1, 2, 3), np.uint8), project, 0)


def test_next_query_moves_slider_and_camera_into_the_box(project):
    layers = dview.build_layers(project)
    viewer = _model(layers)
    boxes = np.array([q[1:6] for q in QUERIES])
    navigate = dview.QueryNavigator(boxes, VOXEL)
    for rank in (1, 2, 3, 1):  # wraps around after the last
        target = navigate(viewer)
        z, y, x, sy, sx = boxes[rank - 1]
        assert target.rank == rank and target.z == z
        assert viewer.dims.current_step[0] == z
        cy, cx = viewer.camera.center[-2:]
        assert y * VOXEL[1] <= cy <= (y + sy) * VOXEL[1]
        assert x * VOXEL[2] <= cx <= (x + sx) * VOXEL[2]
        # the world point under the slider is the box's section
        assert viewer.dims.point[0] == pytest.approx(z * VOXEL[0])


def test_query_target_is_pure(project):
    viewer = _model(dview.build_layers(project))
    before = (tuple(viewer.dims.current_step), tuple(viewer.camera.center))
    target = dview.query_target(viewer, np.array([[2, 10, 20, 8, 8]]), 0, VOXEL)
    assert (tuple(viewer.dims.current_step), tuple(viewer.camera.center)) == before
    assert target.z == 2 and target.center == (13.5 * VOXEL[1], 23.5 * VOXEL[2]) and target.zoom > 0


def test_round_choice(project):
    assert dview.pick_round(project) == 0
    with pytest.raises(DataError, match="no queries.csv"):
        dview.pick_round(project, 3)
    (project / "round_000" / "answers.npz").write_bytes(b"")
    assert dview.pick_round(project) == 0  # nothing open: the latest round


def test_missing_napari_is_one_line(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "napari":
            raise ImportError("no napari")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(SystemExit, match=r"pip install 'dualstream\[viewer\]'"):
        dview._import_napari()


def test_main_reports_a_user_error_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        dview.main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dualstream-view: error:") and "\n" not in err


def test_empty_queries_lists_boxes_without_foreground(project):
    from dualstream.project.queries import QueryTable

    queries = QueryTable.read(project / "round_000" / "queries.csv")
    data = np.zeros(SHAPE, np.uint8)
    data[0, 3, 3] = 1  # inside query 5's box (z=0, y 0:8, x 0:8)
    data[0, 20, 30] = 1  # outside every box
    assert dview.empty_queries(data, queries) == [21, 12]


def test_lazy_volumes_without_ndim_are_wrapped(project):
    """A directory of PNG sections opens as a lazy array without ``ndim``: napari still gets an array."""
    from PIL import Image

    sections = project / "sections"
    sections.mkdir()
    stack = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 251).astype(np.uint8)
    for z, section in enumerate(stack):
        Image.fromarray(section).save(sections / f"s{z:02d}.png")
    info = json.loads((project / "project.json").read_text())
    info["image"] = str(sections)
    (project / "project.json").write_text(json.dumps(info))
    image = _model(dview.build_layers(project)).layers["image"]
    assert not hasattr(open_volume(str(sections)).data, "ndim")  # the case this test is for
    assert image.data.ndim == 3 and image.data.shape == SHAPE
    np.testing.assert_array_equal(image.data[2], stack[2])
