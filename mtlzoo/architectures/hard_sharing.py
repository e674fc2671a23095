"""Hard parameter sharing: one shared encoder, one head per task (Caruana, 1997)."""

from __future__ import annotations

from typing import Sequence

from mtlzoo.architectures import backbones
from mtlzoo.architectures.registry import Heads, register_architecture


@register_architecture("hard_sharing")
def hard_sharing(
    inputs,
    tasks,
    backbone: str = "auto",
    shared_units: Sequence[int] = (64, 64),
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    head_units: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
):
    """Shared MLP or CNN trunk with a small head per task.

    Args:
        backbone: ``"auto"`` (MLP for vector inputs, CNN for images), ``"mlp"`` or ``"cnn"``.
        shared_units: widths of the shared dense layers (after the convolutions for a CNN).
        filters: filters of each conv + max-pool stage of the CNN backbone.
        kernel_size: size of the CNN's square convolution kernels.
        head_units: widths of the hidden layers of every task head (empty: a linear head).
        activation: activation of hidden layers.
        dropout: dropout rate after every hidden dense layer.
    """
    x = backbones.join_inputs(inputs, "hard_sharing")
    kind = backbones.resolve_backbone(backbone, len(x.shape))
    if kind == "mlp":
        shared = backbones.mlp(x, shared_units, activation=activation, dropout=dropout)
    else:
        shared = backbones.cnn(
            x, filters, shared_units, kernel_size=kernel_size, activation=activation, dropout=dropout
        )
    return Heads(
        {t.name: backbones.task_head(shared, t, head_units, activation=activation, dropout=dropout) for t in tasks},
        shared=shared,
    )
