"""What a suggested round writes beside queries.csv: patches.h5, neuroglancer.json, why.png."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from dualstream.errors import DataError
from dualstream.project.outputs import (
    chosen_ranks,
    neuroglancer_source,
    neuroglancer_state,
    plot_why,
    upsample_masks,
    write_round_outputs,
)
from dualstream.volume import open_volume

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
P, F = 4, 2  # pool patch (pool-grid pixels) and downsampling factor: boxes are 8 x 8 input voxels


@pytest.fixture
def volume(tmp_path):
    """A non-square (z=3, y=20, x=30) uint16 image with distinct values everywhere, in HDF5."""
    data = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    path = tmp_path / "img.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=data)
    return open_volume(f"{path}:raw", voxel_size=(40.0, 8.0, 4.0)), data


def _round(tmp_path, volume, uncertainty, **kw):
    vol, _ = volume
    boxes = np.array([[2, 10, 20, P * F, P * F], [0, 0, 4, P * F, P * F], [1, 12, 0, P * F, P * F]], dtype=np.int64)
    query_ids = np.array([17, 3, 9])
    predicted = np.zeros((3, P, P), dtype=np.uint8)
    predicted[0, 0, 1] = 1  # pool pixel (0, 1) -> input voxels y 0:2, x 2:4 of box 0
    m = 12
    typicality = np.linspace(0.0, 1.0, m)
    chosen = np.zeros(m, dtype=bool)
    chosen[[1, 5, 7]] = True
    round_dir = tmp_path / "round_004"
    round_dir.mkdir()
    paths = write_round_outputs(
        round_dir, vol, query_ids, boxes, np.array([0.9, 0.5, float("nan")]), predicted, F,
        uncertainty, typicality, chosen, vol.source, vol.voxel_size, **kw,
    )
    return paths, boxes, query_ids


def test_patches_hold_the_volume_boxes_and_upsampled_masks(tmp_path, volume):
    paths, boxes, query_ids = _round(tmp_path, volume, np.linspace(1, 0, 12))
    _, data = volume
    with h5py.File(paths["patches"]) as f:
        assert f["query_id"][:].tolist() == query_ids.tolist()
        assert f["query_id"].dtype == np.int64
        assert f["image"].dtype == np.uint16
        for k, (z, y, x, sy, sx) in enumerate(boxes.tolist()):
            np.testing.assert_array_equal(f["image"][k], data[z, y : y + sy, x : x + sx])
        pred = f["predicted"][:]
        assert pred.dtype == np.uint8 and pred.shape == (3, P * F, P * F)
        assert pred[0, 0:2, 2:4].all() and pred.sum() == F * F
        assert f.attrs["round"] == 4


def test_neuroglancer_state_is_json_in_x_y_z_order(tmp_path, volume):
    paths, boxes, query_ids = _round(tmp_path, volume, np.linspace(1, 0, 12))
    state = json.loads(paths["neuroglancer"].read_text())
    # voxel size (z, y, x) = (40, 8, 4) nm: Neuroglancer's x is the 4 nm axis.
    assert list(state["dimensions"]) == ["x", "y", "z"]
    assert state["dimensions"]["x"] == [pytest.approx(4e-9), "m"]
    assert state["dimensions"]["z"] == [pytest.approx(40e-9), "m"]
    image, ann = state["layers"]
    assert image["type"] == "image" and "://" in image["source"]
    assert ann["type"] == "annotation"
    assert len(ann["annotations"]) == len(query_ids)
    first = ann["annotations"][0]
    assert first["type"] == "axis_aligned_bounding_box"
    assert first["pointA"] == [20, 10, 2] and first["pointB"] == [28, 18, 3]  # x, y, z
    assert first["description"].startswith("rank 1, id 17, utility 0.9")
    assert ann["annotations"][2]["description"] == "rank 3, id 9, utility nan"
    assert state["position"] == [24.0, 14.0, 2.5]


def test_neuroglancer_source_placeholders(tmp_path):
    url, note = neuroglancer_source(str(tmp_path / "vol.zarr/raw/s0"))
    assert url == "zarr://http://localhost:8000/vol.zarr/raw/s0" and str(tmp_path) in note
    url, _ = neuroglancer_source(str(tmp_path / "vol.n5"))
    assert url.startswith("n5://http://localhost:8000/vol.n5")
    url, note = neuroglancer_source(str(tmp_path / "img.h5:raw"))
    assert url == "precomputed://http://localhost:8000/img" and "img.h5" in note


def test_neuroglancer_state_rejects_bad_boxes():
    with pytest.raises(DataError, match="expected shape"):
        neuroglancer_state([1, 2], np.zeros((2, 4)), [0.0, 0.0], "a.h5", (1, 1, 1))


def test_why_png_normal_and_cold_start(tmp_path, volume):
    paths, _, _ = _round(tmp_path, volume, np.linspace(1, 0, 12))
    assert paths["why"].read_bytes()[:8] == PNG_MAGIC
    cold = tmp_path / "cold"
    cold.mkdir()
    paths, _, _ = _round(cold, volume, np.full(12, np.nan))
    assert paths["why"].read_bytes()[:8] == PNG_MAGIC
    # neither score: still a figure, not a crash
    out = plot_why(tmp_path / "none.png", np.full(5, np.nan), np.full(5, np.nan), np.array([0, 1]), 0)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob("**/.*.tmp"))  # atomic writes leave no temporaries


def test_chosen_ranks_follow_query_order():
    mask = np.array([False, True, False, True])
    assert chosen_ranks(mask, [30, 10], None).tolist() == [1, 3]
    assert chosen_ranks(mask, [30, 10], np.array([0, 10, 20, 30])).tolist() == [3, 1]
    with pytest.raises(DataError, match="not among the candidates"):
        chosen_ranks(mask, [31], np.array([0, 10, 20, 30]))


def test_candidate_ids_must_cover_the_queries(tmp_path, volume):
    with pytest.raises(DataError):
        _round(tmp_path, volume, np.linspace(1, 0, 12), candidate_ids=np.arange(12))


def test_mask_size_must_match_the_boxes(tmp_path, volume):
    vol, _ = volume
    with pytest.raises(DataError, match="do not match"):
        write_round_outputs(
            tmp_path, vol, np.array([1]), np.array([[0, 0, 0, 8, 8]]), np.array([1.0]),
            np.zeros((1, 4, 4), np.uint8), 3, np.zeros(2), np.zeros(2), np.array([True, False]), "x.h5", (1, 1, 1),
        )


def test_box_outside_the_volume_is_a_data_error(tmp_path, volume):
    vol, _ = volume
    with pytest.raises(DataError, match="outside the volume"):
        write_round_outputs(
            tmp_path, vol, np.array([1]), np.array([[0, 16, 0, 8, 8]]), np.array([1.0]),
            np.zeros((1, 4, 4), np.uint8), 2, np.zeros(2), np.zeros(2), np.array([True, False]), "x.h5", (1, 1, 1),
        )


def test_upsample_is_nearest_by_factor():
    up = upsample_masks(np.array([[[0, 1], [1, 0]]]), 3)
    assert up.shape == (1, 6, 6) and up.dtype == np.uint8
    assert up[0, :3, 3:].all() and not up[0, :3, :3].any()
