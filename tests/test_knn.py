"""kNN through FAISS (dualstream.streams.knn): exact path, approximate IVF recall, the no-faiss fallback,
and the big-pool paths of TypiClust and ProbCover (forced on small pools via ``exact_below``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.stats
import torch

from dualstream.acquisition import PoolView, acquire
from dualstream.acquisition.coverage import ball_graph, knn_ball_graph
from dualstream.acquisition.geometry import radius_graph
from dualstream.acquisition.typiclust import cluster_typicality, cluster_typicality_from_knn
from dualstream.errors import ConfigError
from dualstream.streams import knn as knn_mod
from dualstream.streams.knn import _drop_self, _torch_exact, knn, knn_cached, recall_at_k, sample_recall, smallest
from dualstream.streams.typicality import knn_typicality

faiss_only = pytest.mark.skipif(not knn_mod.have_faiss(), reason="faiss-cpu not installed")


def mixture(n: int, d: int, seed: int = 0, clusters: int = 20, latent: int = 8) -> np.ndarray:
    """Gaussian mixture with low intrinsic dimension (like learned embeddings)."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((clusters, d))
    assign = rng.integers(clusters, size=n)
    bases = rng.standard_normal((clusters, latent, d)) / np.sqrt(latent)
    z = rng.standard_normal((n, latent))
    x = centres[assign] + np.einsum("nl,nld->nd", z, bases[assign]) + 0.05 * rng.standard_normal((n, d))
    return x.astype(np.float32)


@pytest.fixture(autouse=True)
def _fresh_memos():
    knn_mod.clear_cache()
    yield
    knn_mod.clear_cache()


def brute(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


# --- helpers ---------------------------------------------------------------------------------------


def test_recall_at_k_hand_made():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.array([[3, 2, 9], [7, 8, 9]]), exact) == pytest.approx(2 / 6)
    assert recall_at_k(np.array([[-1, 1, 2], [6, 5, 4]]), exact) == pytest.approx(5 / 6)
    assert recall_at_k(np.zeros((3, 0), dtype=int), np.zeros((3, 0), dtype=int)) == 1.0


def test_drop_self_first_match_or_last_column():
    d2 = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    idx = np.array([[5, 0, 7], [3, 4, 6]])  # row 0 finds itself second; row 1 (duplicates) not at all
    d, i = _drop_self(d2, idx, np.array([0, 1]), 2)
    np.testing.assert_array_equal(i, [[5, 7], [3, 4]])
    np.testing.assert_array_equal(d, [[0.0, 1.0], [0.0, 0.0]])


def test_knn_degenerate_and_bad_method():
    x = np.zeros((1, 3), dtype=np.float32)
    d, i = knn(x, 5)
    assert d.shape == i.shape == (1, 0)
    from dualstream.errors import ConfigError

    with pytest.raises(ConfigError, match="method"):
        knn(np.zeros((4, 2)), 2, method="annoy")


# --- exact ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,d,k", [(60, 3, 5), (300, 16, 20)])
def test_exact_matches_brute_force_and_old_torch_path(n, d, k):
    x = mixture(n, d, seed=n)
    dist, idx = knn(x, k, method="exact")
    bd, bi = brute(x, k)
    assert dist.dtype == np.float32 and idx.dtype == np.int64 and dist.shape == (n, k)
    np.testing.assert_allclose(dist, bd, rtol=1e-4, atol=1e-4)
    assert recall_at_k(idx, bi) > 0.999  # only float near-ties may swap
    assert np.all(np.diff(dist, axis=1) >= 0)
    assert not (idx == np.arange(n)[:, None]).any()
    old_d, old_i = _torch_exact(x, k)  # the pre-FAISS blockwise torch.cdist path
    np.testing.assert_allclose(dist, old_d, rtol=1e-4, atol=1e-4)
    assert recall_at_k(idx, old_i) > 0.999


