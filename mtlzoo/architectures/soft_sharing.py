"""Soft parameter sharing: one column per task, tied by a regulariser on their weights.

Each task has its own copy of the backbone; the columns' corresponding kernels are stacked
(``PerTaskDense`` / ``PerTaskConv2D``) and penalised together by a task regulariser from
``mtlzoo.layers.regularizers`` (Duong et al., 2015; Yang & Hospedales, 2017).
"""

from __future__ import annotations

from typing import Sequence

from mtlzoo.architectures import backbones
from mtlzoo.layers import regularizers
from mtlzoo.architectures.registry import register_architecture


@register_architecture("soft_sharing")
def soft_sharing(
    inputs,
    tasks,
    backbone: str = "auto",
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    units: Sequence[int] = (64,),
    head_units: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
    regularizer: str = "mean",
    strength: float = 1e-3,
    deviation_weight: float = 1.0,
):
    """One backbone column per task, with a regulariser between corresponding weights.

    Args:
        backbone: ``"auto"`` (MLP for vectors, CNN for images), ``"mlp"`` or ``"cnn"``.
        filters: filters of each conv + max-pool stage of a CNN column.
        kernel_size: size of the CNN's square convolution kernels.
        units: widths of each column's dense layers (after the convolutions for a CNN).
        head_units: hidden widths of each task's head on top of its column.
        regularizer: ``"mean"`` (distance to the tasks' mean weights), ``"trace_norm"`` or
            ``"group_lasso"`` (see ``mtlzoo.layers.regularizers``).
        strength: the regulariser's coefficient, per stacked kernel.
        deviation_weight: ``"mean"`` only: the weight lambda of the distance to the mean.
    """
    if regularizer not in regularizers.REGULARIZERS:
        raise ValueError(
            f"soft_sharing: unknown regularizer {regularizer!r}; expected one of {sorted(regularizers.REGULARIZERS)}."
        )
    options = {"deviation_weight": deviation_weight} if regularizer == "mean" else {}
    penalty = regularizers.get(regularizer, strength=strength, **options)
    x = backbones.join_inputs(inputs, "soft_sharing")
    kind = backbones.resolve_backbone(backbone, len(x.shape))
    xs = backbones.columns(x, len(tasks), kind, filters, units, kernel_size=kernel_size, activation=activation,
                           dropout=dropout, kernel_regularizer=penalty)
    return {t.name: backbones.task_head(c, t, head_units, activation=activation, dropout=dropout)
            for t, c in zip(tasks, xs)}
