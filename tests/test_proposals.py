"""Proposal stage and matching (task=detect) on small hand-made masks with hand-computed answers.

The scene (one 20 x 30 section, z = 7, voxel size (z, y, x) = (50, 4, 6) nm):

- ground truth: square A rows 2-5 x cols 2-5 (16 px, centroid (3.5, 3.5)) and square B rows
  10-13 x cols 20-23 (16 px); the detector's probability on B is only 0.25, under the 0.3 threshold,
  so B is never proposed.
- detector blobs over the threshold: P1 rows 2-5 x cols 3-6 (overlaps A: 12 px shared, union 20,
  IoU 0.6, centroid (3.5, 4.5): 1 px = 6 nm right of A's); P2 rows 15-17 x cols 10-12 (9 px, no
  object, inside the artifact mask); P3 rows 0-2 x cols 27-29 (9 px, a false blob in the corner);
  and a 2 px speck at row 8, cols 0-1 that ``min_size = 5`` drops.

Scan order numbers the kept blobs P3, P1, P2 (first pixel at rows 0, 2, 15).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dualstream.errors import ConfigError
from dualstream.matching import (
    detection_scores,
    iou_table,
    label_components,
    match_proposals,
    proposal_recall,
    section_objects,
)
from dualstream.oracle import ProposalAnnotator
from dualstream.proposals import Sections, build_proposals, centred_crop, detector_patches, predict_sections

VOXEL = (50.0, 4.0, 6.0)
Z = 7


def scene() -> tuple[Sections, np.ndarray]:
    gt = np.zeros((20, 30), np.uint8)
    gt[2:6, 2:6] = 1  # A
    gt[10:14, 20:24] = 1  # B
    prob = np.zeros((20, 30), np.float32)
    prob[2:6, 3:7] = 0.9  # P1
    prob[15:18, 10:13] = 0.35  # P2: just over the threshold
    prob[0:3, 27:30] = 0.8  # P3: corner
    prob[8, 0:2] = 0.9  # speck, under min_size
    prob[10:14, 20:24] = 0.25  # B: under the threshold
    ignore = np.zeros((20, 30), np.float32)
    ignore[14:19, 9:14] = 1.0  # covers P2
    image = (np.arange(600, dtype=np.float32).reshape(20, 30) + 1) / 1000  # every pixel distinct and nonzero
    sections = Sections(image[None], gt[None], ignore[None], np.array([Z]), VOXEL, "hand-made")
    return sections, prob[None]


def test_label_components_drops_small_and_numbers_in_scan_order():
    _, prob = scene()
    labels, n = label_components(prob[0] >= 0.3, min_size=5)
    assert n == 3
    assert labels[0, 27] == 1 and labels[2, 3] == 2 and labels[15, 10] == 3
    assert labels[8, 0] == 0  # the speck is gone
    assert label_components(np.zeros((4, 4)), 1) [1] == 0
    # 8-connectivity: a diagonal touch joins two pixels into one object
    diag = np.eye(3, dtype=bool)
    assert label_components(diag)[1] == 1


def test_ground_truth_objects_and_iou_by_hand():
    sections, prob = scene()
    objects, gt_labels = section_objects(sections.labels[0], Z, VOXEL)
    assert len(objects) == 2 and objects.areas.tolist() == [16, 16]
    np.testing.assert_allclose(objects.centroids_vox, [[7, 3.5, 3.5], [7, 11.5, 21.5]])
    np.testing.assert_allclose(objects.centroids_nm, [[350, 14, 21], [350, 46, 129]])
    pred, n = label_components(prob[0] >= 0.3, 5)
    iou = iou_table(pred, n, gt_labels, len(objects))
    np.testing.assert_allclose(iou, [[0, 0], [0.6, 0], [0, 0]])
    obj, best = match_proposals(iou, 0.3)
    assert obj.tolist() == [-1, 0, -1]
    np.testing.assert_allclose(best, [0, 0.6, 0])
    assert match_proposals(iou, 0.61)[0].tolist() == [-1, -1, -1]  # the rule is IoU >= match_iou
    assert match_proposals(np.zeros((2, 0)), 0.3)[0].tolist() == [-1, -1]  # a section without objects


def test_build_proposals_fields_by_hand():
    sections, prob = scene()
    props, objects = build_proposals(prob, sections, threshold=0.3, min_size=5, crop_size=8, match_iou=0.3)
    assert len(props) == 3 and len(objects) == 2
    assert props.truth.tolist() == [0, 1, 0] and props.truth.dtype == np.uint8
    assert props.object_index.tolist() == [-1, 0, -1]
    assert props.boxes.tolist() == [[0, 27, 3, 30], [2, 3, 6, 7], [15, 10, 18, 13]]
    np.testing.assert_allclose(props.centroids_vox, [[7, 1, 28], [7, 3.5, 4.5], [7, 16, 11]])
    np.testing.assert_allclose(props.centroids_nm, props.centroids_vox * np.array(VOXEL))
    assert props.z.tolist() == [Z] * 3 and props.areas.tolist() == [9, 16, 9]
    np.testing.assert_allclose(props.ignore_share, [0, 0, 1])
    np.testing.assert_allclose(props.scores, [0.8, 0.9, 0.35], rtol=1e-6)
    assert props.crops.shape == (3, 2, 8, 8) and props.crops.dtype == np.float32
    assert proposal_recall(props.object_index, len(objects)) == 0.5  # B was never proposed


def test_border_proposal_crop_is_zero_padded_to_the_fixed_size():
    sections, prob = scene()
    props, _ = build_proposals(prob, sections, 0.3, 5, 8, 0.3)
    image, mask = props.crops[0]  # P3, centroid (1, 28): window rows -3..4, cols 24..31
    assert image.shape == (8, 8)
    assert (image[:3] == 0).all() and (image[:, 6:] == 0).all()  # past the top and right borders
    np.testing.assert_array_equal(image[3:, :6], sections.images[0, 0:5, 24:30])
    expect = np.zeros((8, 8), np.float32)
    expect[3:6, 3:6] = 1  # the blob itself, rows 0-2 x cols 27-29
    np.testing.assert_array_equal(mask, expect)
    # The mask channel shows only its own proposal: P1's crop (centre (4, 5) rounded from (3.5, 4.5)) holds P1 alone.
    _, m1 = props.crops[1]
    assert m1.sum() == 16
    np.testing.assert_array_equal(centred_crop(np.ones((3, 3)), 1, 1, 4), [[0] * 4, [0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]])


def test_detection_scores_by_hand():
    sections, prob = scene()
    props, objects = build_proposals(prob, sections, 0.3, 5, 8, 0.3)
    args = (props.object_index, props.iou, props.centroids_nm, objects.centroids_nm)
    all_ = detection_scores(np.ones(3, bool), *args)
    assert all_["tp"] == 1 and all_["fp"] == 2 and all_["fn"] == 1
    assert all_["precision"] == pytest.approx(1 / 3) and all_["recall"] == pytest.approx(0.5)
    assert all_["f1"] == pytest.approx(0.4)  # 2 * (1/3) * (1/2) / (1/3 + 1/2)
    assert all_["centroid_distance_nm"] == pytest.approx(6.0)  # one pixel in x at 6 nm
    only_true = detection_scores(np.array([False, True, False]), *args)
    assert only_true["precision"] == 1.0 and only_true["f1"] == pytest.approx(2 / 3)
    none = detection_scores(np.zeros(3, bool), *args)
    assert np.isnan(none["precision"]) and none["recall"] == 0 and none["f1"] == 0 and np.isnan(none["centroid_distance_nm"])


def test_duplicates_of_one_object_count_once():
    """Two accepted proposals on object 0: the higher-IoU one is the true positive, the other a false positive."""
    obj = np.array([0, 0, 1, -1])
    iou = np.array([0.4, 0.7, 0.5, 0.1])
    cents = np.array([[0, 0, 10.0], [0, 0, 3.0], [0, 100, 0], [0, 0, 0]])
    objs = np.array([[0, 0, 0.0], [0, 100, 4.0], [0, 500, 500]])
    s = detection_scores(np.array([True, True, True, True]), obj, iou, cents, objs)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 1)
    assert s["precision"] == 0.5 and s["recall"] == pytest.approx(2 / 3)
    assert s["centroid_distance_nm"] == pytest.approx((3.0 + 4.0) / 2)  # the duplicate at 10 nm is not a pair
    assert proposal_recall(obj, 3) == pytest.approx(2 / 3)


def test_proposal_annotator_true_false_skip():
    sections, prob = scene()
    props, _ = build_proposals(prob, sections, 0.3, 5, 8, 0.3)
    answers = ProposalAnnotator(props.truth, props.ignore_share, 0.5).annotate(np.array([2, 1, 0]))
    assert answers.labeled.tolist() == [1, 0] and answers.masks.tolist() == [1, 0]  # P1 True, P3 False
    assert answers.masks.dtype == np.uint8 and answers.skipped.tolist() == [2]  # P2 lies in the artifact mask
    with pytest.raises(ValueError):
        ProposalAnnotator(np.array([0, 2]), np.zeros(2))


class _Identity(nn.Module):
    """Logits whose sigmoid is the input: stitched predictions must reproduce the section."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        # Spoil the outer eighth of each tile: only the tile centres may reach the stitched output.
        out = torch.logit(x.clamp(1e-4, 1 - 1e-4))
        q = x.shape[-1] // 8
        edge = torch.ones_like(x, dtype=torch.bool)
        edge[..., q:-q, q:-q] = False
        return out.masked_fill(edge, -20.0)


