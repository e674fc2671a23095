"""Per-task columns: one set of weights per task, stacked on a leading task axis.

``PerTaskDense`` and ``PerTaskConv2D`` take a list of T tensors (one per task column) and
return a list of T tensors, column t computed with weights ``kernel[t]``.  Keeping the T
columns' weights in one variable lets one regulariser see all of them (``soft_sharing``) and
lets column t be loaded from a single-task model's layer (``cross_stitch``'s ``init_from``).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops


def _as_list(inputs, num_tasks: int, layer: str) -> list:
    """``inputs`` (tensors, or their shapes in ``build``) as a list of one per task column."""
    # A lone shape is itself a tuple, of ints: a list of shapes holds tuples.
    one_tensor = isinstance(inputs, (list, tuple)) and inputs and not isinstance(inputs[0], (list, tuple)) \
        and not hasattr(inputs[0], "shape")
    if one_tensor or not isinstance(inputs, (list, tuple)) or len(inputs) != num_tasks:
        got = f"a list of {len(inputs)}" if isinstance(inputs, (list, tuple)) else type(inputs).__name__
        raise ValueError(f"{layer} expects a list of {num_tasks} tensors (one per task column), got {got}.")
    return list(inputs)


def _column_initializer(initializer, column: int):
    """``initializer`` with a seed of its own for ``column``.

    A Keras random initializer returns the same values on every call, so the columns would all
    start equal; a copy that is unseeded draws a fresh default seed (which follows
    ``keras.utils.set_random_seed``), and an integer seed is offset by the column index.
    """
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    seed = config["seed"]
    config["seed"] = seed + column if isinstance(seed, int) else None
    return type(initializer).from_config(config)


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


class _PerTaskLayer(keras.layers.Layer):
    """Shared plumbing: weight creation with per-task initialisation, and the config."""

    def __init__(self, num_tasks: int, *, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _check_positive("num_tasks", num_tasks)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    def _add_per_task_weights(self, kernel_shape: tuple, units: int) -> None:
        # Initialise each column as its own layer would be: fan-in and fan-out come from one
        # column's kernel shape, not from the stacked one, and every column draws its own values.
        def per_task(initializer):
            return lambda shape, dtype=None: ops.stack(
                [_column_initializer(initializer, t)(shape[1:], dtype=dtype) for t in range(self.num_tasks)]
            )

        self.kernel = self.add_weight(
            name="kernel", shape=(self.num_tasks, *kernel_shape),
            initializer=per_task(self.kernel_initializer), regularizer=self.kernel_regularizer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.num_tasks, units),
                initializer=per_task(self.bias_initializer), regularizer=self.bias_regularizer,
            )

    def _finish(self, t: int, y):
        if self.bias is not None:
            y = y + self.bias[t]
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return [self._column_output_shape(tuple(s)) for s in input_shape]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
        }


@keras.saving.register_keras_serializable(package="mtlzoo")
class PerTaskDense(_PerTaskLayer):
    """T dense layers in one: column t maps its input with ``kernel[t]`` (T, in, units)."""

    def __init__(self, num_tasks: int, units: int, **kwargs):
        super().__init__(num_tasks, **kwargs)
        self.units = _check_positive("units", units)

    def build(self, input_shape):
        shapes = _as_list(input_shape, self.num_tasks, type(self).__name__)
        self._add_per_task_weights((shapes[0][-1], self.units), self.units)

    def call(self, inputs):
        inputs = _as_list(inputs, self.num_tasks, type(self).__name__)
        return [self._finish(t, ops.matmul(x, self.kernel[t])) for t, x in enumerate(inputs)]

    def _column_output_shape(self, shape):
        return (*shape[:-1], self.units)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="mtlzoo")
class PerTaskConv2D(_PerTaskLayer):
    """T 2-D convolutions in one (channels last): column t uses ``kernel[t]`` (T, kh, kw, in, filters)."""

    def __init__(self, num_tasks: int, filters: int, kernel_size: int | Sequence[int] = 3, *,
                 strides: int = 1, padding: str = "same", **kwargs):
        super().__init__(num_tasks, **kwargs)
        self.filters = _check_positive("filters", filters)
        size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(size) != 2:
            raise ValueError(f"kernel_size must be an int or a pair, got {kernel_size!r}.")
        self.kernel_size = tuple(_check_positive("kernel_size", k) for k in size)
        self.strides = _check_positive("strides", strides)
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}.")
        self.padding = padding

    def build(self, input_shape):
        shapes = _as_list(input_shape, self.num_tasks, type(self).__name__)
        if len(shapes[0]) != 4:
            raise ValueError(f"PerTaskConv2D expects (batch, H, W, C) columns, got shape {shapes[0]}.")
        self._add_per_task_weights((*self.kernel_size, shapes[0][-1], self.filters), self.filters)

    def call(self, inputs):
        inputs = _as_list(inputs, self.num_tasks, type(self).__name__)
        return [
            self._finish(t, ops.conv(x, self.kernel[t], strides=self.strides, padding=self.padding))
            for t, x in enumerate(inputs)
        ]

    def _column_output_shape(self, shape):
        batch, height, width, _ = shape
        if self.padding == "valid":
            height = None if height is None else height - self.kernel_size[0] + 1
            width = None if width is None else width - self.kernel_size[1] + 1
        step = self.strides
        height = None if height is None else -(-height // step)
        width = None if width is None else -(-width // step)
        return (batch, height, width, self.filters)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": self.strides,
            "padding": self.padding,
        }
