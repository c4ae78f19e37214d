"""Objects and matching for the detection (proposal verification) task: pure functions over arrays.

Objects are connected components (8-connectivity) of a binary mask, per 2D section: the EPFL sections
are not contiguous, so an object never spans sections.

The matching rule (one rule, used everywhere: the simulated annotator's True/False, proposal-stage
recall, and the test metrics):

    A proposal is matched to the ground-truth object of its section with which it has the highest
    pixel IoU; it is **True** when that IoU is ``>= match_iou``, else False.

``match_iou`` defaults to 0.3 (``task.match_iou``), lower than the usual 0.5 on purpose: proposals come
from a detector thresholded at a *low* probability (for recall), so their masks are bloated relative
to the ground truth, and on small objects (PSDs are ~100-300 pixels at 10 nm) a one- or two-pixel
boundary disagreement alone costs 0.2-0.3 IoU. 0.3 still demands that most of the proposal lies on the
object (a proposal twice the object's area that covers it has IoU 0.5).

When scoring a set of accepted proposals, each object counts once: among the accepted proposals
matched to the same object the one with the highest IoU is the true positive and the others are false
positives (duplicates), as in standard detection scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# 8-connectivity: a diagonal touch joins pixels, so thin or jagged masks stay one object.
CONNECTIVITY = np.ones((3, 3), dtype=bool)


def label_components(mask: np.ndarray, min_size: int = 1) -> tuple[np.ndarray, int]:
    """Connected components of a 2D binary mask, dropping those under ``min_size`` pixels.

    Args:
        mask: ``(H, W)`` bool (or anything ``!= 0`` is foreground).
        min_size: smallest component kept, in pixels.

    Returns:
        ``(labels, n)``: ``(H, W)`` int32 map, 0 = background, kept components numbered ``1..n`` in
        scan order (scipy's order, so numbering is deterministic).
    """
    labels, n = ndimage.label(np.asarray(mask) != 0, structure=CONNECTIVITY)
    if n == 0 or min_size <= 1:
        return labels.astype(np.int32), int(n)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_size
    keep[0] = False
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return relabel[labels], int(keep.sum())


def component_centroids(labels: np.ndarray, n: int) -> np.ndarray:
    """``(n, 2)`` float64 ``(y, x)`` centroids (pixel centres) of components ``1..n`` of ``labels``."""
    if n == 0:
        return np.zeros((0, 2), dtype=np.float64)
    return np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, np.arange(1, n + 1)), dtype=np.float64).reshape(n, 2)


@dataclass
class GroundTruthObjects:
    """Ground-truth objects of a set of sections (connected components of the label mask).

    Attributes:
        z: ``(K,)`` int64 section index of each object (in the source volume).
        centroids_vox: ``(K, 3)`` float64 ``z, y, x`` centroid in (downsampled) voxels.
        centroids_nm: ``(K, 3)`` float64 the same in nanometres.
        areas: ``(K,)`` int64 pixels.
    """

    z: np.ndarray
    centroids_vox: np.ndarray
    centroids_nm: np.ndarray
    areas: np.ndarray

    def __len__(self) -> int:
        return int(self.z.shape[0])

    @staticmethod
    def concatenate(parts: list["GroundTruthObjects"]) -> "GroundTruthObjects":
        if not parts:
            return GroundTruthObjects(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64))
        return GroundTruthObjects(
            np.concatenate([p.z for p in parts]),
            np.concatenate([p.centroids_vox for p in parts]),
            np.concatenate([p.centroids_nm for p in parts]),
            np.concatenate([p.areas for p in parts]),
        )


def section_objects(mask: np.ndarray, z: int, voxel_size: tuple[float, float, float]) -> tuple[GroundTruthObjects, np.ndarray]:
    """Ground-truth objects of one section.

    Args:
        mask: ``(H, W)`` ground-truth foreground.
        z: the section's index (stored with each object).
        voxel_size: ``(z, y, x)`` nm.

    Returns:
        ``(objects, labels)``: the objects, and the ``(H, W)`` int32 map numbering them ``1..K`` in
        the order of ``objects``.
    """
    labels, n = label_components(mask)
    yx = component_centroids(labels, n)
    vox = np.column_stack([np.full(n, float(z)), yx]) if n else np.zeros((0, 3))
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64)
    objects = GroundTruthObjects(
        z=np.full(n, int(z), dtype=np.int64),
        centroids_vox=vox,
        centroids_nm=vox * np.asarray(voxel_size, dtype=np.float64),
        areas=areas,
    )
    return objects, labels


def iou_table(pred_labels: np.ndarray, n_pred: int, gt_labels: np.ndarray, n_gt: int) -> np.ndarray:
    """Pixel IoU of every predicted component with every ground-truth component of one section.

    Args:
        pred_labels, gt_labels: ``(H, W)`` int label maps (0 = background), components ``1..n``.

    Returns:
        ``(n_pred, n_gt)`` float64 IoU.
    """
    if n_pred == 0 or n_gt == 0:
        return np.zeros((n_pred, n_gt), dtype=np.float64)
    p = pred_labels.ravel().astype(np.int64)
    g = gt_labels.ravel().astype(np.int64)
    # Contingency table of label pairs in one bincount; row 0 / column 0 are background.
    joint = np.bincount(p * (n_gt + 1) + g, minlength=(n_pred + 1) * (n_gt + 1)).reshape(n_pred + 1, n_gt + 1)
    inter = joint[1:, 1:].astype(np.float64)
    area_p = joint[1:, :].sum(axis=1, keepdims=True)
    area_g = joint[:, 1:].sum(axis=0, keepdims=True)
    return inter / (area_p + area_g - inter)


def match_proposals(iou: np.ndarray, match_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Apply the matching rule (see the module docstring) to an IoU table.

    Args:
        iou: ``(N, K)`` IoU of proposals with objects (``K`` may be 0).
        match_iou: the IoU at which a proposal is True.

    Returns:
        ``(object_index, best_iou)``: ``(N,)`` int64 index of the matched object, ``-1`` when the
        proposal is False; ``(N,)`` float64 its highest IoU with any object (0 when ``K == 0``).
    """
    n = iou.shape[0]
    if iou.shape[1] == 0:
        return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float64)
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(n), best]
    return np.where(best_iou >= match_iou, best, -1).astype(np.int64), best_iou.astype(np.float64)


