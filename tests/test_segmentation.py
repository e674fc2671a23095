"""Soft Dice loss and the Dice and IoU metrics, against scikit-learn and hand-computed values."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score

from mtlzoo.segmentation import IoU, Dice, SoftDiceLoss
from mtlzoo.tasks import Task


def masks_and_logits(seed, n=6, size=8):
    rng = np.random.default_rng(seed)
    masks = (rng.random((n, size, size, 1)) < 0.3).astype("float32")
    logits = (rng.normal(size=masks.shape) + 2.0 * (masks - 0.5)).astype("float32")
    return masks, logits


def test_soft_dice_per_example_matches_its_formula():
    masks, logits = masks_and_logits(0)
    p = 1 / (1 + np.exp(-logits.reshape(6, -1)))
    g = masks.reshape(6, -1)
    expected = 1 - (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1)
    np.testing.assert_allclose(SoftDiceLoss().call(masks, logits), expected, rtol=1e-5)
    assert float(SoftDiceLoss()(masks, logits)) == pytest.approx(expected.mean(), rel=1e-5)
    bce = -(g * np.log(p) + (1 - g) * np.log(1 - p)).mean(1)
    np.testing.assert_allclose(SoftDiceLoss(cross_entropy=1.0).call(masks, logits), expected + bce, rtol=1e-4)
    assert Task("m", "segmentation", loss="dice_bce").make_loss().cross_entropy == 1.0


def test_empty_masks_have_finite_losses():
    empty = np.zeros((2, 8, 8, 1), "float32")
    confident_empty = np.full_like(empty, -30.0)
    assert float(SoftDiceLoss()(empty, confident_empty)) == pytest.approx(0.0, abs=1e-6)
    wrong = float(SoftDiceLoss(cross_entropy=1.0)(empty, np.full_like(empty, 30.0)))
    assert np.isfinite(wrong) and wrong > 1.0


def test_dice_and_iou_accumulate_over_batches_like_scikit_learn_on_all_pixels():
    masks, logits = masks_and_logits(1, n=10)
    dice, iou = Dice(), IoU()
    for start, stop in ((0, 3), (3, 10)):
        dice.update_state(masks[start:stop], logits[start:stop])
        iou.update_state(masks[start:stop, ..., 0], logits[start:stop])  # masks with or without the channel
    truth, guess = masks.reshape(-1).astype(int), (logits.reshape(-1) > 0).astype(int)
    assert float(dice.result()) == pytest.approx(f1_score(truth, guess), rel=1e-6)
    assert float(iou.result()) == pytest.approx(jaccard_score(truth, guess), rel=1e-6)


def test_weights_drop_examples_and_empty_agreement_scores_one():
    masks, logits = masks_and_logits(2, n=4)
    dice = Dice()
    dice.update_state(masks, logits, sample_weight=np.array([1.0, 0.0, 1.0, 0.0]))
    keep = [0, 2]
    truth, guess = masks[keep].reshape(-1).astype(int), (logits[keep].reshape(-1) > 0).astype(int)
    assert float(dice.result()) == pytest.approx(f1_score(truth, guess), rel=1e-6)
    empty = Dice()
    empty.update_state(np.zeros((1, 4, 4)), np.full((1, 4, 4, 1), -1.0))
    assert float(empty.result()) == 1.0
    with pytest.raises(ValueError, match=r"spatial shape \(4, 4\).*got mask shape \(1, 4, 5\)"):
        SoftDiceLoss()(np.zeros((1, 4, 5)), np.zeros((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="cross_entropy must be a number >= 0"):
        SoftDiceLoss(cross_entropy=-1)
    with pytest.raises(ValueError, match="unknown segmentation loss 'mse'"):
        Task("m", "segmentation", loss="mse")
