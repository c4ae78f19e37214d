"""Pins the acquisition contract (every registered strategy) and the behaviour of uncertainty, density, dual-stream and k-means diversity."""

from __future__ import annotations

import numpy as np
import pytest

from dualstream.acquisition import REGISTRY, PoolView, Selection, acquire
from dualstream.acquisition.base import masked_utilities, top_indices
from dualstream.acquisition.core import dualstream_utility, rank_percentile
from dualstream.acquisition.diversity import diverse_top, kmeans
from dualstream.errors import ConfigError, EmptyPoolError
from dualstream.streams.typicality import knn_typicality


def _view(n: int = 40, queried=(), seed: int = 0, d: int = 4) -> PoolView:
    rng = np.random.default_rng(seed)
    q = np.zeros(n, dtype=bool)
    q[list(queried)] = True
    emb = rng.normal(size=(n, d)).astype(np.float32)
    # extras that strategies beyond the core four read (harmless to the core ones)
    extras = {
        "grad_embedding": rng.normal(size=(n, 6)).astype(np.float32),
        "task_embedding": rng.normal(size=(n, 5)).astype(np.float32),
        "margin": rng.random(n),
        "least_confidence": rng.random(n),
        "bald": rng.random(n),
    }
    # Drawn from their own generator so the arrays above (and so the core strategies' cases) stay as they were.
    other = np.random.default_rng([seed, 1])
    extras["foreground"] = other.random(n)
    extras["pixel_stats"] = other.random((n, 6))
    return PoolView(
        embedding=emb,
        typicality=rng.random(n),
        uncertainty=rng.random(n).astype(np.float32),
        queried=q,
        extras=extras,
    )


def _cluster_plus_outlier(n_cluster: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cluster = rng.normal(scale=0.05, size=(n_cluster, 3))
    return np.vstack([cluster, [[20.0, 20.0, 20.0]]]).astype(np.float32)


def test_registry_holds_the_four_core_strategies():
    assert {"random", "uncertainty", "density", "dualstream"} <= set(REGISTRY)


# --- the contract, for every strategy -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("batch, queried", [(5, (0, 3, 7, 8, 20)), (1, ()), (12, tuple(range(0, 40, 2)))])
def test_contract(name, batch, queried):
    view = _view(40, queried)
    sel = acquire(name, view, batch, np.random.default_rng(7))
    assert isinstance(sel, Selection)
    n_cand = 40 - len(queried)
    idx = sel.indices
    assert idx.dtype == np.int64 and idx.ndim == 1
    assert len(idx) == min(batch, n_cand)
    assert len(set(idx.tolist())) == len(idx)
    assert not view.queried[idx].any()
    assert np.all((0 <= idx) & (idx < 40))
    u = sel.utilities
    assert u.shape == (40,) and u.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(u), view.queried)
    # same seed, same answer
    again = acquire(name, view, batch, np.random.default_rng(7))
    np.testing.assert_array_equal(again.indices, idx)
    np.testing.assert_array_equal(again.utilities, u)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_contract_drains_pool(name):
    queried = [i for i in range(30) if i not in (4, 11, 29)]
    view = _view(30, queried)
    sel = acquire(name, view, 10, np.random.default_rng(0))
    assert sorted(sel.indices.tolist()) == [4, 11, 29]
    np.testing.assert_array_equal(np.isnan(sel.utilities), view.queried)


def test_acquire_unknown_name():
    with pytest.raises(ConfigError, match="not_a_strategy"):
        acquire("not_a_strategy", _view(), 3, np.random.default_rng(0))


def test_acquire_bad_batch():
    with pytest.raises(ConfigError, match="batch"):
        acquire("random", _view(), 0, np.random.default_rng(0))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_acquire_everything_queried(name):
    with pytest.raises(EmptyPoolError):
        acquire(name, _view(10, range(10)), 3, np.random.default_rng(0))


