"""The loop's bookkeeping: budget, skips, paired initial sets, stream correlation, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from dualstream.errors import ConfigError, EmptyPoolError
from dualstream.loop import ActiveLearningLoop, LoopSettings, stream_correlation
from dualstream.oracle import SimulatedAnnotator
from dualstream.streams.data_stream import DataStream

from conftest import compose_config


class FakeTask:
    """Task model whose score is the share of labelled patches and whose uncertainty is fixed."""

    def __init__(self, uncertainty: np.ndarray):
        self.u = uncertainty
        self.fits: list[int] = []

    def fit(self, images, masks, seed):
        self.fits.append(len(images))
        return 0.0

    def score(self):
        return self.fits[-1] / 100.0

    def pool_uncertainty(self):
        return self.u


def make_loop(n=40, artifacts=(), acquisition="uncertainty", initial=4, batch=3, rounds=3, seed=0, records=None, schedule=None):
    rng = np.random.default_rng(0)
    images = rng.random((n, 8, 8), dtype=np.float32)
    labels = (images > 0.5).astype(np.uint8)
    ignore = np.zeros(n, dtype=np.float32)
    ignore[list(artifacts)] = 1.0
    emb = rng.normal(size=(n, 4)).astype(np.float32)
    stream = DataStream(emb, np.linspace(1, 2, n), 0.0, False, "k")
    task = FakeTask(np.arange(n, dtype=float))  # higher index = more uncertain
    loop = ActiveLearningLoop(
        images, stream, task, SimulatedAnnotator(labels, ignore), acquisition, {}, LoopSettings(initial, batch, rounds, schedule), seed,
        on_round=(records.append if records is not None else None), progress=False,
    )
    return loop, task


def test_budget_accounting_and_records():
    seen = []
    loop, task = make_loop(records=seen)
    records = loop.run()
    assert [r.round for r in records] == [0, 1, 2, 3]
    assert [r.n_queried for r in records] == [4, 7, 10, 13]
    assert [r.n_labeled for r in records] == [4, 7, 10, 13]
    assert task.fits == [4, 7, 10, 13]
    assert seen == records  # on_round sees each record as soon as it is measured
    # Uncertainty sampling with uncertainty = index: rounds take the highest free indices.
    assert loop.queried[-9:].all()


def test_artifacts_spend_budget_and_are_never_requeried():
    artifacts = [39, 38, 37]  # the three most uncertain patches are artifacts
    loop, task = make_loop(artifacts=artifacts)
    records = loop.run()
    assert records[1].n_queried == 7
    assert records[1].n_skipped == 3
    assert records[1].n_labeled == 4
    assert not loop.labeled[artifacts].any()
    assert loop.queried[artifacts].all()
    assert records[-1].n_queried == 13 and records[-1].n_skipped == 3


def test_initial_set_is_the_same_for_every_strategy():
    a, _ = make_loop(acquisition="uncertainty", rounds=0)
    b, _ = make_loop(acquisition="random", rounds=0)
    a.run()
    b.run()
    assert np.array_equal(np.flatnonzero(a.queried), np.flatnonzero(b.queried))
    c, _ = make_loop(acquisition="random", rounds=0, seed=1)
    c.run()
    assert not np.array_equal(np.flatnonzero(a.queried), np.flatnonzero(c.queried))


def test_over_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="only 40 items"):
        make_loop(initial=10, batch=10, rounds=4)


def test_all_initial_queries_artifacts_is_a_clear_error():
    loop, _ = make_loop(artifacts=range(40))
    with pytest.raises(EmptyPoolError, match="artifacts"):
        loop.run()


def test_stream_correlation():
    x = np.arange(10.0)
    assert stream_correlation(x, x**3) == pytest.approx(1.0)
    assert stream_correlation(x, -x) == pytest.approx(-1.0)
    assert np.isnan(stream_correlation(x, np.ones(10)))


def test_schedule_gives_cumulative_budgets():
    loop, task = make_loop(schedule=(2, 4, 8, 16))
    records = loop.run()
    assert [r.n_queried for r in records] == [2, 4, 8, 16]
    assert task.fits == [2, 4, 8, 16]


def test_schedule_initial_set_matches_initial_batch_rounds():
    a, _ = make_loop(initial=4, batch=4, rounds=2)
    b, _ = make_loop(schedule=(4, 8, 12))
    assert [r.n_queried for r in a.run()] == [r.n_queried for r in b.run()]
    assert np.array_equal(a.queried, b.queried)  # same budgets -> the same run


@pytest.mark.parametrize("schedule", [(4, 4, 8), (8, 4), (0, 4), ()])
def test_bad_schedule_is_a_config_error(schedule):
    with pytest.raises(ConfigError, match="loop.schedule"):
        LoopSettings(0, 0, 0, schedule).check(100)


def test_schedule_from_config():
    s = LoopSettings.from_config({"initial": 10, "batch": 10, "rounds": 5, "schedule": [4, 8, 16]})
    assert s.budgets == [4, 8, 16] and s.batch_at(0) == 4 and s.batch_at(1) == 8 and s.total == 16
    assert LoopSettings.from_config({"initial": 2, "batch": 3, "rounds": 2, "schedule": None}).budgets == [2, 5, 8]
    with pytest.raises(ConfigError, match="loop.schedule"):
        LoopSettings.from_config({"schedule": ["a"]})
    with pytest.raises(ConfigError, match="loop.initial"):
        LoopSettings.from_config({"initial": "abc", "batch": 1, "rounds": 1})


# --- a lab's cold start behind the quality screen ------------------------------------------------------


def blank_cluster_pool(seed=0):
    """60 tiles: 0..19 blank (a pixel-statistics outlier) and one tight, dense cluster of the embedding,
    the biggest there is; 20..59 ordinary tiles in two looser clusters (as a corrupted section looks to
    TypiClust: the largest cluster to cover)."""
    from dualstream.streams.pixel_stats import pixel_statistics

    rng = np.random.default_rng(seed)
    images = rng.random((60, 8, 8), dtype=np.float32)
    images[:20] = 0.0
    emb = np.vstack([0.01 * rng.normal(size=(20, 4)), rng.normal(size=(20, 4)) + 6.0, rng.normal(size=(20, 4)) - 6.0])
    stream = DataStream(emb.astype(np.float32), np.r_[np.full(20, 9.0), np.ones(40)], 0.0, False, "k")
    return images, stream, {"pixel_stats": pixel_statistics(images)}


@pytest.mark.parametrize("screen", [None, {"screen_z": 3.5, "screen_embedding": False}])
def test_a_typiclust_cold_start_skips_what_the_quality_screen_flags(screen):
    images, stream, extras = blank_cluster_pool()
    ignore = np.r_[np.ones(20), np.zeros(40)].astype(np.float32)
    loop = ActiveLearningLoop(
        images, stream, FakeTask(np.zeros(60)), SimulatedAnnotator((images > 0.5).astype(np.uint8), ignore), "uncertainty", {},
        LoopSettings(6, 3, 0), seed=0, progress=False, static_extras=extras, cold_start="typiclust", cold_screen=screen,
    )
    loop.run()
    first = loop.proposed[0]
    if screen is None:
        assert (first < 20).any()  # unscreened, TypiClust covers the blank cluster too: the test can fail
    else:
        assert (first >= 20).all() and len(first) == 6


def test_the_cold_start_screen_steps_aside_when_it_would_leave_too_few(caplog):
    from dualstream.acquisition import PoolView
    from dualstream.loop import cold_start_selection

    images, stream, extras = blank_cluster_pool()
    view = PoolView(stream.embedding, stream.typicality, np.full(60, np.nan), np.r_[np.zeros(20, bool), np.ones(36, bool), np.zeros(4, bool)], extras)
    with caplog.at_level("WARNING"):
        sel = cold_start_selection("typiclust", view, 6, np.random.default_rng(0), {"screen_z": 3.5})
    assert len(sel.indices) == 6 and (sel.indices < 20).sum() >= 2  # only 4 unscreened candidates were left
    assert "not screening" in caplog.text


def test_cold_screen_params_follow_the_acquisitions_screen():
    from dualstream.runner import COLD_SCREEN_DEFAULTS, cold_screen_params

    assert cold_screen_params(compose_config([])) is None  # a random start: nothing to screen
    own = cold_screen_params(compose_config(["loop.cold_start=typiclust", "acquisition.params.screen_z=4.5"]))
    assert own == {**COLD_SCREEN_DEFAULTS, "screen_z": 4.5}
    assert cold_screen_params(compose_config(["loop.cold_start=typiclust", "acquisition=uncertainty"])) == COLD_SCREEN_DEFAULTS
    assert cold_screen_params(compose_config(["loop.cold_start=typiclust", "loop.cold_screen=false"])) is None


def test_cold_screen_must_be_a_bool(tmp_path):
    from dualstream.validate import validate

    with pytest.raises(ConfigError, match="loop.cold_screen: expected true or false"):
        validate(compose_config(["loop.cold_start=typiclust", "loop.cold_screen=maybe"]), tmp_path / "run", check_files=False)