def test_duplicates_count_as_neighbours_at_zero():
    x = np.vstack([np.zeros((5, 2)), np.ones((3, 2))]).astype(np.float32)
    dist, idx = knn(x, 3, method="exact")
    np.testing.assert_allclose(dist[:5], 0.0, atol=1e-6)
    assert not (idx == np.arange(8)[:, None]).any()
    assert set(idx[0]) <= {1, 2, 3, 4}


def test_fallback_without_faiss_same_result(monkeypatch, caplog):
    x = mixture(400, 8, seed=3)
    with_faiss = knn(x, 10, method="auto")
    monkeypatch.setattr(knn_mod, "faiss", None)
    assert not knn_mod.have_faiss()
    with caplog.at_level(logging.INFO, logger="dualstream.streams.knn"):
        without = knn(x, 10, method="ivf")  # any method: exact torch without faiss
    assert "faiss is not installed" in caplog.text
    assert knn_mod.LAST_RUN["method"] == "exact-torch"
    np.testing.assert_allclose(without[0], with_faiss[0], rtol=1e-4, atol=1e-4)
    assert recall_at_k(without[1], with_faiss[1]) > 0.999
    # TypiClust's and ProbCover's big-pool paths also run without faiss
    view = PoolView(x, np.ones(400), np.zeros(400), np.zeros(400, dtype=bool), {})
    for name in ("typiclust", "probcover"):
        sel = acquire(name, view, 5, np.random.default_rng(0), exact_below=100)
        assert len(np.unique(sel.indices)) == 5


@pytest.mark.parametrize("m,c,k", [(5, 6001, 21), (3, 50, 21), (40, 6003, 41), (7, 83, 5), (4, 30, 29)])
def test_smallest_is_exact_topk(m, c, k):
    d = torch.rand(m, c, generator=torch.Generator().manual_seed(c))
    d[0, :k] = 0.5  # ties
    values, cols = smallest(d, k)
    ref = torch.topk(d, k, dim=1, largest=False)
    assert torch.equal(values, ref.values)
    assert torch.equal(torch.gather(d, 1, cols), values)
    assert all(len(set(row.tolist())) == k for row in cols)


def test_threads_restored():
    before = torch.get_num_threads()
    knn(mixture(200, 4), 5, method="exact", threads=1)
    assert torch.get_num_threads() == before
    assert knn_mod.LAST_RUN["threads"] == 1 or not knn_mod.have_faiss()


# --- approximate -------------------------------------------------------------------------------------


@faiss_only
@pytest.mark.slow
def test_ivf_recall_and_typicality_rank_on_20k():
    """Bounds: recall@20 >= 0.9 and typicality Spearman >= 0.98 against exact (measured ~0.97 / 0.999)."""
    x = mixture(20_000, 32, seed=1)
    exact_d, exact_i = knn(x, 20, method="exact")
    approx_d, approx_i = knn(x, 20, method="ivf", recall_sample=500)
    recall = recall_at_k(approx_i, exact_i)
    assert recall >= 0.9
    assert knn_mod.LAST_RUN["method"] == "ivf" and abs(knn_mod.LAST_RUN["recall"] - recall) < 0.05
    assert np.all(approx_d >= exact_d - 1e-3)  # an approximate k-th neighbour is never nearer
    typ_exact = knn_typicality(x, 20, method="exact")
    typ_ivf = knn_typicality(x, 20, method="ivf", recall_sample=0)
    assert scipy.stats.spearmanr(typ_exact, typ_ivf).statistic >= 0.98
    # the recall helper agrees with the full measurement on a sample
    assert abs(sample_recall(x, approx_i, 1000) - recall) < 0.05


@faiss_only
def test_ivf_small_pool_recall_and_auto_switch():
    x = mixture(3000, 16, seed=2)
    exact_d, exact_i = knn(x, 10, method="exact")
    d, i = knn(x, 10, exact_below=1000)  # auto: above the threshold -> ivf
    assert knn_mod.LAST_RUN["method"] == "ivf" and knn_mod.LAST_RUN["recall"] is not None
    assert recall_at_k(i, exact_i) >= 0.9
    knn(x, 10)  # below the default threshold -> exact
    assert knn_mod.LAST_RUN["method"] == "exact-faiss"


