"""Pins the two streams: kNN distances/typicality (data stream) and per-patch uncertainty measures (task stream)."""

from __future__ import annotations

import numpy as np
import pytest

from dualstream.streams.typicality import knn_distances, knn_typicality
from dualstream.streams.uncertainty import (
    bald,
    binary_entropy,
    binary_margin_uncertainty,
    patch_uncertainty,
    reduce_per_item,
)


def _brute_knn(x: np.ndarray, k: int) -> np.ndarray:
    x = x.astype(np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k]


# --- typicality ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n, d, k", [(20, 3, 4), (60, 8, 5)])
def test_knn_distances_match_brute_force(n, d, k):
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    got = knn_distances(x, k)
    assert got.shape == (n, k) and got.dtype == np.float32
    np.testing.assert_allclose(got, _brute_knn(x, k), rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(got, axis=1) >= 0)  # ascending per row


def test_knn_distances_block_independent_exact_small_pool():
    # Up to 25 items torch.cdist computes differences directly, so blocking changes nothing, bit for bit.
    x = np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32)
    np.testing.assert_array_equal(knn_distances(x, 5, block=3), knn_distances(x, 5, block=1024))
    np.testing.assert_array_equal(knn_distances(x, 5, block=1), knn_distances(x, 5, block=20))


def test_knn_distances_block_independent_large_pool():
    # Beyond 25 items torch.cdist switches to the matmul formulation, whose float32 rounding depends on
    # the block's shape: results agree to ~1 ulp, not bit for bit (observed max diff ~5e-7).
    x = np.random.default_rng(1).normal(size=(60, 6)).astype(np.float32)
    a, b = knn_distances(x, 5, block=3), knn_distances(x, 5, block=1024)
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(a, _brute_knn(x, 5), rtol=1e-5, atol=1e-5)


def test_knn_distances_hand_made():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_allclose(knn_distances(x, 2), [[1, 3], [1, 2], [2, 3], [4, 6]], atol=1e-6)


def test_knn_distances_k_clipped_and_degenerate():
    x = np.random.default_rng(2).normal(size=(4, 2))
    assert knn_distances(x, 10).shape == (4, 3)
    assert knn_distances(x[:1], 5).shape == (1, 0)
    np.testing.assert_array_equal(knn_typicality(x[:1], k=5), [1.0])


def test_knn_typicality_dense_above_isolated():
    rng = np.random.default_rng(3)
    cluster = rng.normal(scale=0.05, size=(30, 4))
    x = np.vstack([cluster, [[10.0, 10.0, 10.0, 10.0]]]).astype(np.float32)
    t = knn_typicality(x, k=5)
    assert t.shape == (31,) and t.dtype == np.float64
    assert np.argmin(t) == 30
    assert t[:30].min() > 10 * t[30]
    # definition: 1 / mean kNN distance
    np.testing.assert_allclose(t, 1.0 / (_brute_knn(x, 5).mean(1) + 1e-8), rtol=1e-4)


def test_knn_typicality_hand_made():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_allclose(knn_typicality(x, k=2), [1 / 2, 1 / 1.5, 1 / 2.5, 1 / 5], rtol=1e-6)


# --- uncertainty --------------------------------------------------------------------------------


def test_binary_entropy_values():
    h = binary_entropy(np.array([0.0, 0.5, 1.0, 0.25, 0.75]))
    assert h[1] == pytest.approx(1.0, abs=1e-12)
    assert h[0] < 1e-5 and h[2] < 1e-5
    expected = -(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75))  # 0.8113 bits
    assert h[3] == pytest.approx(expected, rel=1e-9) and h[4] == pytest.approx(expected, rel=1e-9)
    grid = binary_entropy(np.linspace(0, 1, 101))
    assert np.argmax(grid) == 50 and grid.max() <= 1.0 + 1e-12


def test_binary_margin():
    np.testing.assert_allclose(binary_margin_uncertainty(np.array([0.0, 0.25, 0.5, 1.0])), [0.0, 0.5, 1.0, 0.0])