def test_predict_sections_stitches_tile_centres_back():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.05, 0.95, (2, 37, 45)).astype(np.float32)  # not multiples of the tile
    probs = predict_sections(_Identity(), images, patch_size=16, batch_size=7)
    assert probs.shape == images.shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs, images, atol=1e-5)
    with pytest.raises(ConfigError, match="multiple of 8"):
        predict_sections(_Identity(), images, patch_size=20)


def test_detector_patches_draws_positives_and_avoids_artifacts():
    labels = np.zeros((2, 32, 32), np.uint8)
    labels[0, 1, 1] = 1  # only tile (section 0, 0, 0) holds foreground
    ignore = np.zeros((2, 32, 32), np.float32)
    ignore[1, :16, :] = 1  # tiles (1, 0, 0) and (1, 0, 16) are artifacts
    images = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    sections = Sections(images, labels, ignore, np.array([0, 1]), (1.0, 1.0, 1.0))
    imgs, masks = detector_patches(sections, 16, 4, np.random.default_rng(1), positive_share=0.5)
    assert imgs.shape == (4, 16, 16) and masks.shape == (4, 16, 16)
    assert masks[0].sum() == 1  # the one positive tile is drawn first
    assert not any(np.array_equal(i, images[1, :16, :16]) or np.array_equal(i, images[1, :16, 16:]) for i in imgs)
    imgs, _ = detector_patches(sections, 16, 50, np.random.default_rng(1))
    assert len(imgs) == 6  # 8 tiles, 2 artifacts


