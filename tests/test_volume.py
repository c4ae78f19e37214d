"""Pins dualstream.volume: every reader (HDF5, PNG directory, TIFF, single image), voxel sizes, and its errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from dualstream.errors import DataError, ShapeMismatchError
from dualstream.volume import SectionStack, Volume, check_aligned, open_volume


def _vol(shape: tuple[int, int, int]) -> np.ndarray:
    return (np.arange(np.prod(shape)) % 251).astype(np.uint8).reshape(shape)


def _write_png(path, arr: np.ndarray, mode: str | None = None) -> None:
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)


# --- HDF5 -------------------------------------------------------------------------------------


def test_hdf5_named_dataset(tmp_path):
    raw, lab = _vol((3, 4, 5)), np.ones((3, 4, 5), np.uint8)
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = raw
        f["lab"] = lab
    v = open_volume(f"{path}:raw")
    assert isinstance(v, Volume)
    assert v.shape == (3, 4, 5)
    assert len(v) == 3
    np.testing.assert_array_equal(v.section(1), raw[1])
    np.testing.assert_array_equal(v.read(), raw)
    assert v.source == f"{path}:raw"
    assert v.voxel_size == (1.0, 1.0, 1.0)  # no attribute, no argument
    np.testing.assert_array_equal(open_volume(f"{path}:lab").read(), lab)


def test_hdf5_nested_dataset_name(tmp_path):
    path = tmp_path / "v.hdf5"
    raw = _vol((2, 3, 4))
    with h5py.File(path, "w") as f:
        f.create_group("grp")["raw"] = raw
    np.testing.assert_array_equal(open_volume(f"{path}:grp/raw").read(), raw)
    # one dataset, even inside a group: the bare file name suffices
    np.testing.assert_array_equal(open_volume(path).read(), raw)


def test_hdf5_single_dataset_without_name(tmp_path):
    raw = _vol((2, 6, 7))
    path = tmp_path / "only.h5"
    with h5py.File(path, "w") as f:
        f["whatever"] = raw
    v = open_volume(str(path))
    assert v.shape == (2, 6, 7)
    np.testing.assert_array_equal(v.read(), raw)


def test_hdf5_several_datasets_without_name_lists_them(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f["alpha"] = _vol((1, 2, 2))
        f["beta"] = _vol((1, 2, 2))
    with pytest.raises(DataError) as err:
        open_volume(str(path), role="data.labels")
    msg = str(err.value)
    assert "2 datasets" in msg and "alpha" in msg and "beta" in msg
    assert "data.labels" in msg


def test_hdf5_missing_named_dataset_lists_existing(tmp_path):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = _vol((1, 2, 2))
        f["mito"] = _vol((1, 2, 2))
    with pytest.raises(DataError) as err:
        open_volume(f"{path}:nope")
    msg = str(err.value)
    assert "'nope'" in msg and "raw" in msg and "mito" in msg


def test_hdf5_missing_file(tmp_path):
    path = tmp_path / "absent.h5"
    with pytest.raises(DataError) as err:
        open_volume(f"{path}:raw", role="data.image")
    assert str(path) in str(err.value)
    assert "data.image" in str(err.value)


def test_hdf5_garbage_file(tmp_path):
    path = tmp_path / "bad.h5"
    path.write_bytes(b"this is not hdf5 at all" * 10)
    with pytest.raises(DataError) as err:
        open_volume(f"{path}:raw")
    assert str(path) in str(err.value)


def test_hdf5_voxel_size_attribute_file_and_dataset(tmp_path):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f.attrs["voxel_size"] = (5.0, 10.0, 10.0)
        f["a"] = _vol((2, 3, 3))
        d = f.create_dataset("b", data=_vol((2, 3, 3)))
        d.attrs["voxel_size"] = (40, 4, 4)  # dataset attribute wins over the file's
        d2 = f.create_dataset("c", data=_vol((2, 3, 3)))
        d2.attrs["resolution"] = (30, 6, 6)
    assert open_volume(f"{path}:a").voxel_size == (5.0, 10.0, 10.0)
    assert open_volume(f"{path}:b").voxel_size == (40.0, 4.0, 4.0)
    assert open_volume(f"{path}:c").voxel_size == (5.0, 10.0, 10.0)  # voxel_size (file) beats resolution
    # an explicit voxel size overrides any attribute
    v = open_volume(f"{path}:a", voxel_size=[8, 2, 3])
    assert v.voxel_size == (8.0, 2.0, 3.0)
    assert all(isinstance(x, float) for x in v.voxel_size)


def test_hdf5_resolution_attribute(tmp_path):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("c", data=_vol((2, 3, 3))).attrs["resolution"] = (30, 6, 6)
    assert open_volume(f"{path}:c").voxel_size == (30.0, 6.0, 6.0)


def test_voxel_size_wrong_length(tmp_path):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f["a"] = _vol((2, 3, 3))
    with pytest.raises(DataError, match="3 values"):
        open_volume(f"{path}:a", voxel_size=[1, 2])


def test_hdf5_2d_dataset_is_one_section(tmp_path):
    path = tmp_path / "v.h5"
    arr = _vol((1, 4, 6))[0]
    with h5py.File(path, "w") as f:
        f["a"] = arr
    v = open_volume(f"{path}:a")
    assert v.shape == (1, 4, 6)
    np.testing.assert_array_equal(v.section(0), arr)


def test_hdf5_wrong_dimensionality(tmp_path):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.zeros((2, 2, 2, 2), np.uint8)
    with pytest.raises(DataError, match="3D"):
        open_volume(f"{path}:a")


# --- image directories, TIFF, single images -----------------------------------------------------


def test_png_directory_sorted_by_name(tmp_path):
    d = tmp_path / "sections"
    d.mkdir()
    secs = {name: np.full((4, 5), value, np.uint8) for name, value in [("b.png", 20), ("a.png", 10), ("c.png", 30)]}
    for name, arr in secs.items():
        _write_png(d / name, arr)
    (d / "notes.txt").write_text("ignored")
    v = open_volume(d)
    assert v.shape == (3, 4, 5)
    assert isinstance(v.data, SectionStack)
    assert [f.name for f in v.data.files] == ["a.png", "b.png", "c.png"]
    assert [int(v.section(z)[0, 0]) for z in range(3)] == [10, 20, 30]
    np.testing.assert_array_equal(v.read()[:, 0, 0], [10, 20, 30])
    # lazy stack indexing: (z, y-slice) and slices
    np.testing.assert_array_equal(v.data[1, 0:2], np.full((2, 5), 20, np.uint8))
    np.testing.assert_array_equal(v.data[1:, 0, 0], [20, 30])


def test_grey_alpha_png_keeps_grey_channel(tmp_path):
    d = tmp_path / "masks"
    d.mkdir()
    grey = np.array([[0, 255, 0], [255, 0, 127]], np.uint8)
    alpha = np.full_like(grey, 200)
    for i in range(2):
        la = np.stack([grey if i == 0 else 255 - grey, alpha], axis=-1)
        Image.fromarray(la, mode="LA").save(d / f"s{i}.png")
    with Image.open(d / "s0.png") as im:
        assert im.mode == "LA"  # the fixture really is grey+alpha
    v = open_volume(d)
    assert v.shape == (2, 2, 3)
    np.testing.assert_array_equal(v.section(0), grey)
    np.testing.assert_array_equal(v.section(1), 255 - grey)


def test_multipage_tiff(tmp_path):
    arr = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5) * 7
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, arr, photometric="minisblack")
    v = open_volume(path)
    assert v.shape == (4, 6, 5)
    np.testing.assert_array_equal(v.read(), arr)
    assert v.read().dtype == np.uint16


def test_single_png_is_one_section(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = tmp_path / "one.png"
    _write_png(path, arr)
    v = open_volume(path, voxel_size=(50, 5, 5))
    assert v.shape == (1, 3, 4)
    assert len(v) == 1
    np.testing.assert_array_equal(v.section(0), arr)
    assert v.voxel_size == (50.0, 5.0, 5.0)


def test_single_rgb_png_keeps_first_channel(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 11, 22, 33
    path = tmp_path / "rgb.png"
    _write_png(path, rgb)
    v = open_volume(path)
    assert v.shape == (1, 3, 4)
    assert np.all(v.section(0) == 11)


def test_single_rgb_tiff_keeps_first_channel(tmp_path):
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 11, 22, 33
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    v = open_volume(path)
    assert v.shape == (1, 6, 5)
    assert np.all(v.section(0) == 11)


# --- errors -------------------------------------------------------------------------------------


def test_missing_path_names_it(tmp_path):
    path = tmp_path / "no_such_dir"
    with pytest.raises(DataError) as err:
        open_volume(path, role="data.labels")
    assert str(path) in str(err.value)
    assert "data.labels" in str(err.value)


def test_unreadable_png_names_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x00\x01garbage, not a png\xff" * 5)
    with pytest.raises(DataError) as err:
        open_volume(path)
    assert str(path) in str(err.value)


def test_unreadable_png_in_directory_names_file(tmp_path):
    d = tmp_path / "secs"
    d.mkdir()
    _write_png(d / "a.png", np.zeros((4, 4), np.uint8))
    (d / "b.png").write_bytes(b"garbage bytes" * 3)
    with pytest.raises(DataError) as err:
        open_volume(d)
    assert "b.png" in str(err.value)


def test_sections_of_different_shapes(tmp_path):
    d = tmp_path / "secs"
    d.mkdir()
    _write_png(d / "s00.png", np.zeros((4, 5), np.uint8))
    _write_png(d / "s01.png", np.zeros((4, 5), np.uint8))
    _write_png(d / "s02.png", np.zeros((6, 5), np.uint8))
    with pytest.raises(ShapeMismatchError) as err:
        open_volume(d)
    msg = str(err.value)
    assert "s02.png" in msg and "s00.png" in msg
    assert "6x5" in msg and "4x5" in msg
    assert isinstance(err.value, DataError)  # a ShapeMismatchError is a DataError


def test_directory_without_images(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as err:
        open_volume(d, role="data.image")
    assert str(d) in str(err.value)
    assert "data.image" in str(err.value)


def test_unknown_format(tmp_path):
    path = tmp_path / "vol.npy"
    np.save(path, np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="unknown volume format"):
        open_volume(path)


def test_check_aligned(tmp_path):
    a = Volume(np.zeros((2, 4, 4)), (1.0, 1.0, 1.0), "img.h5:raw")
    b = Volume(np.zeros((2, 4, 4)), (1.0, 1.0, 1.0), "img.h5:lab")
    c = Volume(np.zeros((2, 4, 5)), (1.0, 1.0, 1.0), "other.h5:lab")
    check_aligned(a, b, "labels")  # same shape: no error
    with pytest.raises(ShapeMismatchError) as err:
        check_aligned(a, c, "labels")
    msg = str(err.value)
    assert "other.h5:lab" in msg and "img.h5:raw" in msg
    assert "(2, 4, 5)" in msg and "(2, 4, 4)" in msg


# --- intensity range (data-driven, once per volume) --------------------------------------------


@pytest.mark.parametrize(
    "arr, expected",
    [
        (np.array([[[0, 40, 250]]], np.uint8), (0.0, 255.0)),  # 8-bit spanning its range: dtype scaling
        (np.array([[[-100, 0, 120]]], np.int8), (-128.0, 127.0)),
        (np.array([[[0.0, 0.3, 1.0]]], np.float32), (0.0, 1.0)),  # floats in [0, 1] kept
    ],
)
def test_intensity_range_keeps_dtype_or_unit_range(arr, expected):
    from dualstream.volume import intensity_range

    assert intensity_range(Volume(arr, (1.0, 1.0, 1.0), "mem")) == expected


@pytest.mark.parametrize("dtype, high", [(np.uint16, 4095), (np.float32, 255.0), (np.uint8, 100)])
def test_intensity_range_from_the_data(dtype, high):
    from dualstream.volume import intensity_range

    arr = np.linspace(0, high, 3 * 40 * 40).reshape(3, 40, 40).astype(dtype)
    lo, hi = intensity_range(Volume(arr, (1.0, 1.0, 1.0), "mem"))
    assert 0 <= lo < 0.01 * high and 0.98 * high <= hi <= high


def test_intensity_range_configured_and_its_errors():
    from dualstream.errors import ConfigError
    from dualstream.volume import intensity_range

    vol = Volume(_vol((2, 4, 5)), (1.0, 1.0, 1.0), "mem")
    assert intensity_range(vol, [10, 200]) == (10.0, 200.0)
    for bad in ([200, 10], [1], ["a", 2]):
        with pytest.raises(ConfigError, match="data.intensity_range"):
            intensity_range(vol, bad)


def test_intensity_range_rejects_nan_and_constant():
    from dualstream.volume import intensity_range

    nan = np.ones((2, 4, 4), np.float32)
    nan[1, 0, :3] = np.nan
    with pytest.raises(DataError, match=r"nan.tif: 3 of 32 voxels .* NaN or Inf"):
        intensity_range(Volume(nan, (1.0, 1.0, 1.0), "nan.tif"))
    with pytest.raises(DataError, match="const.h5:raw: every sampled voxel of data.image is 7"):
        intensity_range(Volume(np.full((3, 4, 4), 7, np.uint16), (1.0, 1.0, 1.0), "const.h5:raw"))


def test_spec_path():
    from pathlib import Path

    from dualstream.volume import spec_path

    assert spec_path("a/b.h5:raw") == Path("a/b.h5")
    assert spec_path("a/b.h5") == Path("a/b.h5")
    assert spec_path("dir/of/pngs") == Path("dir/of/pngs")