def test_reduce_per_item():
    s = np.array(
        [
            [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]],  # 10 pixels
            [[0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1]],
        ]
    )
    np.testing.assert_allclose(reduce_per_item(s, "mean"), [3.0 / 10, 0.1])
    np.testing.assert_allclose(reduce_per_item(s, "max"), [1.0, 0.1])
    # top 20% of 10 pixels = 2 pixels: 1.0 and 0.8
    np.testing.assert_allclose(reduce_per_item(s, "topk_mean", topk=0.2), [0.9, 0.1])
    # top 40% = 4 pixels: 1.0, 0.8, 0.5, 0.5
    np.testing.assert_allclose(reduce_per_item(s, "topk_mean", topk=0.4), [0.7, 0.1])
    # a tiny share still takes at least one pixel
    np.testing.assert_allclose(reduce_per_item(s, "topk_mean", topk=0.01), [1.0, 0.1])
    with pytest.raises(ValueError, match="reduction"):
        reduce_per_item(s, "median")


def test_bald_zero_when_samples_agree_positive_when_not():
    agree = np.full((2, 4, 3, 3), 0.3)
    np.testing.assert_allclose(bald(agree), 0.0, atol=1e-12)
    disagree = np.zeros((1, 4, 2, 2))
    disagree[:, :2] = 1.0  # two samples say 1, two say 0: mean 0.5
    b = bald(disagree)
    assert b.shape == (1, 2, 2)
    np.testing.assert_allclose(b, 1.0, atol=1e-4)
    mild = np.array([0.4, 0.6, 0.4, 0.6]).reshape(1, 4, 1, 1)
    assert 0 < bald(mild).item() < 0.1


def test_patch_uncertainty_measures():
    probs = np.stack(
        [
            np.full((1, 2, 2), 0.5),  # maximally uncertain
            np.full((1, 2, 2), 0.99),  # confident
        ]
    )
    assert probs.shape == (2, 1, 2, 2)
    ent = patch_uncertainty(probs, "entropy")
    assert ent[0] == pytest.approx(1.0) and ent[1] < 0.1
    np.testing.assert_allclose(patch_uncertainty(probs, "margin"), [1.0, 0.02], atol=1e-9)
    # entropy of the MC mean: samples 0 and 1 average to 0.5
    mc = np.zeros((1, 2, 2, 2))
    mc[0, 0] = 1.0
    assert patch_uncertainty(mc, "entropy")[0] == pytest.approx(1.0)
    assert patch_uncertainty(mc, "bald")[0] == pytest.approx(1.0, abs=1e-4)


def test_patch_uncertainty_errors():
    with pytest.raises(ValueError, match="mc_samples"):
        patch_uncertainty(np.full((2, 1, 4, 4), 0.5), "bald")
    with pytest.raises(ValueError, match="unknown uncertainty measure"):
        patch_uncertainty(np.full((2, 2, 4, 4), 0.5), "variance")


