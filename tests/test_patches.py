"""Pins dualstream.patches: tiling, downsampling, intensity scaling, patch extraction, section splits, build_pools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from dualstream.errors import ConfigError, EmptyPoolError, ShapeMismatchError
from dualstream.patches import (
    PatchPool,
    build_pools,
    downsample,
    extract_patches,
    normalise_intensity,
    split_sections,
    tile_origins,
)
from dualstream.volume import Volume


def _v(arr: np.ndarray, vs=(1.0, 1.0, 1.0), source="mem") -> Volume:
    return Volume(data=arr, voxel_size=tuple(float(x) for x in vs), source=source)


@pytest.fixture(scope="module")
def sample_cfg():
    from dualstream.cli import _register_resolvers

    _register_resolvers()
    return OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "data" / "sample_mito.yaml")


# --- tile_origins / downsample / normalise ------------------------------------------------------


@pytest.mark.parametrize(
    "shape, patch, stride, expected",
    [
        ((384, 512), 64, 64, 6 * 8),
        ((10, 10), 4, 4, 4),  # 0, 4 per axis (8 would overflow)
        ((10, 10), 4, 2, 16),  # 0, 2, 4, 6 per axis
        ((4, 4), 4, 4, 1),
        ((3, 10), 4, 4, 0),  # section shorter than a patch
        ((9, 5), 3, 3, 3 * 1),
    ],
)
def test_tile_origins_counts(shape, patch, stride, expected):
    corners = tile_origins(shape, patch, stride)
    assert len(corners) == expected
    for y, x in corners:
        assert 0 <= y <= shape[0] - patch and 0 <= x <= shape[1] - patch


def test_tile_origins_order_and_values():
    assert tile_origins((10, 9), 4, 4) == [(0, 0), (0, 4), (4, 0), (4, 4)]
    assert tile_origins((6, 5), 3, 2) == [(0, 0), (0, 2), (2, 0), (2, 2)]


def test_downsample_block_mean():
    a = np.array(
        [
            [0, 2, 4, 6, 99],
            [2, 4, 6, 8, 99],
            [1, 1, 0, 0, 99],
            [1, 1, 0, 4, 99],
            [99, 99, 99, 99, 99],
        ],
        dtype=np.float32,
    )
    out = downsample(a, 2)
    np.testing.assert_allclose(out, [[2.0, 6.0], [1.0, 1.0]])
    assert out.dtype == np.float32
    assert downsample(a, 1) is a
    np.testing.assert_allclose(downsample(a[:3, :3], 3), [[20 / 9]])


def test_normalise_uint8():
    out = normalise_intensity(np.array([[0, 51, 255]], np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=1e-7)


def test_normalise_uint16():
    out = normalise_intensity(np.array([0, 65535, 13107], np.uint16))
    np.testing.assert_allclose(out, [0.0, 1.0, 0.2], atol=1e-6)


def test_normalise_int8_uses_full_range():
    np.testing.assert_allclose(normalise_intensity(np.array([-128, 127], np.int8)), [0.0, 1.0])


def test_normalise_float_clipped():
    out = normalise_intensity(np.array([-0.5, 0.0, 0.25, 1.0, 3.0], np.float64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.25, 1.0, 1.0])


# --- extract_patches ----------------------------------------------------------------------------


def test_extract_patches_threshold_ignore_and_origins():
    image = np.zeros((2, 4, 4), np.uint8)
    image[1] = 255
    image[0, 0, 0] = 51
    labels = np.zeros((2, 4, 4), np.uint8)
    labels[0, 0, 0] = 127  # not > 127: background
    labels[0, 0, 1] = 128  # foreground
    labels[1, 3, 3] = 255
    ignore = np.zeros((2, 4, 4), np.uint8)
    ignore[0, 0:2, 2:4] = 3  # the whole (0, 0, 2) tile
    ignore[1, 2, 0] = 1  # one pixel of the (1, 2, 0) tile
    pool = extract_patches(
        _v(image, (30, 5, 5), "img"), _v(labels), [0, 1], patch_size=2, label_threshold=127, ignore=_v(ignore)
    )
    assert isinstance(pool, PatchPool)
    assert len(pool) == 8 and pool.patch_size == 2
    assert pool.images.dtype == np.float32 and pool.labels.dtype == np.uint8
    np.testing.assert_array_equal(
        pool.origins,
        [[0, 0, 0], [0, 0, 2], [0, 2, 0], [0, 2, 2], [1, 0, 0], [1, 0, 2], [1, 2, 0], [1, 2, 2]],
    )
    assert pool.origins.dtype == np.int64
    np.testing.assert_array_equal(pool.labels[0], [[0, 1], [0, 0]])
    assert pool.labels[1:7].sum() == 0
    np.testing.assert_array_equal(pool.labels[7], [[0, 0], [0, 1]])
    np.testing.assert_allclose(pool.ignore_share, [0, 1, 0, 0, 0, 0, 0.25, 0])
    np.testing.assert_allclose(pool.images[0], [[0.2, 0], [0, 0]], atol=1e-7)
    np.testing.assert_allclose(pool.images[4:], 1.0)
    assert pool.voxel_size == (30.0, 5.0, 5.0)
    assert pool.source == "img"
    np.testing.assert_allclose(pool.origins_nm[5], [30.0, 0.0, 10.0])
    np.testing.assert_array_equal(pool.is_artifact(0.5), [0, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(pool.is_artifact(0.25), [0, 1, 0, 0, 0, 0, 1, 0])


def test_extract_patches_default_threshold_is_zero():
    labels = np.array([[[0, 1], [2, 0]]], np.uint8)
    pool = extract_patches(_v(np.zeros((1, 2, 2), np.uint8)), _v(labels), [0], patch_size=2)
    np.testing.assert_array_equal(pool.labels[0], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(pool.ignore_share, [0.0])


def test_extract_patches_downsampled():
    # 1 section 8x8, factor 2 -> 4x4, patch 2 -> 4 tiles
    image = np.zeros((1, 8, 8), np.uint8)
    image[0, 0:2, 0:2] = [[0, 255], [255, 255]]  # block mean 0.75
    labels = np.zeros((1, 8, 8), np.uint8)
    labels[0, 0:2, 0:2] = [[1, 1], [0, 0]]  # half coverage -> foreground (>= 0.5)
    labels[0, 0:2, 2:4] = [[1, 0], [0, 0]]  # quarter -> background
    ignore = np.zeros((1, 8, 8), np.uint8)
    ignore[0, 4:8, 4:6] = 1  # bottom-right tile: left half of its 4x4 voxels
    ignore[0, 0, 4] = 1  # top-right tile: one block at coverage 1/4
    pool = extract_patches(
        _v(image, (40, 4, 6)), _v(labels), [0], patch_size=2, factor=2, ignore=_v(ignore)
    )
    assert len(pool) == 4
    np.testing.assert_array_equal(pool.origins, [[0, 0, 0], [0, 0, 2], [0, 2, 0], [0, 2, 2]])
    assert pool.voxel_size == (40.0, 8.0, 12.0)
    np.testing.assert_allclose(pool.origins_nm[3], [0.0, 16.0, 24.0])
    np.testing.assert_allclose(pool.images[0], [[0.75, 0], [0, 0]])
    np.testing.assert_array_equal(pool.labels[0], [[1, 0], [0, 0]])
    # top-right tile: one of 4 downsampled pixels has ignore coverage 0.25 -> share 0.0625
    np.testing.assert_allclose(pool.ignore_share, [0.0, 0.0625, 0.0, 0.5])


def test_extract_patches_stride_overlap():
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    pool = extract_patches(_v(image), _v(np.zeros_like(image)), [0], patch_size=2, stride=1)
    assert len(pool) == 9
    np.testing.assert_allclose(pool.images[4] * 255, [[5, 6], [9, 10]], rtol=1e-6)


def test_extract_patches_patch_larger_than_section():
    image = np.zeros((1, 6, 6), np.uint8)
    with pytest.raises(EmptyPoolError, match="patch_size=8"):
        extract_patches(_v(image), _v(image), [0], patch_size=8)
    with pytest.raises(EmptyPoolError):  # fits before downsampling, not after
        extract_patches(_v(image), _v(image), [0], patch_size=4, factor=2)


def test_extract_patches_no_sections():
    image = np.zeros((1, 6, 6), np.uint8)
    with pytest.raises(EmptyPoolError):
        extract_patches(_v(image), _v(image), [], patch_size=2)


def test_extract_patches_misaligned_labels():
    with pytest.raises(ShapeMismatchError):
        extract_patches(_v(np.zeros((1, 4, 4))), _v(np.zeros((1, 4, 5))), [0], patch_size=2)
    with pytest.raises(ShapeMismatchError):
        extract_patches(
            _v(np.zeros((1, 4, 4))), _v(np.zeros((1, 4, 4))), [0], patch_size=2, ignore=_v(np.zeros((2, 4, 4)))
        )


# --- split_sections -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, frac, n_test",
    [(12, 0.25, 3), (10, 0.25, 3), (10, 0.1, 1), (7, 0.5, 4), (2, 0.01, 1), (5, 0.79, 4)],
)
def test_split_sections_holds_out_last_ceil(n, frac, n_test):
    pool, test = split_sections(n, frac)
    assert test == list(range(n - n_test, n))
    assert pool == list(range(n - n_test))


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_split_sections_bad_fraction(frac):
    with pytest.raises(ConfigError, match="test_fraction"):
        split_sections(10, frac)


def test_split_sections_holds_out_everything():
    with pytest.raises(ConfigError, match="holds out all"):
        split_sections(1, 0.5)
    with pytest.raises(ConfigError):
        split_sections(4, 0.9)  # ceil(3.6) = 4 = all


# --- build_pools --------------------------------------------------------------------------------


def test_build_pools_sample(sample_cfg):
    pool, test = build_pools(sample_cfg)
    assert len(pool) == 9 * 48 == 432
    assert len(test) == 3 * 48 == 144
    assert pool.images.shape == (432, 64, 64)
    assert test.labels.shape == (144, 64, 64)
    assert sorted(set(pool.origins[:, 0].tolist())) == list(range(9))
    assert sorted(set(test.origins[:, 0].tolist())) == [9, 10, 11]
    assert pool.voxel_size == (5.0, 10.0, 10.0)  # from the file's voxel_size attribute
    assert set(np.unique(pool.labels).tolist()) == {0, 1}
    assert 0.0 <= pool.images.min() and pool.images.max() <= 1.0
    np.testing.assert_array_equal(pool.ignore_share, 0.0)
    np.testing.assert_array_equal(pool.origins[:2], [[0, 0, 0], [0, 0, 64]])


def test_build_pools_section_slice(sample_cfg):
    cfg = sample_cfg.copy()
    cfg.sections = "0:4"
    pool, test = build_pools(cfg)
    # 4 sections, ceil(0.25 * 4) = 1 held out
    assert len(pool) == 3 * 48 and len(test) == 48
    assert sorted(set(pool.origins[:, 0].tolist())) == [0, 1, 2]
    assert set(test.origins[:, 0].tolist()) == {3}


def test_build_pools_section_list_and_downsample(sample_cfg):
    cfg = sample_cfg.copy()
    cfg.sections = [1, 5, 7, 11]
    cfg.downsample = 2
    cfg.patch_size = 32
    pool, test = build_pools(cfg)
    # 384x512 -> 192x256 -> 6x8 tiles of 32
    assert len(pool) == 3 * 48 and len(test) == 48
    assert sorted(set(pool.origins[:, 0].tolist())) == [1, 5, 7]
    assert set(test.origins[:, 0].tolist()) == {11}
    assert pool.voxel_size == (5.0, 20.0, 20.0)


def test_build_pools_sections_out_of_range(sample_cfg):
    cfg = sample_cfg.copy()
    cfg.sections = [0, 12]
    with pytest.raises(ConfigError, match="12"):
        build_pools(cfg)


def test_build_pools_test_image_without_labels(sample_cfg):
    cfg = sample_cfg.copy()
    cfg.test_image = cfg.image
    with pytest.raises(ConfigError, match="test_labels"):
        build_pools(cfg)


def test_build_pools_separate_test_volume(sample_cfg):
    cfg = sample_cfg.copy()
    cfg.sections = "0:2"
    cfg.test_image = cfg.image
    cfg.test_labels = cfg.labels
    pool, test = build_pools(cfg)
    assert len(pool) == 2 * 48  # no hold-out from the selected sections
    assert len(test) == 12 * 48  # the whole test volume


def test_build_pools_patch_too_small(sample_cfg):
    cfg = sample_cfg.copy()
    cfg.patch_size = 4
    with pytest.raises(ConfigError, match="patch_size"):
        build_pools(cfg)
