"""dualstream_v2 (issue 10): outlier veto, within-cluster typicality, min-max product, budget mix; v1 alias."""

from __future__ import annotations

import numpy as np
import pytest

from dualstream.acquisition import REGISTRY, PoolView, acquire
from dualstream.acquisition.core import rank_percentile
from dualstream.acquisition.budget_mix import effective_beta, mix_weight
from dualstream.acquisition.dualstream_v2 import combine_streams, veto_mask
from dualstream.errors import ConfigError
from dualstream.streams import structure as st
from dualstream.streams.typicality import knn_typicality

D = 16  # high enough that Gaussian tails stay below the veto (see the dualstream_v2 docstring)
DENSE, SPARSE = 475, 25  # the sparse cluster is 5% of the pool and larger than k = 20


def layout(seed: int = 0, isolated: bool = True) -> np.ndarray:
    """Dense cluster 0..474 (sd 0.5 at 0), sparse cluster 475..499 (sd 1.5 at 15 e0), optional isolated item 500 (-12 e1)."""
    rng = np.random.default_rng(seed)
    centre = np.zeros(D)
    centre[0] = 15.0
    parts = [0.5 * rng.standard_normal((DENSE, D)), centre + 1.5 * rng.standard_normal((SPARSE, D))]
    if isolated:
        far = np.zeros((1, D))
        far[0, 1] = -12.0
        parts.append(far)
    return np.vstack(parts).astype(np.float32)


def view_of(emb, uncertainty=None, queried=(), typicality=None) -> PoolView:
    emb = np.asarray(emb, dtype=np.float32)
    n = len(emb)
    q = np.zeros(n, dtype=bool)
    q[list(queried)] = True
    u = np.random.default_rng(1).random(n) if uncertainty is None else np.asarray(uncertainty, dtype=np.float64)
    t = knn_typicality(emb, 20) if typicality is None else np.asarray(typicality, dtype=np.float64)
    return PoolView(emb, t, u, q)


# --- (a) relative density and the veto -------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relative_density_is_local(seed):
    rel = st.relative_density(layout(seed), k=20)
    assert 0.9 < np.median(rel[:DENSE]) < 1.2  # dense cluster
    assert 0.9 < np.median(rel[DENSE:DENSE + SPARSE]) < 1.2  # sparse cluster: ~1 too, its density is its own
    assert rel[:DENSE + SPARSE].max() < 2.0
    assert rel[-1] > 4.0  # the isolated item
    # the same within clusters (the big-pool path), with the clusters k-means finds (isolated item: nearest, dense)
    assign = np.r_[np.zeros(DENSE), np.ones(SPARSE), 0].astype(np.int64)
    rel_c = st.relative_density(layout(seed), k=20, assign=assign)
    assert rel_c[:DENSE + SPARSE].max() < 2.0 and rel_c[-1] > 4.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_veto_removes_the_isolated_item_and_nothing_else(seed):
    s = st.embedding_structure(layout(seed), k=20)
    vetoed = veto_mask(s)
    assert np.flatnonzero(vetoed).tolist() == [DENSE + SPARSE]
    # z alone also catches a Gaussian-tail item on seeds 3 and 4 of this layout; with the ratio floor, never
    assert s.outlier_z[-1] > 10


def test_veto_on_a_clean_pool_and_robust_z():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.standard_normal(D) * 10 + sc * rng.standard_normal((m, D)) for m, sc in zip([400, 250, 150, 100, 100], [1, 0.5, 2, 0.3, 1.5])])
    s = st.embedding_structure(x, k=20)
    assert veto_mask(s).mean() <= 0.01
    # robust z: median 0, MAD scale; one huge value does not move it
    z = st.robust_z(np.array([1.0, 2.0, 3.0, 4.0, 1000.0]))
    np.testing.assert_allclose(z[:4], (np.array([1, 2, 3, 4]) - 3.0) / (1.4826 * 1.0))
    np.testing.assert_array_equal(st.robust_z(np.ones(4)), 0.0)