@pytest.mark.parametrize("mc_samples", [1, 3])
def test_pool_uncertainty_reduced_per_batch_equals_the_whole_pool_reduction(mc_samples):
    """The per-batch reduction (memory of one batch) gives the numbers of reducing all probabilities at once."""
    import torch

    from dualstream.streams.task_stream import TaskStream

    rng = np.random.default_rng(0)
    pool = rng.random((300, 16, 16)).astype(np.float32)  # > one predict batch (256)
    masks = (pool > 0.7).astype(np.uint8)
    model = {"steps": 2, "batch_size": 4, "module": {"width": 4, "depth": 2, "mc_samples": mc_samples},
             "uncertainty": {"measure": "bald" if mc_samples > 1 else "entropy", "reduction": "topk_mean", "topk": 0.2}}
    trainer = {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
    stream = TaskStream(model, trainer, pool, pool[:4], masks[:4])
    stream.fit(pool[:8], masks[:8], seed=0)
    torch.manual_seed(1)
    u = stream.pool_uncertainty()
    extras = stream.pool_extras()
    torch.manual_seed(1)  # the same MC-dropout draws for the whole-pool reference
    probs = stream.pool_probabilities()
    assert probs.shape == (300, mc_samples, 16, 16)
    np.testing.assert_array_equal(u, patch_uncertainty(probs, model["uncertainty"]["measure"], "topk_mean", 0.2))
    np.testing.assert_array_equal(extras["margin"], patch_uncertainty(probs, "margin", "topk_mean", 0.2))
    np.testing.assert_array_equal(extras["foreground"], (probs.mean(axis=1) >= 0.5).mean(axis=(-2, -1)))
    assert extras["task_embedding"].shape[0] == 300 and extras["grad_embedding"].shape[0] == 300
    assert ("bald" in extras) == (mc_samples > 1)


def test_foreground_recall_on_the_labels():
    from dualstream.streams.uncertainty import foreground_recall

    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, :2] = 1  # 8 foreground pixels
    assert foreground_recall(np.zeros_like(masks), masks) == 0.0  # a cold model predicts none
    assert foreground_recall(masks, masks) == 1.0
    half = masks.copy()
    half[0, 1] = 0
    assert foreground_recall(half | (1 - masks), masks) == 0.5  # false positives do not count
    assert np.isnan(foreground_recall(masks, np.zeros_like(masks)))  # no labelled foreground: no reference


def _stream_on_eight_labels(**uncertainty):
    """A tiny U-Net task stream fitted on 8 of 40 random 16 x 16 patches; returns ``(stream, masks)``."""
    from dualstream.streams.task_stream import TaskStream

    rng = np.random.default_rng(0)
    pool = rng.random((40, 16, 16)).astype(np.float32)
    masks = (pool > 0.7).astype(np.uint8)
    model = {"steps": 2, "batch_size": 4, "module": {"width": 4, "depth": 2},
             "uncertainty": {"measure": "entropy", "topk": 0.2, **uncertainty}}
    trainer = {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
    stream = TaskStream(model, trainer, pool, pool[:4], masks[:4])
    stream.fit(pool[:8], masks[:8], seed=0)
    return stream, masks


def _assert_reduced_by(stream, reduction):
    """The stream's pool uncertainty and extras are ``reduction``'s, with no ``topk:`` leftovers."""
    import torch

    torch.manual_seed(1)
    u = stream.pool_uncertainty()
    extras = stream.pool_extras()
    probs = stream.pool_probabilities()
    np.testing.assert_array_equal(u, patch_uncertainty(probs, "entropy", reduction, 0.2))
    np.testing.assert_array_equal(extras["margin"], patch_uncertainty(probs, "margin", reduction, 0.2))
    np.testing.assert_array_equal(extras["least_confidence"], 0.5 * extras["margin"])
    assert not any(k.startswith("topk:") for k in extras)


@pytest.mark.parametrize("ratio, cold", [(1.0 + 1e-9, True), (0.0, False)])
def test_topk_when_cold_switches_the_reduction_by_the_model_state(ratio, cold):
    """topk_when_cold gives topk_mean's scores while cold and mean's otherwise, extras included."""
    stream, masks = _stream_on_eight_labels(reduction="topk_when_cold", cold_ratio=ratio)
    recall = stream.label_recall(batch=3)  # batches that do not divide the labels
    predicted = stream.predict_masks(np.arange(8))
    assert recall == pytest.approx(predicted[masks[:8] == 1].mean())
    _assert_reduced_by(stream, "topk_mean" if cold else "mean")
    assert stream.cold is cold  # ratio above 1: always cold; ratio 0: never


@pytest.mark.parametrize("until, reduction", [(9, "topk_mean"), (8, "mean")])
def test_topk_then_mean_switches_the_reduction_by_the_label_count(until, reduction):
    """topk_then_mean reduces by topk_mean while the model has fewer than topk_until labels, by mean from then on."""
    stream, _ = _stream_on_eight_labels(reduction="topk_then_mean", topk_until=until)
    _assert_reduced_by(stream, reduction)
