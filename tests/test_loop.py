"""The loop's bookkeeping: budget, skips, paired initial sets, stream correlation, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from dualstream.errors import ConfigError, EmptyPoolError
from dualstream.loop import ActiveLearningLoop, LoopSettings, stream_correlation
from dualstream.oracle import SimulatedAnnotator
from dualstream.streams.data_stream import DataStream


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
