"""Methods that only look at the loss values: their cost is that of the plain sum."""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import ops

from mtlzoo.validation import number_at_least
from mtlzoo.weighting.base import AdamState, Seeded, Weighting, masked_softmax, register_weighting

_EPSILON = 1e-8


@register_weighting("unitary")
class Unitary(Weighting):
    """Unitary scalarization: minimise the plain sum of the task losses (the baseline)."""


@register_weighting("static")
class Static(Weighting):
    """Fixed task weights, given as ``{task: weight}`` (unnamed tasks keep 1) or a list."""

    def __init__(self, weights: Mapping[str, float] | Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        weights = dict(weights) if isinstance(weights, Mapping) else (list(weights) if weights else {})
        items = weights.values() if isinstance(weights, dict) else weights
        for w in items:
            number_at_least("static weight", w)
        self.weights_given = weights

    def check_tasks(self, task_names, roles=None):
        names = super().check_tasks(task_names, roles)
        given = self.weights_given
        if isinstance(given, dict):
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise ValueError(f"static weights name unknown task(s) {unknown}; the tasks are {list(names)}.")
        elif len(given) != len(names):
            raise ValueError(f"static weights: got {len(given)} weights for {len(names)} tasks.")
        return names

    def build(self, num_tasks):
        given = self.weights_given
        if isinstance(given, dict):
            self._values = [float(given.get(name, 1.0)) for name in self.task_names]
        else:
            self._values = [float(w) for w in given]
        super().build(num_tasks)

    def loss_weights(self, losses, present):
        return ops.convert_to_tensor(self._values, dtype=losses.dtype), None

    def get_config(self):
        return {**super().get_config(), "weights": self.weights_given}


@register_weighting("uncertainty")
class Uncertainty(Weighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Learns ``s_t = log sigma_t^2`` with the model: the loss is
    ``sum_t exp(-s_t) L_t / 2 + s_t / 2`` over the tasks present in the batch (an absent task's
    regulariser ``s_t / 2`` would otherwise drive its variance down while it has no loss).
    """

    def build(self, num_tasks):
        self.log_variance = self.add_weight(name="log_variance", shape=(num_tasks,), initializer="zeros")
        super().build(num_tasks)

    def loss_weights(self, losses, present):
        s = ops.cast(self.log_variance, losses.dtype)
        return 0.5 * ops.exp(-s), 0.5 * ops.sum(s * ops.cast(present, losses.dtype))


@register_weighting("dwa")
class DWA(Weighting):
    """Dynamic weight average (Liu, Johns & Davison, CVPR 2019).

    ``w = T * softmax(r / temperature)`` with ``r_t`` the ratio of task t's mean training loss
    over the last two epochs; weights are 1 for the first two epochs. A task's epoch mean is
    over the batches that had labels for it; a task with two epoch means yet to see keeps
    weight 1 while the others share their sum by the formula.
    """

    def __init__(self, temperature: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = number_at_least("temperature", temperature, strict=True)

    def build(self, num_tasks):
        self.running = self.state_variable("running_sum", (num_tasks,))
        self.count = self.state_variable("running_count", (num_tasks,))
        self.last = self.state_variable("last_epoch", (num_tasks,))
        self.before_last = self.state_variable("epoch_before_last", (num_tasks,))
        self.epochs_seen = self.state_variable("epochs_seen", (num_tasks,))
        super().build(num_tasks)

    def loss_weights(self, losses, present):
        self.running.assign(self.running + ops.cast(losses, "float32") * present)
        self.count.assign(self.count + present)
        ratio = self.last / (self.before_last + _EPSILON)
        ready = ops.cast(self.epochs_seen >= 2, "float32")
        weights = ops.sum(ready) * masked_softmax(ratio / self.temperature, ready) + (1.0 - ready)
        return ops.cast(weights, losses.dtype), None

    def end_epoch(self):
        seen = ops.cast(self.count > 0, "float32")  # a task without a labelled batch changes nothing
        mean = self.running / ops.maximum(self.count, 1.0)
        self.before_last.assign(seen * self.last + (1.0 - seen) * self.before_last)
        self.last.assign(seen * mean + (1.0 - seen) * self.last)
        self.running.assign(ops.zeros(self.running.shape))
        self.count.assign(ops.zeros(self.count.shape))
        self.epochs_seen.assign(self.epochs_seen + seen)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@register_weighting("rlw")
class RLW(Seeded, Weighting):
    """Random loss weighting (Lin et al., TMLR 2022): every step, ``softmax`` of a standard
    normal draw, over the tasks present in the batch."""

    def loss_weights(self, losses, present):
        draw = keras.random.normal((self.num_tasks,), seed=self.seed_generator)
        return ops.cast(masked_softmax(draw, present), losses.dtype), None


@register_weighting("famo")
class FAMO(Weighting):
    """Fast adaptive multitask optimisation (Liu et al., NeurIPS 2023).

    Task weights ``z = softmax(xi)`` aim at decreasing every task loss at the same rate; the
    gradient of the model is that of ``sum_t z_t log(L_t - min_t) / c``. ``xi`` takes an Adam
    step (with ``decay`` as L2) on the observed change of the log losses between consecutive
    steps: this uses the next batch's losses instead of a second forward pass on the same one.
    The softmax, ``c`` and the update run over the tasks present in the batch; a task's change
    is measured from the last batch that had it, and a task seen for the first time takes no
    step (so the first real update has Adam's step count 1, as in the official code).
    """

    def __init__(self, learning_rate: float = 0.025, decay: float = 1e-3, min_loss: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.learning_rate = number_at_least("learning_rate", learning_rate, strict=True)
        self.decay = number_at_least("decay", decay)
        self.min_loss = float(min_loss)

    def build(self, num_tasks):
        self.logits = self.state_variable("logits", (num_tasks,))
        self.previous = self.state_variable("previous_losses", (num_tasks,))
        self.has_previous = self.state_variable("has_previous", (num_tasks,))
        self.adam = AdamState(self, num_tasks, self.learning_rate, "logits")
        super().build(num_tasks)

    def loss_weights(self, losses, present):
        losses = ops.cast(losses, "float32")
        shifted = ops.maximum(losses - self.min_loss, 0.0) + _EPSILON
        active = present * self.has_previous
        z = masked_softmax(self.logits, active)
        delta = active * (ops.log(ops.maximum(self.previous - self.min_loss, 0.0) + _EPSILON) - ops.log(shifted))
        # The gradient of softmax(xi) . delta with respect to xi, over the active tasks.
        grad = z * (delta - ops.sum(z * delta)) + self.decay * self.logits
        self.logits.assign(self.logits + self.adam.step(grad, active))
        self.previous.assign(present * losses + (1.0 - present) * self.previous)
        self.has_previous.assign(ops.maximum(self.has_previous, present))
        z = masked_softmax(self.logits, present)
        c = ops.sum(z / shifted)
        # 0 for absent tasks, also when none is present (c = 0).
        return z / ops.maximum(c * shifted, 1e-30), None

    def get_config(self):
        return {**super().get_config(), "learning_rate": self.learning_rate, "decay": self.decay,
                "min_loss": self.min_loss}