def _tiled_sections() -> Sections:
    """Two 64 x 64 sections in 16 x 16 tiles (32 tiles): a foreground dot in every tile of section 0's
    top half (8 tiles), section 1's top row of tiles an artifact (4 tiles)."""
    labels = np.zeros((2, 64, 64), np.uint8)
    labels[0, 5:37:16, 5::16] = 1
    labels[0, 6:38:16, 5::16] = 1
    ignore = np.zeros((2, 64, 64), np.float32)
    ignore[1, :16] = 1
    images = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    return Sections(images, labels, ignore, np.array([0, 1]), (1.0, 1.0, 1.0))


def test_calibration_tiles_are_drawn_outside_the_training_draw():
    from dualstream.proposals import calibration_tiles, cut_tiles, draw_tiles, section_tiles

    sections = _tiled_sections()
    det = {"train_patches": 6, "positive_share": 0.5, "calibration_patches": 8}
    trained = draw_tiles(sections, 16, 6, np.random.default_rng([3, 7]), 0.5)
    imgs, _ = detector_patches(sections, 16, 6, np.random.default_rng([3, 7]), 0.5)
    np.testing.assert_array_equal(imgs, cut_tiles(sections.images, section_tiles(sections, 16), trained, 16))
    chosen, masks = calibration_tiles(sections, 16, det, seed=3)
    assert len(chosen) == 8 and not set(chosen) & set(trained)
    tiles = section_tiles(sections, 16)
    left = sum(1 for i in range(8) if i not in set(trained))  # positives are tiles 0-7 (section 0, top half)
    assert left >= 4 and masks[:4].any(axis=(1, 2)).all()  # half of the 8 drawn among the positives left, first
    assert all(sections.ignore[s, y, x] == 0 for s, y, x in (tiles[i] for i in chosen))  # no artifact tile
    # More than the tiles left (32 - 4 artifacts - 6 trained = 22): all of them.
    chosen, _ = calibration_tiles(sections, 16, {**det, "calibration_patches": 100}, seed=3)
    assert len(chosen) == 22


