"""Regularisers that tie the weights of several tasks together (soft parameter sharing).

Each one views a weight tensor as a matrix ``A`` with one row ``a_t`` per task: the tensor's
``task_axis`` indexes the tasks and everything else is flattened into the row.  They are
ordinary Keras regularisers, so they work on any layer of any model:

- on a ``PerTaskDense`` / ``PerTaskConv2D`` kernel (one column per task, stacked on axis 0,
  the default ``task_axis``), as the ``soft_sharing`` architecture uses them;
- on a ``Dense`` layer whose output units are the tasks (``task_axis=-1``), the classic
  multi-task linear model ``y_t = x . a_t``: ``GroupLasso`` there selects input features shared
  by all tasks (Argyriou et al., 2008; Obozinski et al., 2010).
"""

from __future__ import annotations

import keras
from keras import ops

# sqrt is not differentiable at 0; a group of exactly-zero weights would get a NaN gradient.
_EPSILON = 1e-12


def _check_strength(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    return float(value)


def _check_axis(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"task_axis must be an integer axis index, got {value!r}.")
    return value


class _TaskRegularizer(keras.regularizers.Regularizer):
    """Base: ``strength * penalty(A)`` with ``A`` of shape (num_tasks, everything else)."""

    def __init__(self, strength: float = 1e-3, task_axis: int = 0):
        self.strength = _check_strength("strength", strength)
        self.task_axis = _check_axis(task_axis)

    def task_matrix(self, x):
        """The weights as a (num_tasks, -1) matrix, one row per task."""
        if not -len(x.shape) <= self.task_axis < len(x.shape):
            raise ValueError(
                f"{type(self).__name__}: task_axis={self.task_axis} is out of range for a weight of "
                f"shape {tuple(x.shape)}."
            )
        x = ops.moveaxis(ops.convert_to_tensor(x, "float32"), self.task_axis, 0)
        return ops.reshape(x, (x.shape[0], -1))

    def __call__(self, x):
        return self.strength * self.penalty(self.task_matrix(x))

    def penalty(self, a):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"strength": self.strength, "task_axis": self.task_axis}


@keras.saving.register_keras_serializable(package="mtlzoo")
class MeanRegularizer(_TaskRegularizer):
    """Mean-regularised multi-task learning (Evgeniou & Pontil, KDD 2004).

    ``strength * (||a_mean||^2 + deviation_weight / T * sum_t ||a_t - a_mean||^2)``: every task's
    weights are pulled towards the tasks' mean, which is itself kept small. A large
    ``deviation_weight`` approaches hard sharing; 0 lets the tasks differ freely.
    """

    def __init__(self, strength: float = 1e-3, deviation_weight: float = 1.0, task_axis: int = 0):
        super().__init__(strength, task_axis)
        self.deviation_weight = _check_strength("deviation_weight", deviation_weight)

    def penalty(self, a):
        mean = ops.mean(a, axis=0)
        spread = ops.mean(ops.sum(ops.square(a - mean), axis=1))
        return ops.sum(ops.square(mean)) + self.deviation_weight * spread

    def get_config(self) -> dict:
        return {**super().get_config(), "deviation_weight": self.deviation_weight}


@keras.saving.register_keras_serializable(package="mtlzoo")
class TraceNormRegularizer(_TaskRegularizer):
    """``strength * ||A||_*``, the sum of the singular values of the stacked task weights.

    A convex surrogate of rank: it favours task weight vectors that span a low-dimensional
    subspace (Argyriou et al., 2008; Yang & Hospedales, ICLR 2017 for deep networks).
    """

    def penalty(self, a):
        return ops.sum(ops.svd(a, full_matrices=False, compute_uv=False))


@keras.saving.register_keras_serializable(package="mtlzoo")
class GroupLasso(_TaskRegularizer):
    """Block-sparse l1/l2: ``strength * sum_d ||A[:, d]||_2``, a group per weight across tasks.

    Each group holds one weight (one input feature, for a dense kernel) across all tasks, so
    whole features are switched off for every task at once (Obozinski et al., 2010).
    """

    def penalty(self, a):
        return ops.sum(ops.sqrt(ops.sum(ops.square(a), axis=0) + _EPSILON))


REGULARIZERS = {"mean": MeanRegularizer, "trace_norm": TraceNormRegularizer, "group_lasso": GroupLasso}


def get(name: str, **kwargs) -> _TaskRegularizer:
    """A task regulariser by name: ``"mean"``, ``"trace_norm"`` or ``"group_lasso"``."""
    if name not in REGULARIZERS:
        raise ValueError(f"Unknown task regulariser {name!r}; expected one of {sorted(REGULARIZERS)}.")
    return REGULARIZERS[name](**kwargs)
