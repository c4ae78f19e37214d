"""``dualstream_screen``: dual-stream behind the pixel-statistics quality screen, and the shared ``exclude`` step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dualstream.acquisition import REGISTRY, PoolView, acquire
from dualstream.acquisition.pixel_veto import robust_z
from dualstream.errors import ConfigError
from test_acquisition_anchors import veto_pool  # 120 textures, a blank tile (7) and a noise tile (40)
from test_acquisition_zoo import check_contract, view_of

ARTIFACTS = [7, 40]


def typical_artifacts():
    """The anchors' veto pool with the two artifacts also the *most typical* items: a cluster of
    identical defects looks typical to a kNN density, so plain dual-stream ranks them first."""
    view = veto_pool()
    t = np.random.default_rng(1).random(len(view))
    t[ARTIFACTS] = [2.0, 3.0]
    return PoolView(view.embedding, t, view.uncertainty, view.queried, view.extras)


def test_registered_with_a_config():
    assert REGISTRY["dualstream_screen"] is REGISTRY["dualstream"]
    text = (Path(__file__).resolve().parents[1] / "conf" / "acquisition" / "dualstream_screen.yaml").read_text()
    assert "name: dualstream_screen\n" in text and "screen_z: 3.5" in text


@pytest.mark.parametrize("diverse", [False, True])
def test_without_screen_it_is_dualstream(diverse):
    view = typical_artifacts()
    a = acquire("dualstream", view, 6, np.random.default_rng(3), diverse=diverse)
    b = acquire("dualstream_screen", view, 6, np.random.default_rng(3), diverse=diverse, screen_z=None)
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_array_equal(a.utilities, b.utilities)


def test_plain_dualstream_takes_the_typical_artifacts_the_screen_does_not():
    view = typical_artifacts()
    plain = acquire("dualstream", view, 2, np.random.default_rng(0), diverse=False)
    assert sorted(plain.indices.tolist()) == ARTIFACTS  # most uncertain and most typical: the top two

    sel = acquire("dualstream_screen", view, 2, np.random.default_rng(0), diverse=False, screen_z=3.5)
    check_contract(view, sel, 2)
    # By hand: the screen removes exactly the two artifacts, so the picks are plain dual-stream's
    # 3rd and 4th, and the two utilities are -max|z| (below every kept candidate's).
    assert sel.indices.tolist() == plain_order(view)[2:4]
    outlying = np.abs(robust_z(view.extras["pixel_stats"])).max(1)
    np.testing.assert_allclose(sel.utilities[ARTIFACTS], -outlying[ARTIFACTS])
    assert np.nanmin(np.delete(sel.utilities, ARTIFACTS)) > 0


def plain_order(view):
    """Plain dual-stream's full order over the candidates (no diversity)."""
    sel = acquire("dualstream", view, len(view.candidates), np.random.default_rng(0), diverse=False)
    return sel.indices.tolist()


def test_diverse_batches_never_hold_a_screened_item_while_others_remain():
    view = typical_artifacts()
    for seed in range(5):
        sel = acquire("dualstream_screen", view, 20, np.random.default_rng(seed), screen_z=3.5)
        check_contract(view, sel, 20)
        assert not np.isin(sel.indices, ARTIFACTS).any()


@pytest.mark.parametrize("diverse", [False, True])
def test_screened_items_fill_the_batch_last_least_outlying_first(diverse):
    view = typical_artifacts()
    # Only one clean candidate (3) left besides the two artifacts: it first, then the artifact whose
    # pixel statistics are closer to the pool's.
    rest = PoolView(view.embedding, view.typicality, view.uncertainty, ~np.isin(np.arange(120), [3, *ARTIFACTS]), view.extras)
    sel = acquire("dualstream_screen", rest, 3, np.random.default_rng(0), diverse=diverse, screen_z=3.5)
    outlying = np.abs(robust_z(view.extras["pixel_stats"])).max(1)
    first, second = sorted(ARTIFACTS, key=lambda i: outlying[i])
    assert sel.indices.tolist() == [3, first, second]


def test_screen_errors():
    view = typical_artifacts()
    with pytest.raises(ConfigError, match="screen_z must be > 0"):
        acquire("dualstream_screen", view, 2, np.random.default_rng(0), screen_z=0)
    with pytest.raises(ConfigError, match=r"dualstream.*'pixel_stats'"):
        acquire("dualstream_screen", view_of(np.zeros((5, 2))), 2, np.random.default_rng(0), screen_z=3.5)


def test_mix_leaves_uncertainty_alone_late_and_keeps_the_screen():
    view = typical_artifacts()
    late = PoolView(view.embedding, view.typicality, view.uncertainty, np.isin(np.arange(120), np.arange(60, 124)), view.extras)
    assert late.queried.sum() == 60
    kw = dict(diverse=False, screen_z=3.5, mix=True, mix_start=8, mix_end=32)
    sel = acquire("dualstream_screen", late, 5, np.random.default_rng(0), **kw)
    cand = np.setdiff1d(late.candidates, ARTIFACTS)  # past mix_end: beta 0, uncertainty alone, screen kept
    assert sel.indices.tolist() == cand[np.argsort(-late.uncertainty[cand], kind="stable")[:5]].tolist()
    # Without the mix the typicality still reorders the batch.
    plain = acquire("dualstream_screen", late, 5, np.random.default_rng(0), **{**kw, "mix": False})
    assert plain.indices.tolist() != sel.indices.tolist()
    # Early (4 queried) the mix changes nothing.
    early = [acquire("dualstream_screen", view, 5, np.random.default_rng(0), **{**kw, "mix": m}).indices.tolist() for m in (True, False)]
    assert early[0] == early[1]
    with pytest.raises(ConfigError, match="mix_start < mix_end"):
        acquire("dualstream_screen", view, 2, np.random.default_rng(0), mix=True, mix_start=64, mix_end=8)


def test_diverse_end_gives_the_plain_top_batch_from_that_many_labels():
    view = typical_artifacts()  # 4 queried
    late = PoolView(view.embedding, view.typicality, view.uncertainty, np.isin(np.arange(120), np.arange(60, 124)), view.extras)
    kw = dict(screen_z=3.5, diverse_end=32)
    # 60 queried >= 32: exactly what diverse=False picks (top-B by utility among the screened).
    got = acquire("dualstream_screen", late, 8, np.random.default_rng(0), **kw)
    top = acquire("dualstream_screen", late, 8, np.random.default_rng(0), screen_z=3.5, diverse=False)
    assert got.indices.tolist() == top.indices.tolist()
    assert got.indices.tolist() != acquire("dualstream_screen", late, 8, np.random.default_rng(0), screen_z=3.5).indices.tolist()
    # 4 queried < 32: still the diverse batch.
    early = [acquire("dualstream_screen", view, 8, np.random.default_rng(0), screen_z=3.5, **e).indices.tolist() for e in ({"diverse_end": 32}, {})]
    assert early[0] == early[1]
    with pytest.raises(ConfigError, match="diverse_end must be a label count"):
        acquire("dualstream_screen", view, 2, np.random.default_rng(0), diverse_end=0)
