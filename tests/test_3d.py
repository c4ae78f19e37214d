"""Anisotropic 3D blocks (data.patch_depth > 1): extraction, split, networks, augmentation, pool
statistics, config checks, and the dense task's whole loop on the bundled sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dualstream.augment import EMAugment, gaussian_blur, intensity_jitter, random_dihedral, random_zflip
from dualstream.errors import ConfigError, EmptyPoolError
from dualstream.models.blocks3d import ConvEncoder3d, UNet3d
from dualstream.models.encoder import ContrastiveEncoder
from dualstream.models.networks import ConvEncoder, UNet
from dualstream.models.segmentation import SegmentationModule
from dualstream.patches import block_starts, build_pools, depth_keys, extract_patches, split_sections
from dualstream.streams.pixel_stats import pixel_statistics
from dualstream.streams.uncertainty import patch_uncertainty
from dualstream.volume import Volume

from conftest import compose_config


def _v(arr: np.ndarray, source: str = "mem") -> Volume:
    return Volume(data=arr, voxel_size=(40.0, 4.0, 4.0), source=source)


def _pattern(n_z: int = 8, size: int = 16) -> np.ndarray:
    """float32 ``(z, y, x)`` in [0, 1] whose every voxel differs: a patch's pixels name its origin."""
    z, y, x = np.meshgrid(np.arange(n_z), np.arange(size), np.arange(size), indexing="ij")
    return ((z * size * size + y * size + x) / (n_z * size * size)).astype(np.float32)


# --- extraction ------------------------------------------------------------------------------------


def test_blocks_hold_consecutive_sections_at_their_origins():
    img = _pattern()
    lab = np.zeros_like(img, dtype=np.uint8)
    lab[::2, :8] = 1  # even sections, top half
    ignore = np.zeros_like(lab)
    ignore[5] = 1  # one whole section is an artifact
    pool = extract_patches(_v(img), _v(lab), list(range(8)), patch_size=8, ignore=_v(ignore), depth=4)
    assert pool.images.shape == (2 * 4, 4, 8, 8) and pool.images.dtype == np.float32
    assert pool.labels.shape == (8, 4, 8, 8) and pool.depth == 4 and pool.patch_size == 8
    assert sorted({tuple(o) for o in pool.origins}) == [(z, y, x) for z in (0, 4) for y in (0, 8) for x in (0, 8)]
    for i, (z, y, x) in enumerate(pool.origins):
        np.testing.assert_array_equal(pool.images[i], img[z : z + 4, y : y + 8, x : x + 8])
        np.testing.assert_array_equal(pool.labels[i], lab[z : z + 4, y : y + 8, x : x + 8])
    # Section 5 is one of the 4 sections of every block starting at z = 4.
    np.testing.assert_allclose(pool.ignore_share, np.where(pool.origins[:, 0] == 4, 0.25, 0.0))


def test_stride_z_overlaps_blocks_and_depth_1_is_the_2d_pool():
    img = _pattern()
    lab = (img > 0.5).astype(np.uint8)
    pool = extract_patches(_v(img), _v(lab), list(range(8)), patch_size=16, depth=4, stride_z=2)
    assert pool.images.shape == (3, 4, 16, 16)
    assert pool.origins[:, 0].tolist() == [0, 2, 4]
    np.testing.assert_array_equal(pool.images[1], img[2:6])
    flat = extract_patches(_v(img), _v(lab), list(range(8)), patch_size=8)
    same = extract_patches(_v(img), _v(lab), list(range(8)), patch_size=8, depth=1, stride_z=5)
    assert flat.images.shape == (32, 8, 8) and flat.depth == 1
    np.testing.assert_array_equal(flat.images, same.images)
    np.testing.assert_array_equal(flat.origins, same.origins)


def test_block_starts_never_bridge_a_gap_in_the_selected_sections():
    assert block_starts(list(range(8)), 4) == [0, 4]
    assert block_starts(list(range(9)), 4) == [0, 4]  # a trailing partial block is dropped
    assert block_starts([0, 1, 2, 5, 6, 7], 3) == [0, 3]
    assert block_starts([0, 1, 3, 4], 3, stride_z=1) == []
    with pytest.raises(EmptyPoolError, match="patch_depth=3"):
        extract_patches(_v(_pattern()), None, [0, 1, 3, 4], patch_size=8, depth=3)


def test_split_holds_out_whole_blocks():
    assert split_sections(12, 0.25) == (list(range(9)), list(range(9, 12)))  # 2D: as before
    assert split_sections(12, 0.25, block=4) == (list(range(8)), list(range(8, 12)))
    assert split_sections(20, 0.2, block=4) == (list(range(16)), list(range(16, 20)))
    assert split_sections(20, 0.25, block=4) == (list(range(12)), list(range(12, 20)))  # 5 held out -> 2 blocks
    with pytest.raises(ConfigError, match="data.patch_depth=4"):
        split_sections(6, 0.25, block=4)


