"""Reconstruction outcomes: how well a decoder gives back an input, per example.

A reconstruction task's target is a model input as the model sees it (raw inputs rescaled),
and its output has the same shape. Its loss and metric are per-example means over every value
(pixel, channel, feature), so one sample weight per example applies as for any task:

- ``"mse"``: the mean squared error of the output;
- ``"cross_entropy"``: the mean binary cross-entropy of the output as logits against the
  target in [0, 1] (pixel intensities).
"""

from __future__ import annotations

import keras
from keras import ops

LOSSES = ("mse", "cross_entropy")


def _flat(y_true, y_pred):
    n = ops.shape(y_pred)[0]
    return ops.reshape(ops.cast(y_true, "float32"), (n, -1)), ops.reshape(ops.cast(y_pred, "float32"), (n, -1))


@keras.saving.register_keras_serializable(package="mtlzoo")
def per_example_squared_error(y_true, y_pred):
    """The mean over every value of one example of ``(y_pred - y_true) ** 2``, shape (N,)."""
    target, output = _flat(y_true, y_pred)
    return ops.mean(ops.square(output - target), axis=1)


@keras.saving.register_keras_serializable(package="mtlzoo")
def per_example_cross_entropy(y_true, y_pred):
    """The mean over every value of one example of the binary cross-entropy of logits ``y_pred``."""
    target, logits = _flat(y_true, y_pred)
    return ops.mean(ops.binary_crossentropy(target, logits, from_logits=True), axis=1)


_FUNCTIONS = {"mse": per_example_squared_error, "cross_entropy": per_example_cross_entropy}


@keras.saving.register_keras_serializable(package="mtlzoo")
class ReconstructionLoss(keras.losses.Loss):
    """The per-example reconstruction error ``error`` (``"mse"`` or ``"cross_entropy"``)."""

    def __init__(self, error: str = "mse", name: str | None = None, **kwargs):
        if error not in LOSSES:
            raise ValueError(f"ReconstructionLoss: error must be one of {list(LOSSES)}, got {error!r}.")
        super().__init__(name=name or f"reconstruction_{error}", **kwargs)
        self.error = error

    def call(self, y_true, y_pred):
        return _FUNCTIONS[self.error](y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "error": self.error}


def make_loss(name: str = "mse") -> keras.losses.Loss:
    return ReconstructionLoss(name)


def make_metric(name: str = "mse") -> keras.metrics.Metric:
    return keras.metrics.MeanMetricWrapper(_FUNCTIONS[name], name="mse" if name == "mse" else "crossentropy")