def test_acquisition_never_picks_a_vetoed_item_while_others_remain():
    emb = layout(0)
    unc = np.full(len(emb), 0.1)
    unc[-1] = 10.0  # the isolated item is by far the most uncertain
    for diverse in (True, False):
        sel = acquire("dualstream_v2", view_of(emb, unc), 5, np.random.default_rng(0), diverse=diverse)
        assert DENSE + SPARSE not in sel.indices.tolist()
        assert sel.utilities[-1] == 0.0
    # veto off: the same item now comes first (top-B)
    sel = acquire("dualstream_v2", view_of(emb, unc), 5, np.random.default_rng(0), veto=False, diverse=False, typicality="global", mix=False, beta=0.0)
    assert sel.indices[0] == DENSE + SPARSE
    # fewer unvetoed candidates than the batch: the vetoed item fills the batch last
    sel = acquire("dualstream_v2", view_of(emb, unc, queried=range(2, DENSE + SPARSE)), 3, np.random.default_rng(0))
    assert sorted(sel.indices[:2].tolist()) == [0, 1] and sel.indices[2] == DENSE + SPARSE


def test_tight_cluster_veto_is_opt_in():
    rng = np.random.default_rng(0)
    blank = np.tile(rng.standard_normal(D) * 10, (12, 1)) + 1e-4 * rng.standard_normal((12, D))  # 12 identical defects
    emb = np.vstack([layout(0, isolated=False), blank]).astype(np.float32)
    s = st.embedding_structure(emb, k=20)
    assert not veto_mask(s)[-12:].any()  # they neighbour each other: the point veto spares them
    share = veto_mask(s, cluster_share=0.05)
    assert share[-12:].all() and share[:-12].sum() == 0
    assert not veto_mask(s, cluster_share=0.01)[-12:].any()  # 12 / 512 > 1%: over the cap


# --- (b) cluster typicality --------------------------------------------------------------------------


def test_cluster_typicality_ranks_a_sparse_clusters_centre_high():
    emb = layout(0, isolated=False)
    s = st.embedding_structure(emb, k=20, n_clusters=2)
    assert len(np.unique(s.assign[:DENSE])) == 1 and len(np.unique(s.assign[DENSE:])) == 1
    pct = s.cluster_typicality_pct
    small = np.arange(DENSE, DENSE + SPARSE)
    dist = np.linalg.norm(emb[small] - emb[small].mean(0), axis=1)
    centre, rim = small[np.argmin(dist)], small[np.argmax(dist)]
    big_dist = np.linalg.norm(emb[:DENSE] - emb[:DENSE].mean(0), axis=1)
    big_centre = int(np.argmin(big_dist))
    assert pct[centre] >= 0.8 and pct[rim] <= 0.2 and pct[centre] > pct[rim]
    assert pct[big_centre] >= 0.8 and abs(pct[centre] - pct[big_centre]) <= 0.2
    glob = rank_percentile(knn_typicality(emb, 20), np.arange(len(emb)))
    assert glob[small].max() <= SPARSE / len(emb) + 1e-9  # globally the 25 least typical of all
    # the default cluster count finds the same: the centre of the small cluster is typical of it
    auto = st.embedding_structure(emb, k=20).cluster_typicality_pct
    assert auto[centre] >= 0.8 and auto[rim] < auto[centre]


