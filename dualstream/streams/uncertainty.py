"""Task-stream uncertainty: per-pixel scores from foreground probabilities, reduced to one per patch.

Shape-agnostic past the item axis: a 3D block (``data.patch_depth > 1``) is reduced over all its
voxels, so ``mean`` and ``topk_mean`` rank blocks exactly as they rank tiles.
"""

from __future__ import annotations

import numpy as np

REDUCTIONS = ("mean", "max", "topk_mean", "topk_when_cold")
# ``topk_when_cold`` is a choice between two of the others made per round by the model's state
# (:func:`cold_model`), not a per-item rule: ``reduce_per_item`` never sees it.
MEASURES = ("entropy", "margin", "bald")


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Per-pixel entropy of a Bernoulli in bits, ``[0, 1]``; ``p`` any shape."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def binary_margin_uncertainty(p: np.ndarray) -> np.ndarray:
    """Per-pixel ``1 - |p(fg) - p(bg)|``, ``[0, 1]``; 1 at ``p = 0.5``."""
    return 1.0 - np.abs(2 * p - 1)


def bald(samples: np.ndarray) -> np.ndarray:
    """Per-pixel BALD mutual information from MC samples ``(N, T, ...)`` -> ``(N, ...)``, in bits."""
    return binary_entropy(samples.mean(axis=1)) - binary_entropy(samples).mean(axis=1)


def reduce_per_item(scores: np.ndarray, reduction: str = "mean", topk: float = 0.1) -> np.ndarray:
    """Reduce per-pixel scores ``(N, ...)`` to per-item ``(N,)``.

    ``mean`` over pixels; ``max``; ``topk_mean``: mean of the top ``topk`` share of pixels, which
    keeps a small uncertain object from being drowned by a confident background.
    """
    flat = scores.reshape(scores.shape[0], -1)
    if reduction == "mean":
        return flat.mean(axis=1)
    if reduction == "max":
        return flat.max(axis=1)
    if reduction == "topk_mean":
        m = max(1, int(round(topk * flat.shape[1])))
        return np.sort(flat, axis=1)[:, -m:].mean(axis=1)
    raise ValueError(f"unknown reduction '{reduction}'; choose one of {REDUCTIONS}")


def cold_model(predicted_foreground: np.ndarray, label_foreground: float, ratio: float) -> bool:
    """Whether the task model still finds almost none of the foreground its labels hold.

    Args:
        predicted_foreground: ``(N,)`` share of each pool item's pixels the model predicts foreground.
        label_foreground: share of foreground pixels in the labelled masks it was trained on.
        ratio: cold when the pool's mean predicted share is below ``ratio * label_foreground``.

    A model trained on a random start with almost no foreground predicts background everywhere; its
    mean per-patch uncertainty is then flat and ranks nothing (BENCHMARKS §3, candidate F), while the
    top pixels of each patch still do. Labels without any foreground give no reference: not cold.
    """
    if label_foreground <= 0.0:
        return False
    return float(np.mean(predicted_foreground)) < ratio * label_foreground


def patch_uncertainty(probs: np.ndarray, measure: str = "entropy", reduction: str = "mean", topk: float = 0.1) -> np.ndarray:
    """Per-patch uncertainty ``(N,)`` from probabilities.

    Args:
        probs: ``(N, T, Y, X)`` (3D blocks: ``(N, T, D, Y, X)``) foreground probabilities; ``T`` MC
            samples (``T = 1`` without MC dropout).
        measure: ``entropy`` or ``margin`` of the mean prediction, or ``bald`` (needs ``T > 1``).
    """
    if measure == "bald":
        if probs.shape[1] < 2:
            raise ValueError("measure 'bald' needs MC-dropout samples: set model.mc_samples > 1")
        pixel = bald(probs)
    elif measure == "entropy":
        pixel = binary_entropy(probs.mean(axis=1))
    elif measure == "margin":
        pixel = binary_margin_uncertainty(probs.mean(axis=1))
    else:
        raise ValueError(f"unknown uncertainty measure '{measure}'; choose one of {MEASURES}")
    return reduce_per_item(pixel, reduction, topk)
