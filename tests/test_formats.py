"""Pins the lab formats of dualstream.volume: every writer read back voxel for voxel, box reads,
OME-Zarr axes/units, N5's x, y, z order, lazy TIFF, and ``dualstream-info``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dualstream.errors import DataError
from dualstream.info import main as info_main
from dualstream.volume import NOT_RECORDED, open_volume, spec_path, write_volume

VOXEL = (40.0, 5.0, 5.0)


def _pattern(shape=(3, 40, 48), dtype=np.uint8) -> np.ndarray:
    """Distinct along every axis, so a swapped or flipped axis changes the array."""
    z, y, x = np.indices(shape)
    return ((z * 97 + y * 7 + x * 3) % 251).astype(dtype)


def _sections_dir(tmp_path: Path, arr: np.ndarray) -> str:
    d = tmp_path / "sections"
    d.mkdir()
    for z, sec in enumerate(arr):
        tifffile.imwrite(d / f"s{z:03d}.tif", sec)
    return str(d)


# name -> (spec under tmp_path, write_volume kwargs); None = written by the test itself
FORMATS = {
    "hdf5": ("v.h5:raw", {}),
    "tiff": ("v.tif", {}),
    "sections": (None, {}),
    "zarr-v2": ("v2.zarr", {"zarr_format": 2}),
    "zarr-v3": ("v3.zarr", {"zarr_format": 3}),
    "zarr-v2-group": ("g2.zarr/grp/raw", {"zarr_format": 2}),
    "zarr-v3-group": ("g3.zarr/raw", {"zarr_format": 3}),
    "ome-zarr-v2": ("img2.ome.zarr", {"zarr_format": 2}),
    "ome-zarr-v3": ("img3.ome.zarr", {"zarr_format": 3}),
    "n5": ("v.n5/raw", {}),
}


def _written(tmp_path: Path, name: str, arr: np.ndarray) -> tuple[str, tuple | None]:
    spec, kwargs = FORMATS[name]
    if spec is None:  # a directory of sections records no voxel size: it is given
        return _sections_dir(tmp_path, arr), VOXEL
    spec = str(tmp_path / spec)
    write_volume(spec, arr, VOXEL, **kwargs)
    return spec, None


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_reads_back_what_was_written(tmp_path, name):
    arr = _pattern()
    spec, given = _written(tmp_path, name, arr)
    vol = open_volume(spec, given)
    assert vol.shape == (3, 40, 48)
    assert vol.dtype == np.uint8
    assert np.array_equal(vol.read(), arr)
    assert vol.voxel_size == VOXEL
    assert vol.voxel_size_from != NOT_RECORDED
    assert np.array_equal(vol.section(2), arr[2])
    for box in [(0, 3, 0, 40, 0, 48), (1, 3, 5, 17, 30, 48), (2, 3, 39, 40, 0, 1), (1, 1, 0, 4, 0, 4)]:
        z0, z1, y0, y1, x0, x1 = box
        got = vol.read_box(*box)
        assert got.shape == (z1 - z0, y1 - y0, x1 - x0)
        assert np.array_equal(got, arr[z0:z1, y0:y1, x0:x1])
    # numpy-style indexing is the same on every format (steps, negative indices)
    for key in [(slice(None, None, -1), 3, slice(-5, None, -2)), (1, slice(2, 30, 3)), (-1,)]:
        assert np.array_equal(vol.data[key], arr[key])
    # nothing temporary is left beside what was written
    assert not [p.name for p in tmp_path.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def test_read_box_outside_the_volume_is_a_data_error(tmp_path):
    spec = str(tmp_path / "v.zarr")
    write_volume(spec, _pattern(), VOXEL)
    vol = open_volume(spec)
    with pytest.raises(DataError, match=r"v.zarr: box \(z 0:4, y 0:40, x 0:48\) is not inside .* \(3, 40, 48\)"):
        vol.read_box(0, 4, 0, 40, 0, 48)
    with pytest.raises(DataError, match="not inside"):
        vol.read_box(0, 1, 10, 5, 0, 48)


def test_zarr_format_flag_writes_v2_or_v3(tmp_path):
    write_volume(tmp_path / "a.zarr", _pattern(), VOXEL, zarr_format=2)
    write_volume(tmp_path / "b.zarr", _pattern(), VOXEL, zarr_format=3)
    assert (tmp_path / "a.zarr" / ".zarray").is_file() and not (tmp_path / "a.zarr" / "zarr.json").exists()
    assert (tmp_path / "b.zarr" / "zarr.json").is_file() and not (tmp_path / "b.zarr" / ".zarray").exists()
    assert open_volume(tmp_path / "a.zarr").format == "zarr v2"
    assert open_volume(tmp_path / "b.zarr").format == "zarr v3"


def test_rewriting_a_store_replaces_it(tmp_path):
    spec = tmp_path / "v.zarr"
    write_volume(spec, _pattern(), VOXEL)
    write_volume(spec, _pattern((2, 8, 9)) + 1, (1, 2, 3))
    vol = open_volume(spec)
    assert vol.shape == (2, 8, 9) and vol.voxel_size == (1.0, 2.0, 3.0)
    assert np.array_equal(vol.read(), _pattern((2, 8, 9)) + 1)


def test_zarr_plain_array_resolution_attribute_and_none(tmp_path):
    import zarr

    a = zarr.create_array(store=str(tmp_path / "r.zarr"), shape=(2, 4, 5), dtype="u1", attributes={"resolution": [30, 6, 4]})
    a[...] = 1
    assert open_volume(tmp_path / "r.zarr").voxel_size == (30.0, 6.0, 4.0)
    write_volume(tmp_path / "n.zarr", _pattern())  # no voxel size recorded
    vol = open_volume(tmp_path / "n.zarr", role="data.labels")
    assert vol.voxel_size == (1.0, 1.0, 1.0) and vol.voxel_size_from == NOT_RECORDED


def test_zarr_group_needs_a_name_when_it_holds_several_arrays(tmp_path):
    write_volume(f"{tmp_path}/g.zarr/raw", _pattern(), VOXEL)
    write_volume(f"{tmp_path}/g.zarr/labels/mito", _pattern() > 100, VOXEL)
    with pytest.raises(DataError, match=r"2 arrays .*labels/mito.*raw.*name one"):
        open_volume(tmp_path / "g.zarr", role="data.image")
    with pytest.raises(DataError, match=r"no array or group 'nope'"):
        open_volume(f"{tmp_path}/g.zarr/nope")
    mito = open_volume(f"{tmp_path}/g.zarr/labels/mito")
    assert mito.dtype == np.uint8 and np.array_equal(mito.read(), (_pattern() > 100).astype(np.uint8))


# --- OME-Zarr: axes by name, highest resolution, units ------------------------------------------------


def _ome_group(path: Path, arrays: dict[str, np.ndarray], multiscale: dict, version: str = "0.4"):
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    for name, arr in arrays.items():
        group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape)[...] = arr
    group.attrs["multiscales"] = [{"version": version, **multiscale}]


def test_ome_zarr_micrometres_singleton_channel_and_highest_resolution(tmp_path):
    arr = _pattern()
    czyx = arr[None]  # a singleton channel axis first
    low = czyx[:, :, ::2, ::2]
    axes = [{"name": "c", "type": "channel"}] + [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    _ome_group(
        tmp_path / "img.ome.zarr",
        {"s0": czyx, "s1": low},
        {
            "axes": axes,
            "datasets": [
                {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.04, 0.005, 0.006]}]},
                {"path": "s1", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.04, 0.01, 0.012]}]},
            ],
        },
    )
    vol = open_volume(tmp_path / "img.ome.zarr")
    assert vol.shape == (3, 40, 48)
    assert np.array_equal(vol.read(), arr)
    assert vol.voxel_size == pytest.approx((40.0, 5.0, 6.0))
    assert vol.format == "ome-zarr 0.4 (zarr v2)" and "level 's0'" in vol.voxel_size_from
    # a named level takes its own scale from the image's metadata
    level1 = open_volume(f"{tmp_path}/img.ome.zarr/s1")
    assert level1.shape == (3, 20, 24) and level1.voxel_size == pytest.approx((40.0, 10.0, 12.0))
    assert np.array_equal(level1.read_box(0, 3, 2, 5, 1, 4), low[0, :, 2:5, 1:4])


def test_ome_zarr_axes_mapped_by_name_and_2d_image(tmp_path):
    arr = _pattern((1, 6, 7))[0]
    axes = [{"name": "y", "type": "space", "unit": "angstrom"}, {"name": "x", "type": "space", "unit": "angstrom"}]
    _ome_group(tmp_path / "yx.zarr", {"0": arr}, {"axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [40.0, 50.0]}]}]})
    vol = open_volume(tmp_path / "yx.zarr")
    assert vol.shape == (1, 6, 7) and np.array_equal(vol.section(0), arr)
    assert vol.voxel_size == pytest.approx((5.0, 4.0, 5.0))  # angstrom -> nm; 2D: z taken as x
    # x before y in the array: the view transposes by name
    xzy = _pattern((3, 4, 5)).transpose(2, 0, 1)
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "xzy"]
    _ome_group(tmp_path / "xzy.zarr", {"0": xzy}, {"axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [3.0, 30.0, 4.0]}]}]})
    vol = open_volume(tmp_path / "xzy.zarr")
    assert vol.shape == (3, 4, 5) and vol.voxel_size == (30.0, 4.0, 3.0)
    assert np.array_equal(vol.read(), _pattern((3, 4, 5)))
    assert np.array_equal(vol.read_box(1, 3, 0, 2, 2, 5), _pattern((3, 4, 5))[1:3, 0:2, 2:5])


def test_ome_zarr_several_channels_is_a_data_error(tmp_path):
    axes = [{"name": "c", "type": "channel"}] + [{"name": a, "type": "space"} for a in "zyx"]
    _ome_group(tmp_path / "rgb.zarr", {"0": np.zeros((3, 2, 4, 4), np.uint8)}, {"axes": axes, "datasets": [{"path": "0"}]})
    with pytest.raises(DataError, match="axis 'c' has 3 entries"):
        open_volume(tmp_path / "rgb.zarr")


# --- N5: x, y, z on disk ---------------------------------------------------------------------------------------


def test_n5_stores_x_y_z_and_reads_z_y_x(tmp_path):
    write_volume(f"{tmp_path}/v.n5/raw", _pattern(), VOXEL, chunks=(2, 16, 32))
    attrs = json.loads((tmp_path / "v.n5" / "raw" / "attributes.json").read_text())
    assert attrs["dimensions"] == [48, 40, 3] and attrs["blockSize"] == [32, 16, 2]
    assert attrs["resolution"] == [5.0, 5.0, 40.0]
    vol = open_volume(tmp_path / "v.n5")  # the container holds one dataset: no name needed
    assert vol.chunks == (2, 16, 32) and np.array_equal(vol.read(), _pattern())


def test_n5_written_by_hand_pins_axis_order_and_units(tmp_path):
    """An N5 dataset written from the spec (no TensorStore): x varies fastest in a block."""
    arr = _pattern((2, 3, 5), np.uint16) * 100  # z, y, x
    ds = tmp_path / "hand.n5" / "em" / "raw"
    (ds / "0" / "0").mkdir(parents=True)
    (tmp_path / "hand.n5" / "attributes.json").write_text('{"n5": "2.0.0"}')
    (ds / "attributes.json").write_text(json.dumps({
        "dimensions": [5, 3, 2], "blockSize": [5, 3, 2], "dataType": "uint16", "compression": {"type": "raw"},
        "pixelResolution": {"dimensions": [0.004, 0.006, 0.05], "unit": "um"},
    }))
    header = np.array([0, 3], ">u2").tobytes() + np.array([5, 3, 2], ">u4").tobytes()
    (ds / "0" / "0" / "0").write_bytes(header + arr.astype(">u2").tobytes())  # C order of z, y, x = x fastest
    vol = open_volume(f"{tmp_path}/hand.n5/em/raw")
    assert vol.shape == (2, 3, 5)
    assert np.array_equal(vol.read(), arr)
    assert vol.voxel_size == pytest.approx((50.0, 6.0, 4.0))
    assert np.array_equal(vol.read_box(1, 2, 1, 3, 2, 5), arr[1:2, 1:3, 2:5])


def test_n5_several_datasets_need_a_name(tmp_path):
    write_volume(f"{tmp_path}/c.n5/a", _pattern(), VOXEL)
    write_volume(f"{tmp_path}/c.n5/b", _pattern(), VOXEL)
    with pytest.raises(DataError, match=r"2 N5 datasets \(a, b\); name one"):
        open_volume(tmp_path / "c.n5")
    with pytest.raises(DataError, match=r"no N5 dataset 'z' \(has: a, b\)"):
        open_volume(f"{tmp_path}/c.n5/z")


# --- TIFF: lazy, with its metadata --------------------------------------------------------------------------


def test_multipage_tiff_is_memory_mapped_not_loaded(tmp_path):
    write_volume(tmp_path / "v.tif", _pattern(), VOXEL)
    vol = open_volume(tmp_path / "v.tif")
    assert isinstance(vol.data.array, np.memmap)
    assert vol.format == "imagej tiff"


def test_compressed_tiff_is_read_page_by_page(tmp_path):
    arr = _pattern((4, 40, 48), np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", arr, compression="zlib", photometric="minisblack")
    vol = open_volume(tmp_path / "z.tif", role="data.labels")
    assert not isinstance(vol.data.array, np.ndarray)  # a zarr view over the pages
    assert vol.chunks is not None
    assert np.array_equal(vol.read_box(1, 3, 2, 9, 4, 40), arr[1:3, 2:9, 4:40])
    assert vol.voxel_size_from == NOT_RECORDED


def test_ome_tiff_physical_size(tmp_path):
    arr = _pattern((2, 8, 9)).astype(np.int32)  # not an ImageJ dtype: written as OME-TIFF
    write_volume(tmp_path / "o.tif", arr, (33.0, 4.0, 3.0))
    vol = open_volume(tmp_path / "o.tif")
    assert vol.format == "ome-tiff" and vol.voxel_size == pytest.approx((33.0, 4.0, 3.0))
    assert np.array_equal(vol.read(), arr)
    tifffile.imwrite(tmp_path / "um.ome.tif", arr, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.003, "PhysicalSizeY": 0.004, "PhysicalSizeZ": 0.033})  # unit default: um
    assert open_volume(tmp_path / "um.ome.tif").voxel_size == pytest.approx((33.0, 4.0, 3.0))


def test_section_directory_reads_only_the_box_z_range(tmp_path, monkeypatch):
    from dualstream.formats import images

    arr = _pattern()
    vol = open_volume(_sections_dir(tmp_path, arr), VOXEL)
    read = []
    real = images.read_2d
    monkeypatch.setattr(images, "read_2d", lambda p: read.append(p.name) or real(p))
    assert np.array_equal(vol.read_box(1, 2, 3, 9, 4, 8), arr[1:2, 3:9, 4:8])
    assert read == ["s001.tif"]


# --- specs, writer errors -----------------------------------------------------------------------------------------


def test_spec_path_of_containers():
    assert spec_path("a/b.zarr/raw/s0") == Path("a/b.zarr")
    assert spec_path("a/img.ome.zarr") == Path("a/img.ome.zarr")
    assert spec_path("a/b.n5/raw") == Path("a/b.n5")
    assert spec_path("a/b.h5:raw") == Path("a/b.h5")


def test_writer_errors(tmp_path):
    with pytest.raises(DataError, match="cannot write this format"):
        write_volume(tmp_path / "v.npy", _pattern())
    with pytest.raises(DataError, match="name the dataset"):
        write_volume(tmp_path / "v.h5", _pattern())
    with pytest.raises(DataError, match="name the dataset"):
        write_volume(tmp_path / "v.n5", _pattern())
    with pytest.raises(DataError, match="3D"):
        write_volume(tmp_path / "v.zarr", np.zeros((2, 2, 2, 2)))


# --- dualstream-info ---------------------------------------------------------------------------------------------


def test_info_text(tmp_path, capsys):
    write_volume(f"{tmp_path}/v.h5:raw", _pattern(), VOXEL, chunks=(1, 20, 24))
    info_main([f"{tmp_path}/v.h5:raw"])
    out = capsys.readouterr().out
    assert "format:      hdf5" in out
    assert "shape:       3 x 40 x 48 (z, y, x)" in out
    assert "dtype:       uint8" in out
    assert "voxel size:  40 x 5 x 5 nm (z, y, x), attribute 'voxel_size'" in out
    assert "chunks:      1 x 20 x 24 (z, y, x)" in out
    assert "size:        5760 bytes" in out
    write_volume(tmp_path / "bare.tif", _pattern())
    info_main([str(tmp_path / "bare.tif")])
    assert "voxel size:  1 x 1 x 1 nm (z, y, x), not recorded: assuming 1 nm" in capsys.readouterr().out


@pytest.mark.parametrize("spec, fmt", [("v.n5/raw", "n5"), ("v.ome.zarr", "ome-zarr 0.5 (zarr v3)")])
def test_info_json(tmp_path, capsys, spec, fmt):
    write_volume(tmp_path / spec, _pattern(), VOXEL)
    info_main([str(tmp_path / spec), "--json"])
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    info = json.loads(out)
    assert info["format"] == fmt
    assert info["shape"] == [3, 40, 48] and info["dtype"] == "uint8"
    assert info["voxel_size_nm"] == [40.0, 5.0, 5.0] and info["nbytes"] == 3 * 40 * 48
    assert info["chunks"] == [1, 40, 48]


def test_info_bad_path_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        info_main([str(tmp_path / "missing.zarr")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dualstream-info: error: ") and "missing.zarr" in err
    (tmp_path / "junk.h5").write_bytes(b"not hdf5" * 8)
    with pytest.raises(SystemExit) as exc:
        info_main([str(tmp_path / "junk.h5")])
    assert exc.value.code == 2 and "junk.h5" in capsys.readouterr().err


def test_tiff_stack_written_without_photometric_keeps_its_sections(tmp_path):
    arr = _pattern((4, 8, 9))
    tifffile.imwrite(tmp_path / "planar.tif", arr)  # tifffile stores this as planar samples, axes "SYX"
    vol = open_volume(tmp_path / "planar.tif", VOXEL)
    assert vol.shape == (4, 8, 9) and np.array_equal(vol.read(), arr)


def test_writing_into_a_zarr_array_as_if_a_group_is_a_data_error(tmp_path):
    write_volume(tmp_path / "a.zarr", _pattern(), VOXEL)
    with pytest.raises(DataError, match="a.zarr: cannot add 'raw'.*must be a Zarr group"):
        write_volume(f"{tmp_path}/a.zarr/raw", _pattern(), VOXEL)
    assert np.array_equal(open_volume(tmp_path / "a.zarr").read(), _pattern())  # left as it was