def test_within_cluster_percentile_and_tiny_clusters():
    values = np.array([3.0, 1.0, 2.0, 5.0, 9.0, 7.0])
    assign = np.array([0, 0, 0, 1, 1, 2])
    np.testing.assert_allclose(st.within_cluster_percentile(values, assign), [1.0, 1 / 3, 2 / 3, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(st.within_cluster_percentile(values, assign, min_size=3), [1.0, 1 / 3, 2 / 3, 0, 0, 0])


# --- (c) combine ---------------------------------------------------------------------------------


def uncertainty_share(picks: np.ndarray, unc: np.ndarray, batch: int) -> float:
    """Issue 10's measure: raw uncertainty in the picks / raw uncertainty in uncertainty sampling's top-B."""
    return float(unc[picks].sum() / np.sort(unc)[::-1][:batch].sum())


def test_minmax_product_keeps_the_long_tail_of_uncertainty():
    rng = np.random.default_rng(0)
    n, batch = 500, 10
    unc = rng.pareto(1.5, n)  # long-tailed: a few items far more uncertain than the rest
    typ = -0.5 * np.argsort(np.argsort(unc)) / n + rng.random(n)  # anti-correlated with uncertainty, as on EPFL
    cand = np.arange(n)
    shares = {}
    for how in ("rank_product", "minmax_product"):
        util = combine_streams(unc, typ, cand, 1.0, how)
        shares[how] = uncertainty_share(np.argsort(-util)[:batch], unc, batch)
    assert shares["minmax_product"] > shares["rank_product"] + 0.1
    assert shares["minmax_product"] > 0.5 > shares["rank_product"]
    # hand-checkable minmax product and weighted sum on candidates 0..3 (4 is queried: NaN)
    u, t = np.array([1.0, 3.0, 5.0, 2.0, 99.0]), np.array([4.0, 0.0, 2.0, 4.0, 99.0])
    c = np.arange(4)
    np.testing.assert_allclose(combine_streams(u, t, c, 1.0, "minmax_product")[:4], [0, 0, 0.5, 0.25])
    np.testing.assert_allclose(combine_streams(u, t, c, 1.0, "weighted")[:4], [0.5, 0.25, 0.75, 0.625])
    assert np.isnan(combine_streams(u, t, c, 1.0, "minmax_product")[4])


# --- (d) mix --------------------------------------------------------------------------------------


def test_mix_schedule():
    got = [effective_beta(2.0, n, mix=True) for n in (4, 8, 16, 64, 128)]
    np.testing.assert_allclose(got, [2.0, 2.0, 2.0 * 2 / 3, 0.0, 0.0])  # log2: 16 is 1/3 of the way from 8 to 64
    assert mix_weight(32) == pytest.approx(1 / 3)
    assert [effective_beta(2.0, n, mix=False) for n in (4, 128)] == [2.0, 2.0]


def test_mix_leaves_uncertainty_alone_late_but_keeps_the_veto():
    emb = layout(0)
    unc = np.random.default_rng(3).random(len(emb))
    unc[-1] = 10.0
    view = view_of(emb, unc, queried=range(100, 200))  # 100 labels >= mix_end: beta_eff = 0
    sel = acquire("dualstream_v2", view, 5, np.random.default_rng(0), diverse=False)
    cand = np.setdiff1d(view.candidates, [DENSE + SPARSE])
    assert sel.indices.tolist() == cand[np.argsort(-unc[cand], kind="stable")][:5].tolist()


# --- v1 alias, v1 reachable through v2's switches, contract, errors ---------------------------------


def random_view(seed: int, n: int = 300) -> PoolView:
    rng = np.random.default_rng(seed)
    q = np.zeros(n, dtype=bool)
    q[rng.choice(n, 20, replace=False)] = True
    return PoolView(rng.standard_normal((n, 8), dtype=np.float32), rng.random(n) + 0.1, rng.random(n), q)


@pytest.mark.parametrize("seed", [0, 1])
def test_v1_is_dualstream_and_v2_with_switches_off(seed):
    assert REGISTRY["dualstream_v1"] is REGISTRY["dualstream"]
    view = random_view(seed)
    ref = acquire("dualstream", view, 10, np.random.default_rng(seed))
    v1 = acquire("dualstream_v1", view, 10, np.random.default_rng(seed))
    np.testing.assert_array_equal(v1.indices, ref.indices)
    np.testing.assert_array_equal(v1.utilities, ref.utilities)
    v2 = acquire("dualstream_v2", view, 10, np.random.default_rng(seed), veto=False, typicality="global", combine="rank_product", mix=False)
    np.testing.assert_array_equal(v2.indices, ref.indices)
    np.testing.assert_allclose(v2.utilities, ref.utilities)


@pytest.mark.parametrize(
    "params",
    [{}, {"typicality": "global"}, {"combine": "weighted"}, {"diverse": False}, {"veto_cluster_share": 0.1}, {"n_clusters": 3}],
)
def test_v2_contract(params):
    view = random_view(2)
    sel = acquire("dualstream_v2", view, 12, np.random.default_rng(0), **params)
    idx = sel.indices
    assert idx.dtype == np.int64 and len(idx) == len(np.unique(idx)) == 12 and not view.queried[idx].any()
    assert np.isnan(sel.utilities[view.queried]).all() and np.isfinite(sel.utilities[~view.queried]).all()


@pytest.mark.parametrize(
    "params, match",
    [
        ({"typicality": "local"}, "typicality"),
        ({"combine": "sum"}, "combine"),
        ({"beta": -1.0}, "beta"),
        ({"veto_z": 0.0}, "veto_z"),
        ({"veto_cluster_share": 1.0}, "veto_cluster_share"),
        ({"mix_start": 64, "mix_end": 8}, "mix_start"),
        ({"factor": 0}, "factor"),
    ],
)
def test_v2_bad_params_are_config_errors(params, match):
    with pytest.raises(ConfigError, match=match) as err:
        acquire("dualstream_v2", random_view(0, 40), 4, np.random.default_rng(0), **params)
    assert "\n" not in str(err.value)