def test_acquire_rejects_buggy_strategy():
    from dualstream.acquisition.base import register

    @register("_test_buggy")
    def buggy(view, batch_size, rng):
        return Selection(np.array([0, 0]), np.zeros(len(view)))

    try:
        with pytest.raises(RuntimeError, match="duplicate"):
            acquire("_test_buggy", _view(), 2, np.random.default_rng(0))
    finally:
        REGISTRY.pop("_test_buggy")


def test_random_depends_on_seed():
    view = _view(200)
    a = acquire("random", view, 10, np.random.default_rng(1)).indices
    b = acquire("random", view, 10, np.random.default_rng(2)).indices
    assert a.tolist() != b.tolist()


# --- uncertainty / density ----------------------------------------------------------------------


def test_uncertainty_picks_top_b():
    u = np.array([0.1, 0.9, 0.3, 0.8, 0.95, 0.2, 0.7, 0.99])
    view = PoolView(
        embedding=np.zeros((8, 2), np.float32),
        typicality=np.ones(8),
        uncertainty=u,
        queried=np.array([0, 0, 0, 0, 0, 0, 0, 1], bool),  # the most uncertain is already queried
    )
    sel = acquire("uncertainty", view, 3, np.random.default_rng(0))
    assert sel.indices.tolist() == [4, 1, 3]
    np.testing.assert_allclose(sel.utilities[:7], u[:7])
    assert np.isnan(sel.utilities[7])


def test_density_ranks_cluster_above_isolated():
    emb = _cluster_plus_outlier()
    t = knn_typicality(emb, k=5)
    view = PoolView(emb, t, np.zeros(len(emb)), np.zeros(len(emb), bool))
    sel = acquire("density", view, 1, np.random.default_rng(0))
    assert sel.indices.tolist() == [int(np.argmax(t))]
    assert np.nanargmin(sel.utilities) == 30
    assert np.all(sel.utilities[:30] > sel.utilities[30])
    # without diversity, the outlier is never among the 30 densest
    plain = acquire("density", view, 30, np.random.default_rng(0), diverse=False)
    assert sorted(plain.indices.tolist()) == list(range(30))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dualstream_never_prefers_isolated_uncertain_point(seed):
    emb = _cluster_plus_outlier(40, seed)
    n = len(emb)
    outlier = n - 1
    typ = knn_typicality(emb, k=5)
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.0, 0.5, size=n)
    for twin in (5, int(np.argmax(typ[:outlier]))):  # any cluster point; the most typical one
        unc = base.copy()
        unc[outlier] = unc[twin] = 0.9  # equally (and most) uncertain
        view = PoolView(emb, typ, unc, np.zeros(n, bool))
        for diverse in (True, False):
            sel = acquire("dualstream", view, 1, np.random.default_rng(seed), diverse=diverse)
            assert sel.indices.tolist() != [outlier]
            assert sel.utilities[twin] > sel.utilities[outlier]
            assert np.nanargmin(sel.utilities) != twin
        # the most typical of the most uncertain has the top utility and is the one chosen
        if twin == int(np.argmax(typ[:outlier])):
            assert sel.indices.tolist() == [twin]
            assert sel.utilities[twin] == np.nanmax(sel.utilities)
        # the uncertainty-only strategy cannot tell the two apart
        unc_u = acquire("uncertainty", view, 1, np.random.default_rng(0)).utilities
        assert unc_u[outlier] == unc_u[twin] == 0.9


def test_dualstream_diverse_batch_skips_outlier_when_shortlist_is_part_of_pool():
    # factor * batch (50) < candidates (301): the outlier never reaches the k-means shortlist.
    rng = np.random.default_rng(0)
    emb = np.vstack([rng.normal(scale=0.05, size=(300, 3)), [[20.0, 20.0, 20.0]]]).astype(np.float32)
    unc = rng.uniform(0.0, 0.5, size=301)
    unc[300] = unc[5] = 0.9
    view = PoolView(emb, knn_typicality(emb, k=5), unc, np.zeros(301, bool))
    for seed in range(3):
        sel = acquire("dualstream", view, 5, np.random.default_rng(seed))
        assert 300 not in sel.indices.tolist()


