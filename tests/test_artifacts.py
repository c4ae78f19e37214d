"""Artifact injection: how many, which, marked for the annotator, reproducible, and its errors; the harder
benchmark (artifact_seed, sections/clustered layouts, partial extent, mild strength, foreign tissue)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.ndimage import gaussian_filter

from dualstream.artifacts import (
    ARTIFACTS,
    KINDS,
    MILD,
    MILD_RANGES,
    artifact_rng,
    corrupt_proposals_from_config,
    foreign_tissue,
    inject_artifacts,
    inject_from_config,
)
from dualstream.errors import ConfigError
from dualstream.oracle import SimulatedAnnotator
from dualstream.patches import PatchPool, build_pools
from dualstream.sample import sample_path


def _pool(n=40, p=32):
    rng = np.random.default_rng(0)
    images = (0.3 + 0.4 * rng.random((n, p, p))).astype(np.float32)
    return PatchPool(
        images=images, labels=np.zeros((n, p, p), np.uint8), ignore_share=np.zeros(n, np.float32),
        origins=np.zeros((n, 3), np.int64), voxel_size=(5.0, 10.0, 10.0),
    )


def test_fraction_marked_and_skipped_by_the_annotator():
    pool = _pool()
    out = inject_artifacts(pool, 0.25, np.random.default_rng(1))
    hit = out.is_artifact()
    assert hit.sum() == 10
    assert np.all(out.ignore_share[hit] == 1.0) and np.all(out.ignore_share[~hit] == 0.0)
    assert np.array_equal(out.images[~hit], pool.images[~hit])  # clean patches untouched
    assert not np.allclose(out.images[hit], pool.images[hit], atol=0.05)
    assert out.images.min() >= 0 and out.images.max() <= 1
    kinds = out.meta["artifact_kind"]
    assert sorted(set(kinds[hit])) == sorted(ARTIFACTS)  # 10 defects cycle through all 7 kinds
    assert set(kinds[~hit]) == {""}
    answers = SimulatedAnnotator(out.labels, out.ignore_share).annotate(np.flatnonzero(hit)[:3])
    assert len(answers.skipped) == 3 and len(answers.labeled) == 0
    assert pool.ignore_share.sum() == 0  # the input pool is not modified


def test_same_seed_same_corruption():
    a = inject_artifacts(_pool(), 0.2, np.random.default_rng(5))
    b = inject_artifacts(_pool(), 0.2, np.random.default_rng(5))
    c = inject_artifacts(_pool(), 0.2, np.random.default_rng(6))
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.is_artifact(), c.is_artifact())


@pytest.mark.parametrize("kind", sorted(ARTIFACTS))
def test_each_defect_changes_the_patch(kind):
    out = inject_artifacts(_pool(4), 0.5, np.random.default_rng(0), kinds=[kind])
    hit = out.is_artifact()
    assert hit.sum() == 2 and set(out.meta["artifact_kind"][hit]) == {kind}
    assert np.abs(out.images[hit] - _pool(4).images[hit]).mean() > 0.02


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="inject_artifacts"):
        inject_artifacts(_pool(), 1.0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="unknown"):
        inject_artifacts(_pool(), 0.1, np.random.default_rng(0), kinds=["coffee_stain"])


# --- The harder benchmark: artifact_seed, layouts, extent, strength, foreign tissue -----------------

SEVEN = ["missing", "saturation", "noise", "blur", "fold", "stripe", "charging"]


def _checksum(pool):
    h = hashlib.sha256(pool.images.tobytes())
    h.update("|".join(pool.meta["artifact_kind"]).encode())
    return h.hexdigest()[:16]


def _grid_pool(n_sections=6, rows=3, cols=4, p=32):
    """``n_sections`` sections of ``rows x cols`` tiles (origins z, y, x on a p-pixel grid)."""
    rng = np.random.default_rng(0)
    n = n_sections * rows * cols
    z, y, x = np.meshgrid(np.arange(n_sections), np.arange(rows) * p, np.arange(cols) * p, indexing="ij")
    images = (0.3 + 0.4 * rng.random((n, p, p))).astype(np.float32)
    return PatchPool(
        images=gaussian_filter(images, (0, 1, 1)), labels=np.zeros((n, p, p), np.uint8), ignore_share=np.zeros(n, np.float32),
        origins=np.stack([z.ravel(), y.ravel(), x.ravel()], 1).astype(np.int64), voxel_size=(5.0, 10.0, 10.0),
    )


@pytest.fixture(scope="module")
def sample_pool():
    data = OmegaConf.create(
        {"image": f"{sample_path()}:image", "labels": f"{sample_path()}:mitochondrion", "label_threshold": 127,
         "test_fraction": 0.25, "patch_size": 64}
    )
    return build_pools(data)[0]  # 9 sections x 48 tiles


def test_scattered_default_is_bit_identical_to_the_original_benchmark(sample_pool):
    # Checksums computed with the code before data.artifact_layout/extent/strength existed (commit 16605fa).
    assert _checksum(inject_artifacts(_pool(), 0.25, artifact_rng(3))) == "ab616eaa59ec08fb"
    assert _checksum(inject_from_config(_pool(), {"inject_artifacts": 0.25}, seed=3)) == "ab616eaa59ec08fb"
    data = {"inject_artifacts": 0.1, "artifact_kinds": SEVEN, "artifact_seed": None, "artifact_layout": "scattered",
            "artifact_extent": [1.0, 1.0], "artifact_strength": "strong"}
    assert _checksum(inject_from_config(sample_pool, data, seed=0)) == "5c9c35a637e2fb1b"


def test_data_configs_carry_the_default_keys(sample_pool):
    conf = Path(__file__).parents[1] / "conf" / "data"
    data = OmegaConf.load(conf / "sample_mito.yaml")
    assert {"artifact_seed", "artifact_layout", "artifact_extent", "artifact_strength"} <= set(data)
    data.inject_artifacts = 0.1  # the bundled defaults, switched on: the original benchmark
    out = inject_from_config(sample_pool, OmegaConf.masked_copy(data, [k for k in data if "artifact" in k]), seed=0)
    assert _checksum(out) == "5c9c35a637e2fb1b"


def test_artifact_seed_fixes_the_pool_across_run_seeds():
    pool = _grid_pool()
    a = inject_from_config(pool, {"inject_artifacts": 0.2, "artifact_seed": 4}, seed=1)
    b = inject_from_config(pool, {"inject_artifacts": 0.2, "artifact_seed": 4}, seed=2)
    c = inject_from_config(pool, {"inject_artifacts": 0.2}, seed=4)
    d = inject_from_config(pool, {"inject_artifacts": 0.2}, seed=1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.images, c.images)  # artifact_seed=4 is run seed 4
    assert not np.array_equal(a.is_artifact(), d.is_artifact())


@pytest.mark.parametrize("fraction, n_sections", [(0.2, 1), (0.3, 2), (0.25, 2)])  # 72 tiles: 14.4 -> 12, 21.6 -> 24, 18 -> tie -> 24
def test_sections_layout_corrupts_whole_sections_with_one_draw_each(fraction, n_sections):
    pool = _grid_pool()
    out = inject_from_config(pool, {"inject_artifacts": fraction, "artifact_layout": "sections"}, seed=0)
    hit, kinds, section = out.is_artifact(), out.meta["artifact_kind"], pool.origins[:, 0]
    per_section = [hit[section == s] for s in np.unique(section)]
    assert all(h.all() or not h.any() for h in per_section)  # whole sections only
    assert sum(h.all() for h in per_section) == n_sections
    for s in np.unique(section[hit]):
        assert len(set(kinds[section == s])) == 1  # one kind per section
    assert len(set(kinds[hit])) == n_sections  # kinds in turn across sections
    assert np.array_equal(out.images[~hit], pool.images[~hit])


def test_sections_share_defect_parameters_but_not_noise():
    pool = _grid_pool()
    out = inject_from_config(pool, {"inject_artifacts": 0.2, "artifact_layout": "sections", "artifact_kinds": ["missing"]}, seed=0)
    tiles = out.images[out.is_artifact()]
    assert np.ptp(tiles.mean(axis=(1, 2))) < 0.005  # one grey level for the whole section
    assert not np.allclose(tiles[0], tiles[1])  # each tile its own detector noise
    folds = inject_from_config(pool, {"inject_artifacts": 0.2, "artifact_layout": "sections", "artifact_kinds": ["fold"]}, seed=0)
    band = folds.images[folds.is_artifact()] <= 0.12  # the fold band sits at the same place in every tile
    assert band[0].any() and all(np.array_equal(band[0], b) for b in band)


def test_sections_layout_needs_two_sections_and_keeps_one_clean():
    with pytest.raises(ConfigError, match="artifact_layout"):
        inject_from_config(_grid_pool(n_sections=1), {"inject_artifacts": 0.3, "artifact_layout": "sections"}, seed=0)
    out = inject_from_config(_grid_pool(n_sections=2), {"inject_artifacts": 0.9, "artifact_layout": "sections"}, seed=0)
    assert out.is_artifact().sum() == 12


def test_clustered_layout_makes_blocks_of_neighbours():
    pool = _grid_pool(n_sections=4, rows=6, cols=6)
    out = inject_from_config(pool, {"inject_artifacts": 0.25, "artifact_layout": "clustered"}, seed=0)
    hit = out.is_artifact()
    assert hit.sum() == 36  # the share exactly
    grid = hit.reshape(4, 6, 6)
    padded = np.pad(grid, ((0, 0), (1, 1), (1, 1)))
    neighbours = padded[:, :-2, 1:-1] | padded[:, 2:, 1:-1] | padded[:, 1:-1, :-2] | padded[:, 1:-1, 2:]
    assert (neighbours & grid).sum() >= 0.9 * grid.sum()  # corrupted tiles touch corrupted tiles
    assert len(set(out.meta["artifact_kind"][hit])) >= 2  # several blocks, kinds in turn


@pytest.mark.parametrize("kind", ["noise", "missing", "foreign"])
def test_partial_extent_leaves_the_rest_untouched(kind):
    pool = _grid_pool()
    lo, hi = 0.2, 0.8
    out = inject_from_config(pool, {"inject_artifacts": 0.5, "artifact_extent": [lo, hi], "artifact_kinds": [kind]}, seed=0)
    hit = out.is_artifact()
    assert np.all(out.ignore_share[hit] == 1.0)  # partial tiles are still skipped
    extent = out.meta["artifact_extent"]
    assert np.all((extent[hit] >= lo) & (extent[hit] <= hi)) and np.all(extent[~hit] == 0)
    p2 = pool.patch_size**2
    changed = (out.images != pool.images).reshape(len(pool), -1).sum(1) / p2
    assert np.all(changed[hit] <= extent[hit] + 0.5 / p2)  # nothing outside the region changed
    assert np.all(changed[hit] >= extent[hit] - 0.05)  # (a few pixels may match by chance)
    assert np.all((changed[hit] > lo - 0.05) & (changed[hit] < hi + 0.05))
    assert np.ptp(extent[hit]) > 0.2  # drawn, not fixed


def test_mild_ranges_lie_inside_the_encoder_augmentations():
    aug = OmegaConf.load(Path(__file__).parents[1] / "conf" / "encoder" / "simclr.yaml").module.augment
    r = MILD_RANGES
    for key in ("contrast", "crease_darkening"):
        assert 1 - aug.contrast <= r[key][0] <= r[key][1] <= 1 + aug.contrast
    for key in ("brightness", "brighten", "halo_amplitude", "stripe_amplitude"):
        assert -aug.brightness <= r[key][0] <= r[key][1] <= aug.brightness
    assert np.exp(-aug.gamma) <= r["gamma"][0] <= r["gamma"][1] <= np.exp(aug.gamma)
    assert 0 < r["noise_sd"][0] <= r["noise_sd"][1] <= aug.max_noise
    assert 0 < r["blur_sigma"][0] <= r["blur_sigma"][1] <= aug.max_sigma
    assert 1 < r["foreign_zoom"][0] <= r["foreign_zoom"][1] <= 1 / aug.min_scale


def test_mild_defects_stay_within_their_ranges():
    x = gaussian_filter(0.3 + 0.4 * np.random.default_rng(0).random((48, 48)), 1).astype(np.float64)
    r = MILD_RANGES
    for seed in range(20):
        rng = lambda: np.random.default_rng(seed)  # noqa: E731
        resid = MILD["noise"](x, rng()) - x
        assert r["noise_sd"][0] - 0.004 <= resid.std() <= r["noise_sd"][1] + 0.004
        blurred = MILD["blur"](x, rng())
        sigmas = np.linspace(0.5, 3.0, 51)
        best = sigmas[np.argmin([np.abs(gaussian_filter(x, s) - blurred).max() for s in sigmas])]
        assert r["blur_sigma"][0] - 0.05 <= best <= r["blur_sigma"][1] + 0.05
        faded = MILD["missing"](x, rng())
        assert r["contrast"][0] - 1e-6 <= faded.std() / x.std() <= r["contrast"][1] + 1e-6
        assert abs(faded.mean() - x.mean()) <= 0.1 + 1e-6
        assert np.all(np.abs(MILD["stripe"](x, rng()) / x - 1) <= r["stripe_amplitude"][1] + 1e-6)
        halo = MILD["charging"](x, rng()) - x
        assert halo.min() >= 0 and halo.max() <= r["halo_amplitude"][1] + 1e-6
        ratio = MILD["fold"](x, rng()) / x
        creased = ratio != 1
        assert creased.any() and creased.mean() < 0.15 and np.ptp(ratio[creased]) < 1e-9
        assert r["crease_darkening"][0] <= ratio[creased][0] <= r["crease_darkening"][1]
        bright = MILD["saturation"](x, rng())
        assert np.all(bright >= x) and np.all(bright <= np.clip(x + 0.1, 0, 1) ** 0.75 + 1e-6)


def test_foreign_tissue_is_new_content_in_range(sample_pool):
    pool = sample_pool
    out = inject_from_config(pool, {"inject_artifacts": 0.1, "artifact_kinds": ["foreign"]}, seed=0)
    hit = np.flatnonzero(out.is_artifact())
    assert set(out.meta["artifact_kind"][hit]) == {"foreign"} and len(hit) == 43
    flat = pool.images.reshape(len(pool), -1)
    for i in hit:
        nearest = np.abs(flat - out.images[i].ravel()).mean(axis=1).min()
        assert nearest > 0.02  # not a copy of any original tile
    lo, hi = pool.images.min(), pool.images.max()
    assert out.images[hit].min() >= lo - 1e-6 and out.images[hit].max() <= hi + 1e-6  # interpolation adds no new intensities
    # both variants: zoomed in (smoother than the tissue) and a coarser 2x2 mosaic (sharper)
    grad = lambda im: np.abs(np.diff(im, axis=-1)).mean(axis=(-2, -1))  # noqa: E731
    g_new, g_typical = grad(out.images[hit]), np.median(grad(pool.images))
    assert (g_new < 0.8 * g_typical).any() and (g_new > 1.2 * g_typical).any()


def test_foreign_tissue_never_uses_its_own_tile():
    sources = np.stack([np.full((16, 16), v, np.float32) for v in (0.1, 0.9)])
    for seed in range(10):
        out = foreign_tissue(sources[0], np.random.default_rng(seed), sources=sources, index=0)
        assert np.allclose(out, 0.9)  # the only other tile


def test_separability_mild_partial_foreign_are_harder(sample_pool):
    """A robust z-score on pixel statistics flags the original defects, not the harder ones."""

    def flagged(images):
        gy, gx = np.gradient(images, axis=(1, 2))
        s = np.stack([images.mean((1, 2)), images.std((1, 2)), np.hypot(gy, gx).mean((1, 2))], 1)
        med = np.median(s, 0)
        z = np.abs(s - med) / (1.4826 * np.median(np.abs(s - med), 0))
        return (z > 3.5).any(1)

    assert flagged(sample_pool.images).mean() < 0.02  # the clean pool is not flagged
    recall = {}
    for name, keys in {
        "strong": {},
        "mild": {"artifact_strength": "mild"},
        "partial": {"artifact_extent": [0.2, 0.8], "artifact_strength": "mild"},
        "foreign": {"artifact_kinds": ["foreign"]},
    }.items():
        out = inject_from_config(sample_pool, {"inject_artifacts": 0.1, "artifact_seed": 0, **keys}, seed=0)
        hit = out.is_artifact()
        recall[name] = flagged(out.images)[hit].mean()
    assert recall["strong"] >= 0.95
    for name in ("mild", "partial", "foreign"):
        assert recall[name] < 0.8, (name, recall)


def test_proposals_take_the_scattered_keys_and_reject_grouped_layouts():
    @dataclass
    class Props:  # the two fields of dualstream.proposals.Proposals it touches (importing that one pulls in torch)
        crops: np.ndarray
        ignore_share: np.ndarray

    n, c = 12, 16
    crops = np.random.default_rng(0).random((n, 2, c, c)).astype(np.float32)
    props = Props(crops=crops, ignore_share=np.zeros(n, np.float32))
    out = corrupt_proposals_from_config(props, {"inject_artifacts": 0.25, "artifact_strength": "mild", "artifact_extent": [0.5, 0.5]}, 0)
    hit = out.ignore_share == 1
    assert hit.sum() == 3 and np.array_equal(out.crops[:, 1], crops[:, 1])  # the detector's mask channel is kept
    assert np.array_equal(out.crops[~hit], crops[~hit])
    for layout in ("sections", "clustered"):
        with pytest.raises(ConfigError, match="data.artifact_layout"):
            corrupt_proposals_from_config(props, {"inject_artifacts": 0.25, "artifact_layout": layout}, 0)


@pytest.mark.parametrize(
    "keys, key",
    [
        ({"artifact_layout": "rows"}, "data.artifact_layout"),
        ({"artifact_extent": [0.8, 0.2]}, "data.artifact_extent"),
        ({"artifact_extent": [0.0, 0.5]}, "data.artifact_extent"),
        ({"artifact_extent": "half"}, "data.artifact_extent"),
        ({"artifact_strength": "medium"}, "data.artifact_strength"),
        ({"artifact_seed": -1}, "data.artifact_seed"),
        ({"artifact_seed": "zero"}, "data.artifact_seed"),
        ({"artifact_kinds": ["coffee_stain"]}, "data.artifact_kinds"),
        ({"artifact_kinds": "foreign"}, "data.artifact_kinds"),
        ({"artifact_kind": ["foreign"]}, "data.artifact_kind"),  # a typo must not silently do nothing
        ({"inject_artifacts": 1.5}, "data.inject_artifacts"),
    ],
)
def test_bad_artifact_keys_are_config_errors_naming_the_key(keys, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        inject_from_config(_grid_pool(), {"inject_artifacts": 0.1, **keys}, seed=0)


def test_every_kind_is_known():
    assert set(KINDS) == set(ARTIFACTS) | {"foreign"} and set(MILD) == set(ARTIFACTS)
