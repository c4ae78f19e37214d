"""The anchor baselines: foreground_random, uherding, tcm, pixel_veto, and the pixel statistics, on hand-checkable cases."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from dualstream.acquisition import REGISTRY, PoolView, acquire
from dualstream.acquisition.pixel_veto import robust_z
from dualstream.acquisition.typiclust import typiclust_acquisition
from dualstream.acquisition.uherding import uncertainty_weights
from dualstream.errors import ConfigError, DataError
from dualstream.streams.pixel_stats import STAT_NAMES, pixel_statistics
from test_acquisition_zoo import blob, check_contract, view_of  # the zoo's helpers, one copy

ANCHORS = ("foreground_random", "uherding", "tcm", "pixel_veto")


def test_anchors_registered_with_configs():
    conf = Path(__file__).resolve().parents[1] / "conf" / "acquisition"
    for name in ANCHORS:
        assert name in REGISTRY
        text = (conf / f"{name}.yaml").read_text()
        assert text.startswith("#") and f"name: {name}\n" in text and "params:" in text


# --- foreground_random --------------------------------------------------------------------------------


def fg_view(n=100, fg_items=range(0, 20), queried=(0, 1, 2)):
    fg = np.zeros(n)
    fg[list(fg_items)] = 0.3
    return view_of(np.zeros((n, 2)), queried=queried, foreground=fg)


def test_foreground_random_only_foreground_when_enough():
    view = fg_view()  # foreground candidates: 3..19 (17 of them)
    for seed in range(5):
        sel = acquire("foreground_random", view, 10, np.random.default_rng(seed), fg_share=1.0)
        check_contract(view, sel, 10)
        assert set(sel.indices.tolist()) <= set(range(3, 20))
    # utilities: a draw in [0, 1), +1 on foreground candidates
    assert (sel.utilities[3:20] >= 1).all() and (sel.utilities[20:] < 1).all() and np.isnan(sel.utilities[:3]).all()


def test_foreground_random_share_and_fill():
    view = fg_view()
    for seed in range(5):
        sel = acquire("foreground_random", view, 10, np.random.default_rng(seed), fg_share=0.5)
        assert set(sel.indices[:5].tolist()) <= set(range(3, 20))  # 0.5 x 10 = exactly 5 foreground draws first
        check_contract(view, sel, 10)
    # Too few foreground candidates (3..4): both taken first, the rest filled from the other candidates.
    view = fg_view(fg_items=range(0, 5))
    sel = acquire("foreground_random", view, 6, np.random.default_rng(0), fg_share=1.0)
    assert sorted(sel.indices[:2].tolist()) == [3, 4] and (sel.indices[2:] >= 5).all()
    check_contract(view, sel, 6)


def test_foreground_random_min_foreground_and_stochastic_rounding():
    fg = np.zeros(200)
    fg[:10] = 0.05  # faint predicted foreground
    fg[10:20] = 0.5
    view = view_of(np.zeros((200, 2)), foreground=fg)
    sel = acquire("foreground_random", view, 8, np.random.default_rng(0), fg_share=1.0, min_foreground=0.1)
    assert set(sel.indices.tolist()) <= set(range(10, 20))
    # A batch of 1 with fg_share 0.33: foreground (20 of 200 items) about 0.33 + 0.67 x 0.1 = 0.40 of the time.
    hits = [acquire("foreground_random", view, 1, np.random.default_rng(s)).indices[0] < 20 for s in range(400)]
    assert 0.32 < np.mean(hits) < 0.48


def test_foreground_random_errors():
    with pytest.raises(ConfigError, match=r"foreground_random.*'foreground'"):
        acquire("foreground_random", view_of(np.zeros((5, 2))), 2, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="fg_share"):
        acquire("foreground_random", fg_view(), 2, np.random.default_rng(0), fg_share=1.5)


# --- uherding -----------------------------------------------------------------------------------------


def test_uherding_gain_by_hand_1d():
    # points 0, 1, 3 on a line, weights u / max u = [1, .5, 1], sigma 1, nothing queried:
    # gain(a) = sum_i w_i exp(-(x_i - x_a)^2 / 2)
    view = view_of([0.0, 1.0, 3.0], uncertainty=[2.0, 1.0, 2.0])
    sel = acquire("uherding", view, 2, np.random.default_rng(0), sigma=1.0)
    e = np.exp
    want = [1 + 0.5 * e(-0.5) + e(-4.5), e(-0.5) + 0.5 + e(-2), e(-4.5) + 0.5 * e(-2) + 1]
    np.testing.assert_allclose(sel.utilities, want, rtol=1e-5)
    assert sel.indices[0] == 0  # 1.314 > 1.242 > 1.079
    # after picking 0 the coverage is k(x_i, 0) = [1, e^-.5, e^-4.5]:
    gain1 = 0.5 * (1 - e(-0.5)) + 1 * (e(-2) - e(-4.5))  # 0.32
    gain2 = 0.5 * max(e(-2) - e(-0.5), 0) + 1 * (1 - e(-4.5))  # 0.99
    assert gain2 > gain1 and sel.indices[1] == 2


def two_clusters(rng):
    return np.vstack([blob(rng, [0, 0], 20), blob(rng, [10, 0], 20)])  # A = 0..19, B = 20..39


def test_uherding_prefers_the_uncertain_cluster_then_the_uncovered_one():
    emb = two_clusters(np.random.default_rng(0))
    unc = np.r_[np.full(20, 1.0), np.full(20, 0.2)]
    sel = acquire("uherding", view_of(emb, uncertainty=unc), 2, np.random.default_rng(0), sigma=1.0)
    assert sel.indices[0] < 20  # A: 20 x 1.0 of coverage vs 20 x 0.2
    assert sel.indices[1] >= 20  # A is now covered: B next, although less uncertain
    # A already queried (one item covers the tight cluster): the first pick goes to B.
    view = view_of(emb, queried=[3], uncertainty=unc)
    sel = acquire("uherding", view, 1, np.random.default_rng(0), sigma=1.0)
    assert sel.indices[0] >= 20
    assert np.nanmax(sel.utilities[:20]) < 0.1 * np.nanmin(sel.utilities[20:])
    check_contract(view, sel, 1)


def test_uherding_dense_uncertain_cluster_beats_isolated_most_uncertain_point():
    rng = np.random.default_rng(1)
    emb = np.vstack([blob(rng, [0, 0], 20), [[6.0, 6.0]]])  # 20 = isolated
    unc = np.r_[np.full(20, 0.6), 1.0]
    sel = acquire("uherding", view_of(emb, uncertainty=unc), 2, np.random.default_rng(0), sigma=1.0)
    assert sel.indices[0] < 20  # gain ~ 20 x 0.6 = 12 vs ~1 for the isolated point
    assert sel.indices[1] == 20  # the cluster is covered: the isolated point (gain ~1) beats a second cluster item
    # With a tiny kernel each point only covers itself: uncertainty sampling, the isolated point first.
    sel = acquire("uherding", view_of(emb, uncertainty=unc), 1, np.random.default_rng(0), sigma=1e-3)
    assert sel.indices[0] == 20


def brute_force_greedy(emb, w, queried, batch, sigma):
    d2 = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * sigma**2))
    cov = k[:, queried].max(1) if len(queried) else np.zeros(len(emb))
    picks = []
    for _ in range(batch):
        gains = (w[:, None] * np.maximum(k - cov[:, None], 0)).sum(0)
        gains[list(queried) + picks] = -np.inf
        p = int(np.argmax(gains))
        picks.append(p)
        cov = np.maximum(cov, k[:, p])
    return picks


@pytest.mark.parametrize("shortlist", [1000, 80])
def test_uherding_lazy_greedy_equals_brute_force(shortlist):
    rng = np.random.default_rng(2)
    emb = rng.random((90, 2)) * 10
    unc = rng.random(90)
    queried = [5, 17, 60]
    sel = acquire("uherding", view_of(emb, queried=queried, uncertainty=unc), 8, rng, sigma=1.2, shortlist=shortlist, lazy_block=2)
    want = brute_force_greedy(emb, uncertainty_weights(unc), queried, 8, 1.2)
    if shortlist >= 87:
        assert sel.indices.tolist() == want
    else:  # 80 of 87 candidates shortlisted: 7 of them get utility 0 (not evaluated)
        assert (sel.utilities[~np.isnan(sel.utilities)] == 0).sum() == 7


def test_uherding_auto_sigma_and_errors():
    emb = two_clusters(np.random.default_rng(0))
    view = view_of(emb, uncertainty=np.r_[np.full(20, 1.0), np.full(20, 0.2)])
    sel = acquire("uherding", view, 3, np.random.default_rng(0))  # sigma = median 10-NN distance (~0.2)
    check_contract(view, sel, 3)
    assert sel.indices[0] < 20
    with pytest.raises(ConfigError, match="sigma"):
        acquire("uherding", view, 1, np.random.default_rng(0), sigma=0.0)
    assert uncertainty_weights(np.zeros(3)).tolist() == [1.0, 1.0, 1.0]  # no signal: plain coverage


def test_uherding_large_pool_never_n_by_n():
    rng = np.random.default_rng(3)
    n, d = 20_000, 16
    queried = np.zeros(n, dtype=bool)
    queried[rng.choice(n, 50, replace=False)] = True
    view = PoolView(rng.standard_normal((n, d), dtype=np.float32), rng.random(n), rng.random(n), queried, {})
    tracemalloc.start()
    try:
        sel = acquire("uherding", view, 10, np.random.default_rng(0), shortlist=300)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    check_contract(view, sel, 10)
    assert peak < n * n * 4 / 10  # an N x N float32 matrix would be 1.6 GB; blocks are 16 MiB
    assert (sel.utilities[~queried] > 0).sum() == 300  # only the shortlist is evaluated


# --- tcm ----------------------------------------------------------------------------------------------


def tcm_view(n_queried):
    rng = np.random.default_rng(4)
    emb = np.vstack([blob(rng, [0, 0], 40, 0.3), blob(rng, [8, 0], 30, 0.3), blob(rng, [0, 8], 30, 0.3)])
    margin = rng.random(100)
    margin[[90, 50, 7]] = [3.0, 2.0, 1.5]
    return view_of(emb, queried=range(10, 10 + n_queried), uncertainty=rng.random(100), margin=margin)


def test_tcm_switches_exactly_at_the_transition():
    below = tcm_view(5)  # 5 queried < transition 6: TypiClust, exactly
    sel = acquire("tcm", below, 3, np.random.default_rng(0), transition=6)
    ref = typiclust_acquisition(below, 3, np.random.default_rng(0))
    assert sel.indices.tolist() == ref.indices.tolist()
    np.testing.assert_array_equal(sel.utilities, ref.utilities)
    at = tcm_view(6)  # 6 queried = transition: margin
    sel = acquire("tcm", at, 3, np.random.default_rng(0), transition=6)
    assert sel.indices.tolist() == [90, 50, 7]
    assert sel.utilities[90] == 3.0 and np.isnan(sel.utilities[10])
    # Without a margin score: the uncertainty.
    plain = PoolView(at.embedding, at.typicality, at.uncertainty, at.queried, {})
    sel = acquire("tcm", plain, 2, np.random.default_rng(0), transition=6)
    cand = plain.candidates
    assert sel.indices.tolist() == cand[np.argsort(-plain.uncertainty[cand])[:2]].tolist()


# --- pixel statistics ---------------------------------------------------------------------------------


def col(name):
    return STAT_NAMES.index(name)


def test_pixel_statistics_by_hand():
    h = w = 20
    constant = np.full((h, w), 0.5)
    white = np.ones((h, w))
    checker = (np.indices((h, w)).sum(0) % 2).astype(float)
    ramp = np.tile(np.arange(w) / (w - 1), (h, 1))
    low = 0.5 + 0.3 * np.sin(2 * np.pi * np.arange(w) / 10)[None].repeat(h, 0)  # 0.1 cycles/px
    high = 0.5 + 0.3 * np.sin(2 * np.pi * np.arange(w) / 2.5)[None].repeat(h, 0)  # 0.4 cycles/px
    s = pixel_statistics(np.stack([constant, white, checker, ramp, low, high]).astype(np.float32), batch=4)
    assert s.shape == (6, len(STAT_NAMES)) and s.dtype == np.float64
    np.testing.assert_allclose(s[0], [0.5, 0, 0, 0, 0, 0], atol=1e-7)  # constant: no spread, edges, power
    np.testing.assert_allclose(s[1, [col("mean"), col("saturated")]], [1.0, 1.0])
    # checkerboard: SD .5, every step +-1 in x and y (|grad| = sqrt 2), Laplacian 4, all power at (.5, .5)
    np.testing.assert_allclose(s[2], [0.5, 0.5, np.sqrt(2), 4.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(s[3, [col("gradient"), col("laplacian")]], [1 / (w - 1), 0.0], atol=1e-6)
    assert s[4, col("hf_power")] < 1e-6 and s[5, col("hf_power")] > 1 - 1e-6
    one_by_one = pixel_statistics(np.stack([checker, ramp, low]).astype(np.float32), batch=1)
    np.testing.assert_allclose(one_by_one, s[2:5], atol=1e-12)  # batching changes nothing
    with pytest.raises(DataError, match="H, W"):
        pixel_statistics(np.zeros((4, 20)))


# --- pixel_veto ---------------------------------------------------------------------------------------


def textures(rng, n, size=32):
    """Natural-ish tiles: smoothed noise of random grain and contrast around mid-grey."""
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        x = gaussian_filter(rng.standard_normal((size, size)), rng.uniform(1.5, 2.5))
        out[i] = np.clip(0.5 + rng.uniform(0.08, 0.12) * x / x.std(), 0, 1)
    return out


def veto_pool():
    rng = np.random.default_rng(5)
    imgs = textures(rng, 120)
    imgs[7] = 0.5 + rng.normal(0, 0.003, imgs[7].shape)  # blank tile (missing section)
    imgs[40] = np.clip(0.5 + rng.normal(0, 0.3, imgs[40].shape), 0, 1)  # noise tile
    unc = rng.random(120)
    unc[[7, 40]] = [5.0, 4.0]  # the artifacts are the most uncertain items
    return view_of(rng.standard_normal((120, 4)), queried=[0, 1], uncertainty=unc, pixel_stats=pixel_statistics(imgs))


def test_pixel_veto_vetoes_blank_and_noise_tiles_otherwise_uncertainty():
    view = veto_pool()
    outlying = np.abs(robust_z(view.extras["pixel_stats"])).max(1)
    assert outlying[7] > 3.5 and outlying[40] > 3.5
    assert (np.delete(outlying, [7, 40]) <= 3.5).all()  # no texture vetoed
    sel = acquire("pixel_veto", view, 5, np.random.default_rng(0))
    cand = np.setdiff1d(view.candidates, [7, 40])
    assert sel.indices.tolist() == cand[np.argsort(-view.uncertainty[cand])[:5]].tolist()
    assert sel.utilities[[7, 40]].max() < np.nanmin(np.delete(sel.utilities, [7, 40]))
    check_contract(view, sel, 5)
    # Only vetoed items left besides one texture: it first, then the least outlying artifact.
    rest = PoolView(view.embedding, view.typicality, view.uncertainty, ~np.isin(np.arange(120), [3, 7, 40]), view.extras)
    sel = acquire("pixel_veto", rest, 3, np.random.default_rng(0))
    assert sel.indices[0] == 3 and sel.indices[1] == [7, 40][int(np.argmin(outlying[[7, 40]]))]


def test_pixel_veto_errors():
    with pytest.raises(ConfigError, match=r"pixel_veto.*'pixel_stats'"):
        acquire("pixel_veto", view_of(np.zeros((5, 2))), 2, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="columns"):
        acquire("pixel_veto", view_of(np.zeros((5, 2)), pixel_stats=np.zeros((5, 3))), 2, np.random.default_rng(0))
