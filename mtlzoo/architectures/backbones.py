"""Shared encoders and task heads: the building blocks architectures wire together.

Each function takes a Keras tensor and returns one, adding layers with predictable names
(``<prefix>_dense_0``, ``<prefix>_conv_1``, ...) so that users can find, freeze or inspect
them by name.
"""

from __future__ import annotations

from typing import Sequence

import keras

from mtlzoo.layers.columns import PerTaskConv2D, PerTaskDense
from mtlzoo.tasks import Task

BACKBONES = ("auto", "mlp", "cnn")


def _call(layer, x, wrap):
    return (wrap(layer) if wrap is not None else layer)(x)


def mlp(x, units: Sequence[int], *, activation="relu", dropout: float = 0.0, prefix: str = "shared", wrap=None):
    """Dense layers of the given widths, with optional dropout after each.

    ``wrap(layer)``, if given, returns what to call in place of each weight layer (``cnn`` and
    ``task_head`` take it too): the ``muir`` architecture generates their kernels that way.
    """
    for i, width in enumerate(units):
        x = _call(keras.layers.Dense(width, activation=activation, name=f"{prefix}_dense_{i}"), x, wrap)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}")(x)
    return x


def cnn(
    x,
    filters: Sequence[int],
    units: Sequence[int] = (),
    *,
    kernel_size: int = 3,
    activation="relu",
    dropout: float = 0.0,
    prefix: str = "shared",
    wrap=None,
):
    """A small LeNet-style CNN: [conv, max-pool] per entry of ``filters``, flatten, dense ``units``."""
    if len(x.shape) == 3:  # (batch, H, W): add the channel axis
        x = keras.layers.Reshape((*x.shape[1:], 1), name=f"{prefix}_add_channel")(x)
    for i, f in enumerate(filters):
        conv = keras.layers.Conv2D(f, kernel_size, padding="same", activation=activation, name=f"{prefix}_conv_{i}")
        x = _call(conv, x, wrap)
        x = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool_{i}")(x)
    x = keras.layers.Flatten(name=f"{prefix}_flatten")(x)
    return mlp(x, units, activation=activation, dropout=dropout, prefix=prefix, wrap=wrap)


def join_inputs(inputs, architecture: str):
    """The one tensor a backbone starts from: the single input, or several vectors concatenated."""
    tensors = list(inputs.values())
    if len(tensors) == 1:
        return tensors[0]
    if all(len(t.shape) == 2 for t in tensors):
        return keras.layers.Concatenate(name="shared_concat_inputs")(tensors)
    raise ValueError(
        f"{architecture} takes one input, or several vector inputs (which it concatenates); "
        f"got shapes {[tuple(t.shape[1:]) for t in tensors]}."
    )


def resolve_backbone(kind: str, rank: int) -> str:
    """Pick ``mlp`` for vectors and ``cnn`` for images (rank counts the batch axis)."""
    if kind not in BACKBONES:
        raise ValueError(f"Unknown backbone {kind!r}; expected one of {list(BACKBONES)}.")
    if kind == "auto":
        if rank == 2:
            return "mlp"
        if rank in (3, 4):
            return "cnn"
        raise ValueError(
            f"Cannot choose a backbone for inputs of rank {rank - 1} (without batch): "
            "expected vectors (d,) or images (H, W) / (H, W, C); pass backbone= explicitly."
        )
    if kind == "cnn" and rank not in (3, 4):
        raise ValueError(f"The cnn backbone needs image inputs (H, W) or (H, W, C), got rank {rank - 1}.")
    if kind == "mlp" and rank != 2:
        raise ValueError(f"The mlp backbone needs vector inputs (d,), got rank {rank - 1}; use backbone='cnn'.")
    return kind


def task_head(x, task: Task, units: Sequence[int] = (), *, activation="relu", dropout: float = 0.0, wrap=None,
              output_bias: bool = True):
    """Task-specific dense layers ending in the task's raw output, named after the task.

    The output layer computes in float32 so that mixed-precision models still emit float32;
    ``output_bias=False`` drops its intercept (for tasks known to have none).
    """
    x = mlp(x, units, activation=activation, dropout=dropout, prefix=f"{task.name}_head", wrap=wrap)
    return _call(keras.layers.Dense(task.output_size, use_bias=output_bias, name=task.name, dtype="float32"), x, wrap)


def columns(
    x,
    num_tasks: int,
    kind: str,
    filters: Sequence[int],
    units: Sequence[int],
    *,
    kernel_size: int = 3,
    activation="relu",
    dropout: float = 0.0,
    kernel_regularizer=None,
    after_stage=None,
    prefix: str = "columns",
) -> list:
    """One ``mlp`` or ``cnn`` column per task, with the columns' weights stacked per layer.

    Every column starts from ``x``. A stage is one conv + max-pool (named ``conv_<i>``) or one
    dense layer (``dense_<i>``); after each, ``after_stage(stage_name, column_tensors)`` may
    return new column tensors (cross-stitch units go there). ``kernel_regularizer`` applies to
    each stage's stacked (T, ...) kernel (soft sharing). Returns the T column outputs.
    """
    def stage(name, xs):
        return after_stage(name, xs) if after_stage is not None else xs

    xs = [x] * num_tasks
    if kind == "cnn":
        if len(x.shape) == 3:
            x = keras.layers.Reshape((*x.shape[1:], 1), name=f"{prefix}_add_channel")(x)
            xs = [x] * num_tasks
        for i, f in enumerate(filters):
            xs = PerTaskConv2D(num_tasks, f, kernel_size, activation=activation,
                               kernel_regularizer=kernel_regularizer, name=f"{prefix}_conv_{i}")(xs)
            pool = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool_{i}")
            xs = stage(f"conv_{i}", [pool(c) for c in xs])
        flatten = keras.layers.Flatten(name=f"{prefix}_flatten")
        xs = [flatten(c) for c in xs]
    for i, width in enumerate(units):
        xs = PerTaskDense(num_tasks, width, activation=activation,
                          kernel_regularizer=kernel_regularizer, name=f"{prefix}_dense_{i}")(xs)
        if dropout:
            drop = keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}")
            xs = [drop(c) for c in xs]
        xs = stage(f"dense_{i}", xs)
    return xs


def column_stages(kind: str, filters: Sequence[int], units: Sequence[int]) -> list[str]:
    """The stage names ``columns`` gives its ``after_stage`` callback, in order."""
    convs = [f"conv_{i}" for i in range(len(filters))] if kind == "cnn" else []
    return convs + [f"dense_{i}" for i in range(len(units))]
