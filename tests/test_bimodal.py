"""The pool-relative outlier rule (dualstream.streams.bimodal) and the embedding screen built on it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dualstream.acquisition import PoolView, acquire
from dualstream.acquisition.core import embedding_outliers
from dualstream.errors import ConfigError
from dualstream.streams.bimodal import bimodal_upper, two_gaussians


def test_two_separate_groups_are_found_and_measured():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 900), rng.normal(8, 1, 100)])
    fit = two_gaussians(x)
    np.testing.assert_allclose(fit.means, [0, 8], atol=0.3)
    np.testing.assert_allclose(fit.sds, [1, 1], atol=0.15)
    np.testing.assert_allclose(fit.weights, [0.9, 0.1], atol=0.01)
    assert fit.separation == pytest.approx(8, abs=0.5)
    flagged, _ = bimodal_upper(x)
    assert flagged[900:].all() and not flagged[:900].any()


@pytest.mark.parametrize("name", ["normal", "lognormal tail"])
def test_one_group_with_a_tail_flags_nothing(name):
    rng = np.random.default_rng(1)
    x = rng.normal(size=1000) if name == "normal" else rng.lognormal(0, 0.6, size=1000)
    flagged, fit = bimodal_upper(x)
    assert fit.separation < 3 and not flagged.any()


def test_a_majority_mode_is_not_an_outlier_group():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 1, 500), rng.normal(10, 1, 500)])  # far apart, but half the pool
    flagged, fit = bimodal_upper(x, max_share=0.3)
    assert fit.separation > 5 and not flagged.any()


def test_nan_and_degenerate_input():
    x = np.concatenate([np.zeros(50), np.full(5, 10.0), [np.nan]])
    flagged, fit = bimodal_upper(x)
    assert flagged[50:55].all() and not flagged[:50].any() and not flagged[55]  # NaN never flagged
    flagged, fit = bimodal_upper(np.ones(20))
    assert not flagged.any() and fit.separation == 0.0


def blob_with_a_section(n=300, section=30, seed=0):
    """A Gaussian blob of ``n`` clean items and ``section`` near-identical items away from it: a
    whole corrupted section, which looks *typical* to a kNN density (its members are each other's neighbours)."""
    rng = np.random.default_rng(seed)
    clean = rng.normal(size=(n, 8))
    defect = np.full((section, 8), 6.0) + 0.01 * rng.normal(size=(section, 8))
    return np.concatenate([clean, defect]).astype(np.float32)


def test_embedding_screen_finds_a_whole_section_only_when_k_exceeds_it():
    emb = blob_with_a_section()
    mask = embedding_outliers(emb, k=60)
    assert mask[300:].all() and mask[:300].mean() < 0.02
    assert not embedding_outliers(emb, k=10)[300:].any()  # k below the group: its members look dense
    assert not embedding_outliers(emb[:300], k=60).any()  # the clean blob alone: nothing screened
    assert not embedding_outliers(emb[:5], k=60).any()  # too small a pool to find a mode in


def test_dualstream_with_the_embedding_screen_skips_the_section():
    emb = blob_with_a_section()
    n = len(emb)
    typ = np.ones(n)
    typ[300:] = 5.0  # the section looks most typical ...
    unc = np.linspace(0.1, 0.5, n)
    unc[300:] = 1.0  # ... and most uncertain: plain dual-stream takes it first
    view = PoolView(emb, typ, unc, np.zeros(n, dtype=bool), {})
    plain = acquire("dualstream", view, 5, np.random.default_rng(0), diverse=False)
    assert (plain.indices >= 300).all()
    sel = acquire("dualstream_screen", view, 5, np.random.default_rng(0), diverse=False, screen_z=None,
                  screen_embedding=True, screen_k=60)
    assert (sel.indices < 300).all()
    assert (sel.utilities[300:] == -1.0).all()


def test_the_screen_reads_a_second_encoder_when_the_run_has_one():
    """screen_encoder: the veto looks at extras["screen_embedding"], the weight at the embedding."""
    with_section = blob_with_a_section()
    n = len(with_section)
    clean = np.random.default_rng(1).normal(size=(n, 8)).astype(np.float32)  # no outlying group
    typ, unc = np.ones(n), np.linspace(0.1, 0.5, n)
    unc[300:] = 1.0
    kw = dict(diverse=False, screen_z=None, screen_embedding=True, screen_k=60)
    # The weight's embedding sees nothing odd, the screen's sees the section: screened.
    view = PoolView(clean, typ, unc, np.zeros(n, dtype=bool), {"screen_embedding": with_section})
    sel = acquire("dualstream_screen", view, 5, np.random.default_rng(0), **kw)
    assert (sel.indices < 300).all() and (sel.utilities[300:] == -1.0).all()
    # And the other way round: an outlying group in the weight's embedding only is not screened.
    view = PoolView(with_section, typ, unc, np.zeros(n, dtype=bool), {"screen_embedding": clean})
    sel = acquire("dualstream_screen", view, 5, np.random.default_rng(0), **kw)
    assert (sel.indices >= 300).all() and not (sel.utilities == -1.0).any()


def test_bad_screen_parameters_are_one_config_error():
    with pytest.raises(ConfigError, match="screen_k >= 1, screen_separation > 0 and 0 < screen_max_share < 1"):
        embedding_outliers(np.zeros((20, 2)), k=0)
    with pytest.raises(ConfigError, match="screen_max_share"):
        embedding_outliers(np.zeros((20, 2)), max_share=1.5)


def test_big_pools_are_warned_about_once(monkeypatch, caplog):
    import dualstream.acquisition.core as core

    monkeypatch.setattr(core, "EXACT_KNN_MAX", 100)
    monkeypatch.setattr(core, "_warned_big_pool", False)
    emb = blob_with_a_section()
    with caplog.at_level("WARNING", logger="dualstream.acquisition.core"):
        embedding_outliers(emb, k=60)
        embedding_outliers(emb, k=60)
    warnings = [r for r in caplog.records if "within k-means clusters" in r.getMessage()]
    assert len(warnings) == 1 and "330 items" in warnings[0].getMessage()


def test_structure_module_imports_first():
    """streams.structure imports the acquisition package, which imports it back: either may load first."""
    import subprocess

    for module in ("dualstream.streams.structure", "dualstream.acquisition.core"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_the_screen_is_computed_once_per_embedding(monkeypatch):
    """Later rounds reuse the screen of the same frozen embedding; other parameters or data recompute."""
    import dualstream.acquisition.core as core

    calls = []
    real = core.st.outlier_z
    monkeypatch.setattr(core.st, "outlier_z", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(core, "_SCREENS", core.LRU(2))
    emb = blob_with_a_section()
    first = embedding_outliers(emb, k=60)
    first[:] = False  # the caller's copy: editing it must not reach the memo
    again = embedding_outliers(emb.copy(), k=60)  # equal content, another array: a round later
    assert len(calls) == 1 and again[300:].all()
    embedding_outliers(emb, k=50)
    embedding_outliers(emb[:300], k=60)
    assert len(calls) == 3


def test_outlier_z_equals_the_structure_s_on_small_and_big_pools():
    """The screen's light path gives embedding_structure's outlier_z: exact kNN, and within k-means clusters."""
    from dualstream.streams import structure as st

    emb = blob_with_a_section()
    np.testing.assert_allclose(st.outlier_z(emb, k=30), st.embedding_structure(emb, k=30).outlier_z)
    np.testing.assert_allclose(st.outlier_z(emb, k=30, exact_max=100), st.embedding_structure(emb, k=30, exact_max=100).outlier_z)
