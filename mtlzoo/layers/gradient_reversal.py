"""Gradient reversal (Ganin & Lempitsky, ICML 2015): the identity going forward, the gradient
times ``-strength`` going back, so that what follows it learns to predict and what precedes it
learns to make that prediction fail."""

from __future__ import annotations

import keras
from keras import ops

from mtlzoo.validation import number_at_least

SCHEDULES = ("ramp", "constant")


def ramp(progress, strength):
    """``strength * (2 / (1 + exp(-10 p)) - 1)``: Ganin & Lempitsky's schedule, 0 at the start of
    training (``p = 0``) and almost ``strength`` at its end (``p = 1``)."""
    return strength * (2.0 / (1.0 + ops.exp(-10.0 * progress)) - 1.0)


@keras.saving.register_keras_serializable(package="mtlzoo")
class GradientReversal(keras.layers.Layer):
    """Identity forward; backward, the incoming gradient times ``-lambda``.

    ``lambda`` follows ``schedule``: ``"constant"`` (always ``strength``) or ``"ramp"``
    (``ramp(p, strength)`` with ``p`` = training steps taken / ``total_steps``). The layer counts
    its own training calls in a variable, so the schedule runs inside the compiled step on every
    backend and resumes with the model; ``MultiTaskModel.fit`` sets ``total_steps`` to the
    steps of the fit (epochs x steps per epoch). With ``total_steps`` 0 the ramp is at its end.

    Written with ``stop_gradient`` only (``s + lambda * (s - x)`` with ``s = stop_gradient(x)``
    is exactly ``x``, and its gradient is ``-lambda``), so it needs no backend-specific code.
    """

    def __init__(self, schedule: str = "ramp", strength: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if schedule not in SCHEDULES:
            raise ValueError(f"GradientReversal: unknown schedule {schedule!r}; expected one of {list(SCHEDULES)}.")
        self.schedule = schedule
        self.strength = number_at_least("GradientReversal: strength", strength)

    def build(self, input_shape):
        def counter(name):
            return self.add_weight(name=name, shape=(), initializer="zeros", dtype="float32", trainable=False,
                                   aggregation="only_first_replica")

        self.step = counter("step")
        self.total_steps = counter("total_steps")

    def current_strength(self, step=None):
        """``lambda`` after ``step`` training steps (default: the steps taken so far)."""
        if self.schedule == "constant":
            return ops.convert_to_tensor(self.strength, "float32")
        step = ops.convert_to_tensor(self.step if step is None else step, "float32")
        total = ops.convert_to_tensor(self.total_steps, "float32")
        progress = ops.where(total > 0, ops.minimum(step / ops.maximum(total, 1.0), 1.0), 1.0)
        return ramp(progress, self.strength)

    def call(self, x, training=False):
        if training:
            step = self.step + 1.0
            self.step.assign(step)
            strength = self.current_strength(step)
        else:
            strength = self.current_strength()
        frozen = ops.stop_gradient(x)
        return frozen + ops.cast(strength, x.dtype) * (frozen - x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "schedule": self.schedule, "strength": self.strength}