def test_heldout_threshold_reads_the_pool_map_not_the_training_patches():
    from dualstream.proposals import calibration_tiles, heldout_threshold, section_tiles
    from dualstream.errors import EmptyPoolError

    sections = _tiled_sections()
    det = {"train_patches": 6, "positive_share": 0.5, "calibration_patches": 8}
    chosen, _ = calibration_tiles(sections, 16, det, seed=3)
    tiles = section_tiles(sections, 16)
    probs = np.where(sections.labels > 0, 0.99, 0.0).astype(np.float32)  # near-certain everywhere ...
    positives = 0
    for i in chosen:  # ... except on the held-out tiles: each dot's two pixels at 0.31 and 0.71
        s, y, x = tiles[i]
        dot = probs[s, y : y + 16, x : x + 16]
        if (dot > 0).any():
            dot[dot > 0] = [0.31, 0.71]
            positives += 1
    cal = heldout_threshold(probs, sections, 16, det, 3, target_recall=0.5)
    assert positives >= 4 and cal.tiles == 8 and cal.foreground_tiles == positives and cal.foreground_pixels == 2 * positives
    assert cal.threshold == pytest.approx(0.70)  # the training patches (0.99) would give the grid's top, 0.98
    assert heldout_threshold(probs, sections, 16, det, 3, target_recall=0.9).threshold == pytest.approx(0.30)
    with pytest.raises(EmptyPoolError, match="calibration_patches"):
        heldout_threshold(probs, sections, 16, {**det, "train_patches": 100}, 3, 0.5)


def test_calibrated_threshold_keeps_the_target_share_of_foreground_pixels():
    from dualstream.proposals import calibrate_threshold

    masks = np.zeros((1, 4, 5), dtype=np.uint8)
    masks[0, :2] = 1  # 10 foreground pixels with probabilities 0.05, 0.15, ..., 0.95
    probs = np.zeros((1, 4, 5), dtype=np.float32)
    probs[0, :2] = np.linspace(0.05, 0.95, 10).reshape(2, 5)
    # 90% of 10 pixels = 9 must stay >= t: the 9 highest are >= 0.15, so t = 0.14 (grid step 0.02).
    assert calibrate_threshold(probs, masks, 0.9) == pytest.approx(0.14)
    assert calibrate_threshold(probs, masks, 0.5) == pytest.approx(0.54)  # 0.55 ... 0.95: 5 of 10
    assert calibrate_threshold(probs, np.zeros_like(masks), 0.9) == 0.5  # no foreground: neutral
    # Background probabilities do not matter, only the foreground's.
    probs[0, 2:] = 0.99
    assert calibrate_threshold(probs, masks, 0.9) == pytest.approx(0.14)


def test_min_area_in_nm2_gives_the_same_objects_at_every_resolution():
    from dualstream.proposals import min_component_size

    det = {"min_size": 20, "min_area_nm2": 5000.0}
    assert min_component_size(det, (5.0, 10.0, 10.0)) == 50   # 10 nm pixels: 100 nm^2 each
    assert min_component_size(det, (5.0, 5.0, 5.0)) == 200    # native 5 nm: 4x the pixels
    assert min_component_size({"min_size": 20}, (5.0, 5.0, 5.0)) == 20


def test_threshold_auto_needs_a_calibrated_value():
    from dualstream.proposals import detector_threshold

    assert detector_threshold({"threshold": 0.3}, None) == 0.3
    assert detector_threshold({"threshold": "auto"}, 0.42) == 0.42
    with pytest.raises(ValueError):
        detector_threshold({"threshold": "auto"}, None)


