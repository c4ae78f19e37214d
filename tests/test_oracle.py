"""Pins the simulated annotator: artifacts (ignore share >= threshold) are skipped, masks come back in query order."""

from __future__ import annotations

import numpy as np

from dualstream.oracle import Answers, SimulatedAnnotator


def _labels(n: int = 6, p: int = 3) -> np.ndarray:
    # patch i is filled with (i % 2) except pixel (0, 0) = i, so every mask is distinguishable
    out = np.zeros((n, p, p), np.uint8)
    for i in range(n):
        out[i] = i % 2
        out[i, 0, 0] = i
    return out


def test_skips_artifacts_at_threshold():
    labels = _labels()
    share = np.array([0.0, 0.5, 0.49, 1.0, 0.2, 0.7], np.float32)
    ann = SimulatedAnnotator(labels, share, threshold=0.5)
    ans = ann.annotate(np.array([5, 2, 1, 0, 3]))
    assert isinstance(ans, Answers)
    assert ans.labeled.tolist() == [2, 0]  # 0.49 < 0.5 is labelled; 0.5 (==) and above are skipped
    assert ans.skipped.tolist() == [5, 1, 3]
    assert ans.labeled.dtype == np.int64 and ans.skipped.dtype == np.int64


def test_masks_in_query_order():
    labels = _labels()
    ann = SimulatedAnnotator(labels, np.zeros(6), threshold=0.5)
    order = np.array([4, 1, 3, 0])
    ans = ann.annotate(order)
    assert ans.labeled.tolist() == [4, 1, 3, 0]
    assert ans.skipped.tolist() == []
    assert ans.masks.shape == (4, 3, 3)
    np.testing.assert_array_equal(ans.masks, labels[order])
    assert [int(m[0, 0]) for m in ans.masks] == [4, 1, 3, 0]


def test_custom_threshold_and_list_input():
    labels = _labels()
    share = np.array([0.0, 0.3, 0.2, 0.1, 0.25, 0.9])
    ann = SimulatedAnnotator(labels, share, threshold=0.25)
    ans = ann.annotate([1, 2, 4, 3])
    assert ans.labeled.tolist() == [2, 3]
    assert ans.skipped.tolist() == [1, 4]
    np.testing.assert_array_equal(ans.masks, labels[[2, 3]])


def test_all_skipped_gives_empty_masks():
    labels = _labels()
    ann = SimulatedAnnotator(labels, np.ones(6), threshold=0.5)
    ans = ann.annotate(np.array([0, 1]))
    assert ans.labeled.size == 0
    assert ans.masks.shape == (0, 3, 3)
    assert ans.skipped.tolist() == [0, 1]
