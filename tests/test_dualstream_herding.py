"""``dualstream_herding``: Uncertainty Herding in the frozen embedding behind the quality screen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dualstream.acquisition import REGISTRY, PoolView, acquire
from dualstream.acquisition.pixel_veto import robust_z
from dualstream.errors import ConfigError
from test_acquisition_anchors import veto_pool  # 120 textures, a blank tile (7) and a noise tile (40), both most uncertain
from test_acquisition_zoo import check_contract, view_of

ARTIFACTS = [7, 40]


def test_registered_with_a_config():
    assert "dualstream_herding" in REGISTRY
    text = (Path(__file__).resolve().parents[1] / "conf" / "acquisition" / "dualstream_herding.yaml").read_text()
    assert "name: dualstream_herding\n" in text and "screen_z: 3.5" in text and "beta: 0.0" in text


@pytest.mark.parametrize("batch", [1, 5])
def test_without_screen_or_typicality_it_is_uherding(batch):
    view = veto_pool()
    a = acquire("uherding", view, batch, np.random.default_rng(3), sigma=1.5)
    b = acquire("dualstream_herding", view, batch, np.random.default_rng(3), sigma=1.5, screen_z=None, beta=0.0)
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_array_equal(a.utilities, b.utilities)


def test_screen_keeps_the_uncertain_artifacts_out():
    view = veto_pool()
    plain = acquire("uherding", view, 5, np.random.default_rng(0), sigma=1.5)
    assert set(plain.indices.tolist()) & set(ARTIFACTS)  # the most uncertain items attract plain herding
    sel = acquire("dualstream_herding", view, 5, np.random.default_rng(0), sigma=1.5)
    check_contract(view, sel, 5)
    assert not set(sel.indices.tolist()) & set(ARTIFACTS)
    outlying = np.abs(robust_z(view.extras["pixel_stats"])).max(1)
    np.testing.assert_allclose(sel.utilities[ARTIFACTS], -outlying[ARTIFACTS])  # the screen's penalty, below every gain
    assert (np.delete(sel.utilities, ARTIFACTS + [0, 1]) >= 0).all()


def test_screened_items_carry_no_weight():
    # 1-D, sigma 1: a clean item at 0, a clean item at 10 beside two uncertain screened items at 10.1, 10.2.
    # With weight on the screened items, 10 would gain from covering them (0.5 + ~2 x 1) and win; with
    # weight 0 the two clean items gain the same 0.5 and the lower index (0) wins.
    emb = np.array([0.0, 10.0, 10.1, 10.2] + [50.0 + i for i in range(8)])
    unc = np.array([0.5, 0.5, 1.0, 1.0] + [0.0] * 8)
    stats = np.tile(np.linspace(0.4, 0.6, 12)[:, None], (1, 6))
    stats[[2, 3]] = 100.0  # far off the pool's statistics: screened
    view = view_of(emb, uncertainty=unc, pixel_stats=stats)
    unscreened = acquire("dualstream_herding", view, 1, np.random.default_rng(0), sigma=1.0, screen_z=None)
    assert unscreened.indices.tolist() == [2]  # the artifact itself covers the most weight
    sel = acquire("dualstream_herding", view, 2, np.random.default_rng(0), sigma=1.0)
    assert sel.indices.tolist() == [0, 1]
    np.testing.assert_allclose(sel.utilities[[0, 1]], [0.5, 0.5], atol=1e-6)


def test_fills_with_the_least_outlying_screened_items_when_nothing_else_is_left():
    view = veto_pool()
    left = ~np.isin(np.arange(120), [3, 7, 40])  # one clean candidate and the two artifacts
    rest = PoolView(view.embedding, view.typicality, view.uncertainty, left, view.extras)
    sel = acquire("dualstream_herding", rest, 3, np.random.default_rng(0), sigma=1.5)
    outlying = np.abs(robust_z(view.extras["pixel_stats"])).max(1)
    assert sel.indices[0] == 3 and sel.indices[1] == ARTIFACTS[int(np.argmin(outlying[ARTIFACTS]))]
    check_contract(rest, sel, 3)


def test_beta_weighs_by_typicality():
    # Two isolated, equally uncertain items; item 1 is the more typical. beta = 0: a tie, the lower index;
    # beta = 1: weights 0.5 x pct 0.5 vs 0.5 x pct 1.0, so item 1.
    view = view_of([0.0, 10.0], uncertainty=[0.5, 0.5], typicality=[1.0, 2.0])
    assert acquire("dualstream_herding", view, 1, np.random.default_rng(0), sigma=1.0, screen_z=None).indices.tolist() == [0]
    sel = acquire("dualstream_herding", view, 1, np.random.default_rng(0), sigma=1.0, screen_z=None, beta=1.0)
    assert sel.indices.tolist() == [1]
    np.testing.assert_allclose(sel.utilities, [0.5, 1.0], atol=1e-6)  # weights: u / max u = 1, times pct(t) = 0.5 / 1.0


def test_errors():
    view = veto_pool()
    with pytest.raises(ConfigError, match="beta must be >= 0"):
        acquire("dualstream_herding", view, 2, np.random.default_rng(0), beta=-1)
    with pytest.raises(ConfigError, match="screen_z must be > 0"):
        acquire("dualstream_herding", view, 2, np.random.default_rng(0), screen_z=0)
    with pytest.raises(ConfigError, match=r"dualstream_herding.*'pixel_stats'"):
        acquire("dualstream_herding", view_of(np.zeros((5, 2))), 2, np.random.default_rng(0))
