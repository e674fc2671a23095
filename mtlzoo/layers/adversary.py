"""How an adversarial task's head pushes back on the trunk, with its strength scheduled in-graph.

- ``GradientReversal`` (Ganin & Lempitsky, ICML 2015): the identity going forward, the gradient
  times ``-strength`` going back, so that what follows it learns to predict and what precedes it
  learns to make that prediction fail.
- ``Confusion`` (Tzeng et al., ICCV 2015; Alvi et al., 2018): the head learns the task from a
  stopped copy of the representation while the trunk learns to make the head's prediction
  uniform. Maximising the head's loss (reversal) can be met by a confidently *wrong* head that a
  fresh classifier reads just as well; a uniform prediction cannot.
"""

from __future__ import annotations

import keras
from keras import ops

from mtlzoo.validation import number_at_least

SCHEDULES = ("ramp", "constant")


def ramp(progress, strength):
    """``strength * (2 / (1 + exp(-10 p)) - 1)``: Ganin & Lempitsky's schedule, 0 at the start of
    training (``p = 0``) and almost ``strength`` at its end (``p = 1``)."""
    return strength * (2.0 / (1.0 + ops.exp(-10.0 * progress)) - 1.0)


class Scheduled(keras.layers.Layer):
    """Base of the adversary layers: a ``strength`` lambda that follows ``schedule``.

    ``"constant"`` (always ``strength``) or ``"ramp"`` (``ramp(p, strength)`` with ``p`` =
    training steps taken / ``total_steps``). The layer counts its own training calls in a
    variable, so the schedule runs inside the compiled step on every backend and resumes with the
    model; ``MultiTaskModel.fit`` sets ``total_steps`` to the steps of the fit (epochs x steps per
    epoch). With ``total_steps`` 0 the ramp is at its end.
    """

    def __init__(self, schedule: str = "ramp", strength: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if schedule not in SCHEDULES:
            raise ValueError(f"{type(self).__name__}: unknown schedule {schedule!r}; expected one of {list(SCHEDULES)}.")
        self.schedule = schedule
        self.strength = number_at_least(f"{type(self).__name__}: strength", strength)

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

    def _strength(self, training):
        """Lambda for this call; a training call first advances the step."""
        if not training:
            return self.current_strength()
        step = self.step + 1.0
        self.step.assign(step)
        return self.current_strength(step)

    def get_config(self):
        return {**super().get_config(), "schedule": self.schedule, "strength": self.strength}


@keras.saving.register_keras_serializable(package="mtlzoo")
class Confusion(Scheduled):
    """Confusion loss for an adversary head; called on ``[stopped, live]``, the head's logits on
    ``stop_gradient(h)`` and on ``h`` (the same layers), it returns ``stopped``.

    On a training call it adds ``lambda * [CE(u, live) - CE(u, stopped)]``, ``CE(u, z)`` the
    batch mean of the cross-entropy between the uniform distribution and ``softmax(z)``. The
    bracket is 0 going forward, so reported losses do not move; going back, its gradient on the
    head's weights cancels exactly, and ``h`` gets ``lambda`` times the gradient that makes the
    head's prediction uniform. The head itself learns the task from ``stopped``.
    """

    def call(self, inputs, training=False):
        stopped, live = inputs
        strength = self._strength(training)
        if training:
            self.add_loss(strength * (uniform_cross_entropy(live) - uniform_cross_entropy(stopped)))
        return stopped

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def uniform_cross_entropy(logits):
    """Batch mean of ``-mean_c log softmax(logits)_c``: the cross-entropy from uniform, least
    (``log C``) when the prediction is uniform."""
    logits = ops.cast(logits, "float32")
    return ops.mean(ops.logsumexp(logits, axis=-1) - ops.mean(logits, axis=-1))


@keras.saving.register_keras_serializable(package="mtlzoo")
class StopGradient(keras.layers.Layer):
    """The identity going forward, no gradient going back."""

    def call(self, x):
        return ops.stop_gradient(x)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="mtlzoo")
class GradientReversal(Scheduled):
    """Identity forward; backward, the incoming gradient times ``-lambda`` (see ``Scheduled``).

    Written with ``stop_gradient`` only (``s + lambda * (s - x)`` with ``s = stop_gradient(x)``
    is exactly ``x``, and its gradient is ``-lambda``), so it needs no backend-specific code.
    """

    def call(self, x, training=False):
        strength = self._strength(training)
        frozen = ops.stop_gradient(x)
        return frozen + ops.cast(strength, x.dtype) * (frozen - x)

    def compute_output_shape(self, input_shape):
        return input_shape