def test_depth_keys_are_checked():
    assert depth_keys(OmegaConf.create({})) == (1, None)
    assert depth_keys(OmegaConf.create({"patch_depth": 4, "stride_z": 2})) == (4, 2)
    with pytest.raises(ConfigError, match="data.patch_depth"):
        depth_keys(OmegaConf.create({"patch_depth": 0}))
    with pytest.raises(ConfigError, match="data.stride_z"):
        depth_keys(OmegaConf.create({"patch_depth": 4, "stride_z": 0}))
    with pytest.raises(ConfigError, match="data.inject_artifacts"):
        depth_keys(OmegaConf.create({"patch_depth": 4, "inject_artifacts": 0.1}))


def test_build_pools_on_the_sample_cuts_blocks_and_a_block_test_set():
    from dualstream.cli import _register_resolvers

    _register_resolvers()
    data = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "data" / "sample_mito.yaml")
    data.patch_depth, data.patch_size, data.downsample = 4, 32, 4  # 96 x 128 sections: 3 x 4 squares
    pool, test = build_pools(data)
    assert pool.images.shape == (2 * 12, 4, 32, 32) and pool.labels.shape == pool.images.shape
    assert test.images.shape == (12, 4, 32, 32)
    assert set(pool.origins[:, 0]) == {0, 4} and set(test.origins[:, 0]) == {8}


# --- networks --------------------------------------------------------------------------------------


def test_3d_unet_and_encoder_shapes():
    x = torch.rand(2, 1, 4, 16, 16)
    logits, bottleneck, last = UNet3d(width=4, depth=3).forward_features(x)
    assert logits.shape == (2, 1, 4, 16, 16) and bottleneck.shape == (2, 32, 4, 2, 2) and last.shape == (2, 4, 4, 16, 16)
    assert ConvEncoder3d(width=4, depth=4, embed_dim=8)(x).shape == (2, 8)
    enc = ContrastiveEncoder(width=4, embed_dim=8, ndim=3)
    assert isinstance(enc.backbone, ConvEncoder3d)
    emb = enc(x)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    # ndim defaults to the 2D networks
    assert isinstance(ContrastiveEncoder(width=4).backbone, ConvEncoder)
    assert isinstance(SegmentationModule(width=4).net, UNet)


def test_3d_segmentation_module_predicts_per_block_outputs():
    module = SegmentationModule(width=4, depth=2, ndim=3, mc_samples=3)
    module.eval()
    out = module.predict_step((torch.rand(2, 1, 4, 16, 16),), 0)
    assert out["probs"].shape == (2, 3, 4, 16, 16)
    assert out["features"].shape == (2, 16) and out["grad"].shape == (2, 5)
    with pytest.raises(ConfigError, match="model.module.ndim"):
        SegmentationModule(ndim=4)


# --- augmentation ----------------------------------------------------------------------------------


def _twins(b: int = 6, d: int = 4, size: int = 16) -> torch.Tensor:
    """Blocks whose ``d`` sections are the same image."""
    return torch.rand(b, 1, 1, size, size).expand(b, 1, d, size, size).contiguous()


def test_em_augment_gives_every_section_of_a_block_the_same_transform():
    torch.manual_seed(0)
    aug = EMAugment(min_scale=0.5, p_blur=1.0, max_sigma=1.5, p_noise=0.0, p_low_contrast=0.5, z_flip=True)
    x = _twins()
    out = aug(x)
    assert out.shape == x.shape
    for d in range(1, 4):
        torch.testing.assert_close(out[:, :, d], out[:, :, 0])
    assert not torch.allclose(out, x)  # it did transform something
    # Noise: one level per block, fresh values per voxel.
    noisy = EMAugment(min_scale=1.0, brightness=0, contrast=0, gamma=0, p_blur=0, p_noise=1.0, max_noise=0.05)(x)
    assert not torch.allclose(noisy[:, :, 1], noisy[:, :, 0])


def test_dihedral_and_zflip_move_image_and_mask_of_a_block_together():
    torch.manual_seed(1)
    x = torch.rand(8, 1, 4, 8, 8)
    y = (x > 0.5).float()
    xa, ya = random_dihedral(x, y)
    torch.testing.assert_close(ya, (xa > 0.5).float())
    for i in range(8):
        # One in-plane transform per block: found from section 0, it explains every section.
        candidates = [t for t in _dihedral_group(x[i, 0, 0]) if torch.equal(t(x[i, 0, 0]), xa[i, 0, 0])]
        assert candidates
        assert any(all(torch.equal(t(x[i, 0, d]), xa[i, 0, d]) for d in range(4)) for t in candidates)
    xz, yz = random_zflip(x, y)
    torch.testing.assert_close(yz, (xz > 0.5).float())
    flipped = [bool(torch.equal(xz[i], x[i].flip(-3))) for i in range(8)]
    assert all(flipped[i] or torch.equal(xz[i], x[i]) for i in range(8))


def _dihedral_group(img: torch.Tensor):
    for flip in (False, True):
        for k in range(4):
            yield lambda t, f=flip, k=k: torch.rot90(t.flip(-1) if f else t, k, dims=(-2, -1))


