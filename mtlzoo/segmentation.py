"""Segmentation outcomes: the soft Dice loss (optionally plus cross-entropy), Dice and IoU.

A segmentation target is a binary mask with the image's spatial shape (``(N, H, W)``,
``(N, H, W, 1)``, or 3-D volumes likewise); the model's output is one logit per pixel
(``(N, H, W, 1)``). The soft Dice loss of one example is

    1 - (2 sum(p g) + s) / (sum(p) + sum(g) + s),    p = sigmoid(logit), g = mask, s = 1,

so an empty mask predicted empty costs 0 and every mask, empty or not, has a finite loss. The
metrics threshold the probability at 0.5 and accumulate intersection and union over every
pixel seen (the dataset-level Dice and IoU, not a mean of per-batch values).
"""

from __future__ import annotations

import keras
from keras import ops

SMOOTH = 1.0


def _flat(y_true, y_pred):
    """Masks and logits as (N, pixels) float32."""
    mask_shape, logit_shape = tuple(y_true.shape), tuple(y_pred.shape)
    spatial = logit_shape[1:-1] if logit_shape[-1:] == (1,) else logit_shape[1:]
    if mask_shape[1:] not in (spatial, (*spatial, 1)) and None not in mask_shape[1:] + spatial:
        raise ValueError(f"A segmentation mask must have the output's spatial shape {spatial} (with or without a "
                         f"channel of 1); got mask shape {mask_shape} for output shape {logit_shape}.")
    n = ops.shape(y_pred)[0]
    return ops.reshape(ops.cast(y_true, "float32"), (n, -1)), ops.reshape(ops.cast(y_pred, "float32"), (n, -1))


@keras.saving.register_keras_serializable(package="mtlzoo")
class SoftDiceLoss(keras.losses.Loss):
    """Per-example soft Dice loss on logits, plus ``cross_entropy`` times the mean per-pixel
    binary cross-entropy (0: Dice alone)."""

    def __init__(self, cross_entropy: float = 0.0, name: str = "soft_dice", **kwargs):
        if isinstance(cross_entropy, bool) or not isinstance(cross_entropy, (int, float)) or cross_entropy < 0:
            raise ValueError(f"SoftDiceLoss: cross_entropy must be a number >= 0, got {cross_entropy!r}.")
        super().__init__(name=name, **kwargs)
        self.cross_entropy = float(cross_entropy)

    def call(self, y_true, y_pred):
        mask, logits = _flat(y_true, y_pred)
        probabilities = ops.sigmoid(logits)
        overlap = ops.sum(probabilities * mask, axis=1)
        loss = 1.0 - (2.0 * overlap + SMOOTH) / (ops.sum(probabilities, axis=1) + ops.sum(mask, axis=1) + SMOOTH)
        if self.cross_entropy:
            pixels = ops.binary_crossentropy(mask, logits, from_logits=True)
            loss = loss + self.cross_entropy * ops.mean(pixels, axis=1)
        return loss

    def get_config(self):
        return {**super().get_config(), "cross_entropy": self.cross_entropy}


class _Overlap(keras.metrics.Metric):
    """Intersection, predicted and true pixel counts, summed over everything seen."""

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.totals = self.add_variable(shape=(3,), initializer="zeros", name="totals")

    def update_state(self, y_true, y_pred, sample_weight=None):
        mask, logits = _flat(y_true, y_pred)
        mask = ops.cast(mask > 0.5, "float32")
        predicted = ops.cast(logits > 0.0, "float32")
        if sample_weight is not None:
            keep = ops.cast(ops.reshape(sample_weight, (-1, 1)) != 0, "float32")
            mask, predicted = mask * keep, predicted * keep
        self.totals.assign_add(ops.stack([ops.sum(mask * predicted), ops.sum(predicted), ops.sum(mask)]))

    def reset_state(self):
        self.totals.assign(ops.zeros((3,), self.totals.dtype))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="mtlzoo")
class Dice(_Overlap):
    """Dice coefficient 2|P∩G| / (|P| + |G|) over all pixels seen (1 when both are empty)."""

    def __init__(self, name: str = "dice", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def result(self):
        both, predicted, true = ops.unstack(ops.convert_to_tensor(self.totals))
        return ops.where(predicted + true > 0, 2.0 * both / ops.maximum(predicted + true, 1.0), 1.0)


@keras.saving.register_keras_serializable(package="mtlzoo")
class IoU(_Overlap):
    """Intersection over union |P∩G| / |P∪G| over all pixels seen (1 when both are empty)."""

    def __init__(self, name: str = "iou", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def result(self):
        both, predicted, true = ops.unstack(ops.convert_to_tensor(self.totals))
        union = predicted + true - both
        return ops.where(union > 0, both / ops.maximum(union, 1.0), 1.0)
