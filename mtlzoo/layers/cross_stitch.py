"""The cross-stitch unit (Misra, Shrivastava, Gupta & Hebert, CVPR 2016)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="mtlzoo")
class CrossStitch(keras.layers.Layer):
    """Mixes T task columns with learned coefficients, one per channel and task pair.

    Takes a list of T tensors of one shape ``(batch, ..., C)`` (dense features or conv feature
    maps, channels last) and returns T tensors of that shape: ``out_i = sum_j alpha[i, j] * x_j``,
    with ``alpha[i, j]`` a vector of C coefficients.

    Args:
        num_tasks: T, the number of columns.
        self_weight, other_weight: initial ``alpha[i, i]`` and ``alpha[i, j]`` (the paper's
            alpha_S = 0.9 and alpha_D = 0.1), normalised so that each task's mix sums to 1.
        alpha_lr_multiplier: scales how fast the coefficients learn relative to the other
            weights; the reference implementations train them about 100x faster. The layer
            stores ``alpha / multiplier``, so with Adam-like optimizers (which are invariant to
            the gradient's scale) the coefficients' steps are multiplier times larger; with plain
            SGD, multiplier squared.
    """

    def __init__(self, num_tasks: int, self_weight: float = 0.9, other_weight: float = 0.1,
                 alpha_lr_multiplier: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}.")
        for name, value in (("self_weight", self_weight), ("other_weight", other_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
        if self_weight + (num_tasks - 1) * other_weight <= 0:
            raise ValueError("self_weight and other_weight cannot both be 0: each task's mix must sum to 1.")
        if (isinstance(alpha_lr_multiplier, bool) or not isinstance(alpha_lr_multiplier, (int, float))
                or alpha_lr_multiplier <= 0):
            raise ValueError(f"alpha_lr_multiplier must be a number > 0, got {alpha_lr_multiplier!r}.")
        self.num_tasks = num_tasks
        self.self_weight = float(self_weight)
        self.other_weight = float(other_weight)
        self.alpha_lr_multiplier = float(alpha_lr_multiplier)

    def initial_alphas(self, channels: int) -> np.ndarray:
        """The normalised starting coefficients, shape (T, T, channels)."""
        t = self.num_tasks
        mix = np.full((t, t), self.other_weight) + np.eye(t) * (self.self_weight - self.other_weight)
        mix /= mix.sum(axis=1, keepdims=True)
        return np.repeat(mix[:, :, None], channels, axis=2).astype("float32")

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != self.num_tasks:
            raise ValueError(f"CrossStitch expects a list of {self.num_tasks} tensors, one per task column.")
        shapes = {tuple(s[1:]) for s in input_shape}
        if len(shapes) != 1:
            raise ValueError(f"CrossStitch needs columns of one shape; got {sorted(shapes, key=str)}.")
        channels = input_shape[0][-1]
        start = self.initial_alphas(channels) / self.alpha_lr_multiplier
        self.kernel = self.add_weight(
            name="kernel", shape=start.shape, initializer=keras.initializers.Constant(start)
        )

    def call(self, inputs):
        alpha = self.kernel * self.alpha_lr_multiplier
        return [
            sum(alpha[i, j] * x for j, x in enumerate(inputs)) for i in range(self.num_tasks)
        ]

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in input_shape]

    def alphas(self) -> np.ndarray:
        """The learned coefficients as numpy, shape (T, T, channels): ``[i, j, c]`` is how much of
        column j's channel c task i takes."""
        return np.asarray(ops.convert_to_numpy(self.kernel)) * self.alpha_lr_multiplier

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "self_weight": self.self_weight,
            "other_weight": self.other_weight,
            "alpha_lr_multiplier": self.alpha_lr_multiplier,
        }