@pytest.mark.parametrize("name", ["dualstream", "density"])
def test_diverse_batch_never_picks_isolated_outlier_from_small_pool(name):
    rng = np.random.default_rng(1)
    emb = np.vstack([rng.normal(scale=0.05, size=(30, 3)), [[20.0, 20.0, 20.0]]]).astype(np.float32)
    unc = rng.uniform(0.0, 0.5, size=31)
    outlier, twin = 30, 5
    unc[outlier] = unc[twin] = 0.9  # the outlier and a cluster point are equally (and most) uncertain
    view = PoolView(emb, knn_typicality(emb, k=5), unc, np.zeros(31, bool))
    sel = acquire(name, view, 4, np.random.default_rng(1))  # shortlist 10 * 4 = 40 >= 31 candidates
    u = sel.utilities
    if not u[twin] > u[outlier]:
        raise RuntimeError("precondition: the typical twin must have the higher utility")
    # the outlier is worse than most candidates, so a batch of 4 has no room for it
    better = np.sum(u > u[outlier])
    if better < 4:
        raise RuntimeError(f"precondition: only {better} candidates beat the outlier")
    chosen = sel.indices.tolist()
    assert outlier not in chosen, (chosen, better)


def test_dualstream_utility_is_product_of_percentiles():
    unc = np.array([0.1, 0.4, 0.3, 0.2])
    typ = np.array([4.0, 1.0, 3.0, 2.0])
    q = np.array([False, False, False, True])
    view = PoolView(np.zeros((4, 2), np.float32), typ, unc, q)
    # candidates 0, 1, 2: unc ranks 1, 3, 2 -> 1/3, 1, 2/3; typ ranks 3, 1, 2 -> 1, 1/3, 2/3
    u = dualstream_utility(view)
    np.testing.assert_allclose(u[:3], [1 / 3, 1 / 3, 4 / 9])
    assert np.isnan(u[3])
    u2 = dualstream_utility(view, beta=2.0)
    np.testing.assert_allclose(u2[:3], [1 / 3, 1 / 9, 8 / 27])
    assert acquire("dualstream", view, 1, np.random.default_rng(0), diverse=False).indices.tolist() == [2]


def test_dualstream_gate_drops_least_typical_share():
    # 10 candidates; typicality ranks 1..10 by index, uncertainty ranks reversed (index 0 most uncertain)
    n = 10
    typ = np.arange(1, n + 1, dtype=np.float64)
    unc = np.arange(n, 0, -1, dtype=np.float64)
    view = PoolView(np.zeros((n, 2), np.float32), typ, unc, np.zeros(n, bool))
    # beta = 0 without a gate is uncertainty alone: the least typical item 0 wins
    assert acquire("dualstream", view, 1, np.random.default_rng(0), beta=0.0, diverse=False).indices.tolist() == [0]
    # gate 0.3: the 3 least typical (pct 0.1, 0.2, 0.3) get utility 0; the best remaining is item 3
    sel = acquire("dualstream", view, 1, np.random.default_rng(0), beta=0.0, gate=0.3, diverse=False)
    assert sel.indices.tolist() == [3]
    np.testing.assert_array_equal(sel.utilities[:3], 0.0)
    np.testing.assert_allclose(sel.utilities[3:], unc[3:] / n)
    with pytest.raises(ConfigError, match="gate"):
        dualstream_utility(view, gate=1.0)