@faiss_only
def test_knn_cached_reuses_result():
    x = mixture(500, 4)
    a = knn_cached(x, 5)
    assert knn_cached(x.copy(), 5)[1] is a[1]  # same content -> same entry
    assert knn_cached(x + 1.0, 5)[1] is not a[1]


# --- TypiClust / ProbCover big-pool paths ---------------------------------------------------------


def test_cluster_typicality_from_knn_matches_exact_when_neighbours_suffice():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (40, 3)), rng.normal(50, 1, (30, 3))]).astype(np.float32)
    assign = np.r_[np.zeros(40, int), np.ones(30, int)]
    dist, idx = knn(x, 30, method="exact")  # 30 global neighbours hold every item's k_c = 10 same-cluster ones
    np.testing.assert_allclose(cluster_typicality_from_knn(dist, idx, assign, 10), cluster_typicality(x, assign, 10), rtol=1e-4)


def test_typiclust_big_pool_path_same_behaviour_on_blobs():
    rng = np.random.default_rng(0)
    blob = lambda c, n: np.asarray(c) + 0.3 * rng.standard_normal((n, 2))  # noqa: E731
    a = np.vstack([blob([0, 0], 59), [[2.5, 2.5]]])  # 0..59, 59 = outlier of A
    emb = np.vstack([a, blob([20, 0], 80), blob([0, 20], 30)])
    q = np.zeros(170, dtype=bool)
    q[100] = True
    view = PoolView(emb.astype(np.float32), np.ones(170), np.zeros(170), q, {})
    sel = acquire("typiclust", view, 2, np.random.default_rng(0), exact_below=100)  # forced big-pool path
    first, second = sel.indices.tolist()
    assert first < 59 and np.linalg.norm(emb[first] - emb[:59].mean(0)) < 0.3
    assert 140 <= second < 170
    assert sel.utilities[59] < np.nanmin(sel.utilities[:59])


@faiss_only
def test_approx_ball_graph_is_subset_with_high_recall():
    x = mixture(4000, 8, seed=4)
    radius = 1.0
    exact = radius_graph(x, radius)
    approx = ball_graph(x, radius, 10**8, exact_below=1000)
    to_set = lambda g: set(zip(np.repeat(np.arange(len(x)), np.diff(g[0])).tolist(), g[1].tolist()))  # noqa: E731
    e, a = to_set(exact), to_set(approx)
    assert a <= e  # every approximate edge is a true edge
    assert len(a) / len(e) >= 0.95
    assert all((j, i) in a for i, j in list(a)[:2000])  # symmetric
    assert ball_graph(x, radius, 10**8, exact_below=1000)[1] is approx[1]  # memoised


def test_knn_ball_graph_by_hand():
    """Points 0, 1, 2, 10 on a line; 2 neighbours each. radius 1.5: 0-1 and 1-2 only; radius 2.5
    adds 0-2 (in both lists); 3's neighbours are 8 and 9 away, so its ball is itself."""
    x = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    dist, idx = knn(x, 2, method="exact")
    balls = lambda g: [sorted(g[1][g[0][i] : g[0][i + 1]].tolist()) for i in range(4)]  # noqa: E731
    assert balls(knn_ball_graph(dist, idx, 1.5, 100)) == [[0, 1], [0, 1, 2], [1, 2], [3]]
    assert balls(knn_ball_graph(dist, idx, 2.5, 100)) == [[0, 1, 2], [0, 1, 2], [0, 1, 2], [3]]
    # truncation: with one neighbour per item, 0-2 is no edge even at radius 2.5
    d1, i1 = knn(x, 1, method="exact")
    assert balls(knn_ball_graph(d1, i1, 2.5, 100))[0] == [0, 1]
    with pytest.raises(ConfigError, match="max_edges"):
        knn_ball_graph(dist, idx, 2.5, 8)


