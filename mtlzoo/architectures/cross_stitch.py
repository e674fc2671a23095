"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016).

One column (a copy of the backbone) per task; after chosen stages a ``CrossStitch`` unit lets
every task take a learned, per-channel mix of all columns' activations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import keras
import numpy as np

from mtlzoo.architectures import backbones
from mtlzoo.layers.cross_stitch import CrossStitch
from mtlzoo.architectures.registry import register_architecture

COLUMN_PREFIX = "columns"


@register_architecture("cross_stitch")
def cross_stitch(
    inputs,
    tasks,
    backbone: str = "auto",
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    units: Sequence[int] = (64,),
    head_units: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
    stitch_after: Sequence[str] | None = None,
    self_weight: float = 0.9,
    other_weight: float = 0.1,
    alpha_lr_multiplier: float = 1.0,
    init_from: Mapping[str, str] | None = None,
):
    """One backbone column per task, mixed by cross-stitch units.

    Args:
        backbone: ``"auto"`` (MLP for vectors, CNN for images), ``"mlp"`` or ``"cnn"``.
        filters: filters of each conv + max-pool stage of a CNN column.
        kernel_size: size of the CNN's square convolution kernels.
        units: widths of each column's dense layers (after the convolutions for a CNN).
        head_units: hidden widths of each task's head on top of its column.
        stitch_after: stage names after which to put a cross-stitch unit (``conv_0``, ...,
            ``dense_0``, ...); default every stage.
        self_weight, other_weight: initial coefficients (alpha_S, alpha_D), normalised per task.
        alpha_lr_multiplier: how much faster the coefficients learn (see ``CrossStitch``).
        init_from: ``{task: path to a .keras model}``: start column and head ``task`` from a
            trained single-task ``hard_sharing`` model with the same filters, units and heads.
    """
    x = backbones.join_inputs(inputs, "cross_stitch")
    kind = backbones.resolve_backbone(backbone, len(x.shape))
    stages = backbones.column_stages(kind, filters, units)
    if stitch_after is not None and (isinstance(stitch_after, str) or not isinstance(stitch_after, (list, tuple))):
        raise ValueError(f"cross_stitch: stitch_after must be a list of stage names from {stages}, got {stitch_after!r}.")
    if init_from is not None and not isinstance(init_from, Mapping):
        raise ValueError(f"cross_stitch: init_from must map task names to .keras paths, got {init_from!r}.")
    chosen = list(stages if stitch_after is None else stitch_after)
    unknown = [s for s in chosen if s not in stages]
    if unknown:
        raise ValueError(
            f"cross_stitch: stitch_after names unknown stage(s) {unknown}; the stages of a {kind} column "
            f"with filters={list(filters) if kind == 'cnn' else []} and units={list(units)} are {stages}."
        )
    unknown_tasks = sorted(set(init_from or {}) - {t.name for t in tasks})
    if unknown_tasks:
        raise ValueError(
            f"cross_stitch: init_from names unknown task(s) {unknown_tasks}; the tasks are {[t.name for t in tasks]}."
        )

    def stitch(stage, xs):
        if stage not in chosen:
            return xs
        unit = CrossStitch(len(tasks), self_weight, other_weight, alpha_lr_multiplier, name=f"cross_stitch_{stage}")
        return unit(xs)

    xs = backbones.columns(x, len(tasks), kind, filters, units, kernel_size=kernel_size, activation=activation,
                           dropout=dropout, after_stage=stitch, prefix=COLUMN_PREFIX)
    outputs = {t.name: backbones.task_head(c, t, head_units, activation=activation, dropout=dropout)
               for t, c in zip(tasks, xs)}
    for column, task in enumerate(tasks):
        if init_from and task.name in init_from:
            # A model over the graph from x to this task's output lists the layers on the way.
            layers = keras.Model(x, outputs[task.name]).layers
            _load_column(layers, column, task.name, init_from[task.name])
    return outputs


def _load_column(layers, column: int, task: str, path) -> None:
    """Copy a single-task hard_sharing model's shared trunk into column ``column``, and its head."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"cross_stitch: init_from[{task!r}] = {str(path)!r} does not exist.")
    source = keras.saving.load_model(path, compile=False)
    trunk = [layer for layer in getattr(source, "trunk_layers", []) if layer.weights]
    # The column's layers with weights (conv_i, dense_i), in order, each to the source trunk's
    # layer at the same place; their kernels are stacked per column.
    columns = [layer for layer in layers if layer.name.startswith(COLUMN_PREFIX + "_") and layer.weights]
    if len(trunk) != len(columns):
        raise ValueError(
            f"cross_stitch: init_from[{task!r}] ({path}) has a shared trunk of {len(trunk)} layers with weights "
            f"{[l.name for l in trunk]}; a column has {len(columns)} {[l.name for l in columns]}. Expected a "
            "single-task hard_sharing model with the same filters and units."
        )
    for layer, source_layer in zip(columns, trunk):
        values = source_layer.get_weights()
        if len(values) != len(layer.weights):
            raise ValueError(
                f"cross_stitch: init_from[{task!r}] ({path}): layer {source_layer.name!r} has {len(values)} "
                f"weights; {layer.name!r} has {len(layer.weights)} (use_bias differs?)."
            )
        for stacked, value in zip(layer.weights, values):
            _assign_slot(stacked, column, value, task, path, source_layer.name)
    source_layers = {layer.name: layer for layer in source.layers}
    for layer in layers:
        if layer.name.startswith(task + "_head_") or layer.name == task:  # backbones.task_head's names
            if layer.name not in source_layers:
                raise ValueError(f"cross_stitch: init_from[{task!r}] ({path}) has no head layer {layer.name!r}.")
            try:
                layer.set_weights(source_layers[layer.name].get_weights())
            except ValueError as e:
                raise ValueError(f"cross_stitch: init_from[{task!r}] ({path}), layer {layer.name!r}: {e}") from None


def _assign_slot(stacked, column: int, value, task, path, source_name) -> None:
    want = tuple(stacked.shape[1:])
    if tuple(value.shape) != want:
        raise ValueError(
            f"cross_stitch: init_from[{task!r}] ({path}): layer {source_name!r} has weights of shape "
            f"{tuple(value.shape)}; the column expects {want}."
        )
    full = keras.ops.convert_to_numpy(stacked).copy()
    full[column] = value
    stacked.assign(full)


def stitch_alphas(model: keras.Model) -> dict[str, np.ndarray]:
    """``{unit name: alphas (T, T, channels)}`` of every cross-stitch unit in ``model``.

    ``alphas[i, j, c]`` is how much task i (in ``model.tasks`` order) takes of column j's channel c.
    """
    units = {layer.name: layer.alphas() for layer in model.layers if isinstance(layer, CrossStitch)}
    if not units:
        raise ValueError(f"Model {model.name!r} has no CrossStitch layer.")
    return units
