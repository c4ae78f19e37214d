"""Artifact injection: how many, which, marked for the annotator, reproducible, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from dualstream.artifacts import ARTIFACTS, inject_artifacts
from dualstream.errors import ConfigError
from dualstream.oracle import SimulatedAnnotator
from dualstream.patches import PatchPool


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
