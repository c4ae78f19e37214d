"""Task-stream uncertainty: per-pixel scores from foreground probabilities, reduced to one per patch.

Shape-agnostic past the item axis: a 3D block (``data.patch_depth > 1``) is reduced over all its
voxels, so ``mean`` and ``topk_mean`` rank blocks exactly as they rank tiles.
"""

from __future__ import annotations

import numpy as np

REDUCTIONS = ("mean", "max", "topk_mean", "topk_when_cold", "topk_then_mean")
# ``topk_when_cold`` and ``topk_then_mean`` choose between two of the others per round, by the model's
# state (:func:`foreground_recall` under ``cold_ratio``) or by its label count (under ``topk_until``);
# they are not per-item rules: ``reduce_per_item`` never sees them.
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


def foreground_recall(predicted: np.ndarray, masks: np.ndarray) -> float:
    """Share of the labelled foreground pixels the model predicts foreground; NaN without any.

    Args:
        predicted: ``(L, ...)`` 0/1 masks the model predicts for its own labelled items.
        masks: ``(L, ...)`` 0/1 labelled masks, the same shape.

    A model fitted to a random start with almost no foreground predicts background everywhere
    (training loss stuck at the dice term's 1.0); its recall on its own labels is then near 0 and its
    mean per-patch uncertainty flat, while the top pixels of each patch still rank patches (BENCHMARKS
    §3, candidates F and G). Read on the labels, not the pool: a pool's artifacts may look like
    foreground to a cold model, and the labelled patches are the model's best case.
    """
    fg = np.asarray(masks).astype(bool)
    if not fg.any():
        return float("nan")
    return float(np.asarray(predicted).astype(bool)[fg].mean())


def patch_uncertainty(probs: np.ndarray, measure: str = "entropy", reduction: str = "mean", topk: float = 0.1) -> np.ndarray:
    """Per-patch uncertainty ``(N,)`` from probabilities: :func:`pixel_uncertainty`, then :func:`reduce_per_item`."""
    return reduce_per_item(pixel_uncertainty(probs, measure), reduction, topk)


def pixel_uncertainty(probs: np.ndarray, measure: str = "entropy") -> np.ndarray:
    """Per-pixel uncertainty ``(N, Y, X)`` (3D: ``(N, D, Y, X)``) in ``[0, 1]``.

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
    return pixel