def test_dualstream_diverse_picks_from_both_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal(scale=0.05, size=(10, 3))
    b = rng.normal(scale=0.05, size=(10, 3)) + 50.0
    low = rng.normal(scale=0.05, size=(20, 3)) + np.array([0.0, 50.0, 0.0])  # a third, unattractive cluster
    emb = np.vstack([a, b, low]).astype(np.float32)
    unc = np.r_[np.ones(20), np.zeros(20)]
    typ = np.r_[np.ones(20), np.zeros(20)]
    view = PoolView(emb, typ, unc, np.zeros(40, bool))
    # without diversity, ties go by index: both from cluster a
    plain = acquire("dualstream", view, 2, np.random.default_rng(0), diverse=False)
    assert all(i < 10 for i in plain.indices)
    for seed in range(5):
        sel = acquire("dualstream", view, 2, np.random.default_rng(seed), diverse=True)
        chosen = sorted(sel.indices.tolist())
        assert chosen[0] < 10 and 10 <= chosen[1] < 20, (seed, chosen)


# --- helpers ------------------------------------------------------------------------------------


def test_rank_percentile_ties_and_mask():
    values = np.array([3.0, 1.0, 3.0, 2.0, 100.0])
    cand = np.array([0, 1, 2, 3])
    out = rank_percentile(values, cand)
    # ranks 3.5, 1, 3.5, 2 over 4 candidates
    np.testing.assert_allclose(out[:4], [0.875, 0.25, 0.875, 0.5])
    assert out[0] == out[2]
    assert np.isnan(out[4])
    np.testing.assert_allclose(rank_percentile(np.array([5.0, 5.0, 5.0]), np.arange(3)), [2 / 3] * 3)
    np.testing.assert_allclose(rank_percentile(np.array([0.3, 0.1, 0.2]), np.arange(3)), [1.0, 1 / 3, 2 / 3])
    # NaNs sort last and tie with each other (as np.unique counts them): ranks 2.5 and 2.5 of 3
    np.testing.assert_allclose(rank_percentile(np.array([np.nan, 1.0, np.nan]), np.arange(3)), [2.5 / 3, 1 / 3, 2.5 / 3])


def test_top_indices_and_masked_utilities():
    u = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    assert top_indices(u, np.array([0, 1, 2, 3]), 3).tolist() == [1, 0, 2]  # ties by index
    assert top_indices(u, np.array([0, 2, 3, 4]), 2).tolist() == [4, 0]
    m = masked_utilities(u, np.array([1, 3]))
    np.testing.assert_array_equal(np.isnan(m), [True, False, True, False, True])
    assert m[1] == 0.9 and m[3] == 0.1


def test_kmeans_recovers_two_clusters():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(scale=0.1, size=(15, 2)), rng.normal(scale=0.1, size=(25, 2)) + [10.0, -10.0]])
    for seed in range(5):
        centres, assign = kmeans(x, 2, np.random.default_rng(seed))
        assert centres.shape == (2, 2) and assign.shape == (40,) and assign.dtype == np.int64
        assert len(set(assign[:15].tolist())) == 1 and len(set(assign[15:].tolist())) == 1
        assert assign[0] != assign[15]
        a, b = assign[0], assign[15]
        np.testing.assert_allclose(centres[a], x[:15].mean(0), atol=1e-9)
        np.testing.assert_allclose(centres[b], x[15:].mean(0), atol=1e-9)


def test_diverse_top_short_shortlist_and_order():
    u = np.array([0.2, 0.9, 0.5, 0.7])
    emb = np.array([[0.0], [1.0], [2.0], [3.0]])
    # shortlist (factor * batch) no longer than the batch: just the top items
    assert diverse_top(u, emb, np.arange(4), 2, np.random.default_rng(0), factor=1).tolist() == [1, 3]
    out = diverse_top(u, emb, np.array([0, 2, 3]), 3, np.random.default_rng(0))
    assert out.tolist() == [3, 2, 0]  # all candidates, best first


def test_diverse_top_duplicate_points_still_fills_batch():
    emb = np.zeros((12, 2))  # all identical: k-means leaves clusters empty
    u = np.linspace(0, 1, 12)
    out = diverse_top(u, emb, np.arange(12), 4, np.random.default_rng(0), factor=3)
    assert len(out) == 4 and len(set(out.tolist())) == 4
    assert np.all(np.diff(u[out]) <= 0)
    assert out[0] == 11