def test_blur_and_intensity_of_a_block_equal_the_2d_transform_of_each_section():
    x = torch.rand(3, 1, 4, 12, 12)
    sigma = torch.tensor([0.0, 0.8, 1.5])
    blurred = gaussian_blur(x, sigma)
    for d in range(4):
        torch.testing.assert_close(blurred[:, :, d], gaussian_blur(x[:, :, d], sigma))
    torch.manual_seed(2)
    twins = _twins(3)
    out = intensity_jitter(twins, 0.1, 0.3, 0.3)
    for d in range(1, 4):
        torch.testing.assert_close(out[:, :, d], out[:, :, 0])


# --- per-block statistics --------------------------------------------------------------------------


def test_pixel_statistics_of_a_block_of_one_repeated_section_equal_the_section_s():
    rng = np.random.default_rng(0)
    tiles = rng.random((5, 16, 16)).astype(np.float32)
    tiles[0] = 0.5  # constant: zero high-frequency share
    blocks = np.repeat(tiles[:, None], 3, axis=1)
    np.testing.assert_allclose(pixel_statistics(blocks), pixel_statistics(tiles), rtol=1e-9, atol=1e-12)
    # The statistics see every section, not the first one only.
    blocks[1, 2] = 0.0
    assert pixel_statistics(blocks)[1, 5] == pytest.approx(1 / 3 + 2 / 3 * pixel_statistics(tiles)[1, 5])


def test_uncertainty_reduces_over_all_voxels_of_a_block():
    probs = np.zeros((2, 1, 4, 8, 8), dtype=np.float32)
    probs[0, 0, 3, 2, 2] = 0.5  # one uncertain voxel, in the last section
    mean = patch_uncertainty(probs, "entropy", "mean")
    # p = 0 is clipped to 1e-7 (entropy ~2.5e-6 bits per voxel), hence the absolute tolerance.
    assert mean[0] == pytest.approx(1 / (4 * 8 * 8), abs=1e-5) and mean[1] < 1e-5
    top = patch_uncertainty(probs, "entropy", "topk_mean", topk=1 / 256)
    assert top[0] == pytest.approx(1.0, rel=1e-4)
    assert patch_uncertainty(probs, "entropy", "max")[0] == pytest.approx(1.0, rel=1e-4)


# --- configs and the whole loop --------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, match",
    [
        (["encoder=vae", "~screen_encoder"], "encoder=vae is 2D only"),
        ([], "for 3D blocks pass encoder=simclr '~screen_encoder'"),  # dualstream's default VAE/SimCLR pair
        (["encoder=simclr"], "screen_encoder is 2D only"),
        (["acquisition=random", "encoder=vae"], "encoder=vae is 2D only"),
        (["data.inject_artifacts=0.1"], "data.inject_artifacts"),
        (["data.stride_z=0"], "data.stride_z"),
        (["+encoder.module.ndim=3"], "encoder.module.ndim"),
    ],
)
def test_validate_rejects_what_3d_blocks_do_not_support(extra, match):
    from dualstream.validate import validate

    with pytest.raises(ConfigError, match=match):
        validate(compose_config(["data.patch_depth=4", "logger=none", *extra]), check_files=False)


def test_the_suggested_3d_fix_validates(tmp_path):
    """The fix the 3D error names (the 3D SimCLR alone) composes and validates with the default acquisition."""
    from dualstream.validate import validate

    cfg = compose_config(["data.patch_depth=4", "logger=none", "encoder=simclr", "~screen_encoder", f"paths.cache_dir={tmp_path}"])
    assert cfg.acquisition.name == "dualstream" and not cfg.get("screen_encoder")
    validate(cfg, check_files=False)


def test_demo3d_preset_validates(tmp_path):
    from dualstream.validate import validate

    cfg = compose_config(["experiment=demo3d", "logger=none", f"paths.cache_dir={tmp_path}"])
    assert cfg.data.patch_depth > 1
    validate(cfg, check_files=False)


@pytest.mark.slow
def test_dense_task_runs_end_to_end_on_3d_blocks(tmp_path):
    from dualstream.runner import run

    cfg = compose_config([
        "data.patch_depth=4", "data.patch_size=16", "data.downsample=2",
        "encoder.steps=2", "encoder.batch_size=8", "model.steps=2", "model.batch_size=2", "model.module.width=4",
        "loop.initial=2", "loop.batch=2", "loop.rounds=1",
        "acquisition=dualstream", "encoder=simclr", "~screen_encoder",  # the 3D SimCLR alone (the pair is 2D)
        "logger=none", "progress=false", "trainer.cpu_threads=1", f"paths.cache_dir={tmp_path / 'cache'}",
    ])
    results = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    records = saved["records"]
    assert [r["round"] for r in records] == [0, 1]
    assert [r["n_labeled"] for r in records] == [2, 4]
    assert all(r["score"] is not None and math.isfinite(r["score"]) and 0.0 <= r["score"] <= 1.0 for r in records)
    # 12 sections: 8 pool sections (two blocks of 4), 4 test sections; 192 x 256 px -> 12 x 16 squares.
    assert saved["pool_size"] == 2 * 12 * 16 and saved["test_size"] == 12 * 16
    assert len(results.records) == 2