def _blob_sections(seed: int = 0) -> Sections:
    """Two 32 x 32 sections with a bright 6 x 6 square each (the objects) on noise."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.4, (2, 32, 32)).astype(np.float32)
    labels = np.zeros((2, 32, 32), np.uint8)
    labels[:, 5:11, 5:11] = 1
    images[labels > 0] += 0.5
    return Sections(images, labels, np.zeros((2, 32, 32), np.float32), np.array([0, 1]), (1.0, 1.0, 1.0))


def test_detector_ensemble_averages_members_and_keeps_the_single_detector():
    """ensemble=K: member 0 is the single detector (same seed, same cache key), the output the members' mean."""
    from dualstream.proposals import _detector_key, detector_patches, predict_sections, run_detector, train_detector

    pool, test = _blob_sections(0), _blob_sections(1)
    det = {"train_patches": 4, "positive_share": 0.5, "threshold": 0.3, "min_size": 4, "steps": 3, "batch_size": 2,
           "module": {"width": 4, "depth": 1, "dropout": 0.0, "lr": 1e-2, "augment": False}}
    trainer = {"accelerator": "cpu", "deterministic": True}
    one = run_detector(pool, test, det, trainer, patch_size=16, seed=3)
    two = run_detector(pool, test, {**det, "ensemble": 2}, trainer, patch_size=16, seed=3)
    # the second member by hand: the same patches, the member seed
    images, masks = detector_patches(pool, 16, 4, np.random.default_rng([3, 7]), 0.5, 0.5)
    member = train_detector(images, masks, det, trainer, 3 + 100_003)
    np.testing.assert_allclose(two.pool, (one.pool + predict_sections(member, pool.images, 16)) / 2, atol=1e-5)
    np.testing.assert_allclose(two.test, (one.test + predict_sections(member, test.images, 16)) / 2, atol=1e-5)
    assert not np.allclose(two.pool, one.pool)  # the members differ
    assert two.train_probs.shape == one.train_probs.shape == (4, 16, 16)
    key = _detector_key(pool, test, det, 16, 3, 0.5)
    assert _detector_key(pool, test, {**det, "ensemble": 1}, 16, 3, 0.5) == key  # caches made before the option stay valid
    assert _detector_key(pool, test, {**det, "ensemble": 2}, 16, 3, 0.5) != key


def test_dihedral_mean_maps_every_view_back_before_averaging():
    """Each of the 8 views' output is turned back: an orientation-blind predictor (identity) is unchanged,
    and one that fires on the top-left corner only in the original orientation ends up at 1/8 there."""
    from dualstream.proposals import dihedral_mean

    images = np.random.default_rng(0).uniform(size=(2, 6, 10)).astype(np.float32)  # non-square: rot90 swaps H, W
    np.testing.assert_allclose(dihedral_mean(lambda x: x, images), images, atol=1e-6)

    def corner(x: np.ndarray) -> np.ndarray:
        out = np.zeros_like(x)
        out[:, 0, 0] = 1.0  # wherever the view's own top-left corner is
        return out

    mean = dihedral_mean(corner, images)
    assert mean.shape == images.shape
    # the 8 views put their top-left corner on the 4 corners of the original, 2 views each
    for y, x in ((0, 0), (0, 9), (5, 0), (5, 9)):
        np.testing.assert_allclose(mean[:, y, x], 0.25)
    assert mean.sum() == pytest.approx(2 * 1.0)


def test_detector_tta_averages_the_eight_views_and_keeps_the_plain_key():
    """tta=true: the pool / test / training-patch probabilities are the dihedral mean of the same trained
    detector's; tta=false keeps the cache key of configs written before the option."""
    from dualstream.proposals import _detector_key, dihedral_mean, predict_sections, run_detector

    pool, test = _blob_sections(0), _blob_sections(1)
    det = {"train_patches": 4, "positive_share": 0.5, "threshold": 0.3, "min_size": 4, "steps": 3, "batch_size": 2,
           "module": {"width": 4, "depth": 1, "dropout": 0.0, "lr": 1e-2, "augment": False}}
    trainer = {"accelerator": "cpu", "deterministic": True}
    plain = run_detector(pool, test, det, trainer, patch_size=16, seed=3)
    tta = run_detector(pool, test, {**det, "tta": True}, trainer, patch_size=16, seed=3)
    assert not np.allclose(tta.pool, plain.pool)
    # the same weights (training does not depend on tta): retrain and average by hand
    from dualstream.proposals import detector_patches, train_detector

    images, masks = detector_patches(pool, 16, 4, np.random.default_rng([3, 7]), 0.5, 0.5)
    module = train_detector(images, masks, det, trainer, 3)
    by_hand = dihedral_mean(lambda x: predict_sections(module, x, 16), pool.images)
    np.testing.assert_allclose(by_hand, tta.pool, atol=1e-5)
    np.testing.assert_allclose(predict_sections(module, pool.images, 16), plain.pool, atol=1e-5)
    assert tta.train_probs.shape == plain.train_probs.shape == (4, 16, 16)
    key = _detector_key(pool, test, det, 16, 3, 0.5)
    assert _detector_key(pool, test, {**det, "tta": False}, 16, 3, 0.5) == key
    assert _detector_key(pool, test, {**det, "tta": True}, 16, 3, 0.5) != key