def proposal_recall(object_index: np.ndarray, n_objects: int) -> float:
    """Share of the ``n_objects`` ground-truth objects matched by at least one proposal.

    This bounds the recall any verifier can reach: a missed object never gets proposed.
    ``object_index``: ``(N,)`` int64 as from :func:`match_proposals` (``-1`` = unmatched).
    """
    if n_objects == 0:
        return float("nan")
    hit = np.unique(object_index[object_index >= 0])
    return float(len(hit) / n_objects)


def detection_scores(
    accepted: np.ndarray,
    object_index: np.ndarray,
    best_iou: np.ndarray,
    proposal_centroids_nm: np.ndarray,
    object_centroids_nm: np.ndarray,
) -> dict[str, float]:
    """Precision, recall, F1 and centroid error of the accepted proposals against the objects.

    Each object counts once: among accepted proposals matched to the same object, the one with the
    highest IoU is the true positive, the others false positives.

    Args:
        accepted: ``(N,)`` bool, proposals kept (by the verifier, or all of them).
        object_index, best_iou: ``(N,)`` from :func:`match_proposals` (object ``-1`` = False proposal).
        proposal_centroids_nm: ``(N, 3)`` ``z, y, x`` nm.
        object_centroids_nm: ``(K, 3)`` ``z, y, x`` nm of all ground-truth objects.

    Returns:
        ``precision`` (NaN when nothing is accepted), ``recall`` (NaN without objects), ``f1`` (0 when
        there is no true positive), ``centroid_distance_nm`` (mean Euclidean distance of the true
        positives to their objects; NaN without any), and counts ``tp``, ``fp``, ``fn``.
    """
    accepted = np.asarray(accepted, dtype=bool)
    n_objects = int(object_centroids_nm.shape[0])
    cand = np.flatnonzero(accepted & (object_index >= 0))
    # Highest IoU first, then keep the first proposal seen per object: duplicates become false positives.
    cand = cand[np.argsort(-best_iou[cand], kind="stable")]
    _, first = np.unique(object_index[cand], return_index=True)
    tp_idx = cand[first]
    tp = int(len(tp_idx))
    n_acc = int(accepted.sum())
    precision = tp / n_acc if n_acc else float("nan")
    recall = tp / n_objects if n_objects else float("nan")
    f1 = 2 * tp / (n_acc + n_objects) if tp else 0.0  # == 2PR / (P + R)
    if tp:
        d = np.linalg.norm(proposal_centroids_nm[tp_idx] - object_centroids_nm[object_index[tp_idx]], axis=1)
        dist = float(d.mean())
    else:
        dist = float("nan")
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "centroid_distance_nm": dist,
        "tp": tp,
        "fp": n_acc - tp,
        "fn": n_objects - tp,
    }