def test_big_pool_paths_use_precomputed_neighbours_from_extras(monkeypatch):
    """TypiClust's and ProbCover's big-pool paths take the first k columns of the data stream's
    lists in PoolView.extras (the same picks as an exact search of k) and search nothing."""
    import dualstream.acquisition.coverage as cov

    x = mixture(3000, 8, seed=6)
    q = np.zeros(3000, dtype=bool)
    q[[5, 1500]] = True
    dist, idx = knn(x, 60, method="exact")
    plain = PoolView(x, np.ones(3000), np.zeros(3000), q, {})
    given = PoolView(x, np.ones(3000), np.zeros(3000), q, {"knn_distances": dist, "knn_indices": idx})
    exact_search = lambda emb, k, **kw: knn(emb, k, method="exact")  # noqa: E731
    monkeypatch.setattr(knn_mod, "knn_cached", exact_search)
    expected = {}
    for name in ("typiclust", "probcover"):
        cov._GRAPHS.clear()
        expected[name] = acquire(name, plain, 6, np.random.default_rng(0), exact_below=1000).indices

    def no_search(*args, **kwargs):
        raise AssertionError("searched although the lists were given")

    monkeypatch.setattr(knn_mod, "knn_cached", no_search)
    for name in ("typiclust", "probcover"):
        cov._GRAPHS.clear()
        sel = acquire(name, given, 6, np.random.default_rng(0), exact_below=1000)
        np.testing.assert_array_equal(sel.indices, expected[name])
    # too few columns: searched after all
    short = PoolView(x, np.ones(3000), np.zeros(3000), q, {"knn_distances": dist[:, :10], "knn_indices": idx[:, :10]})
    cov._GRAPHS.clear()
    with pytest.raises(AssertionError, match="searched"):
        acquire("typiclust", short, 6, np.random.default_rng(0), exact_below=1000)


def test_probcover_memoised_graph_same_picks():
    x = mixture(600, 4, seed=5)
    q = np.zeros(600, dtype=bool)
    q[[3, 300]] = True
    view = PoolView(x, np.ones(600), np.zeros(600), q, {})
    first = acquire("probcover", view, 8, np.random.default_rng(1))
    again = acquire("probcover", view, 8, np.random.default_rng(1))  # graph from the memo
    knn_mod.clear_cache()
    import dualstream.acquisition.coverage as cov

    cov._GRAPHS.clear()
    fresh = acquire("probcover", view, 8, np.random.default_rng(1))
    np.testing.assert_array_equal(first.indices, again.indices)
    np.testing.assert_array_equal(first.indices, fresh.indices)
    np.testing.assert_array_equal(first.utilities, fresh.utilities)


def test_data_stream_neighbour_lists_are_cached_beside_the_embedding(tmp_path, monkeypatch, caplog):
    """Big pools: the data stream searches max(k, 50) neighbours once, takes typicality from the
    first k columns (= a k-search), and a later process reads the lists from the cache folder."""
    from dualstream.streams import data_stream as ds

    x = mixture(600, 8, seed=7)
    assert ds.typicality_and_neighbours(x, 20, tmp_path)[1] is None  # small pool: no lists
    monkeypatch.setattr(knn_mod, "EXACT_BELOW", 100)
    typ, (dist, idx) = ds.typicality_and_neighbours(x, 20, tmp_path)
    assert dist.shape == idx.shape == (600, 50) and idx.dtype == np.int32
    np.testing.assert_allclose(typ, knn_typicality(x, 20, method="exact"), rtol=1e-6)
    assert (tmp_path / "neighbours_50.npz").exists()

    def no_search(*args, **kwargs):
        raise AssertionError("searched although the lists were cached")

    monkeypatch.setattr(knn_mod, "knn", no_search)
    again, (dist2, _) = ds.typicality_and_neighbours(x, 20, tmp_path)
    np.testing.assert_array_equal(again, typ)
    np.testing.assert_array_equal(dist2, dist)
    (tmp_path / "neighbours_50.npz").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING), pytest.raises(AssertionError, match="searched"):
        ds.typicality_and_neighbours(x, 20, tmp_path)
    assert "unreadable" in caplog.text
