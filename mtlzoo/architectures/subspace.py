"""Multi-task learning in a low-dimensional random subspace (``mtlzoo.subspace``).

Each task gets a column of the same architecture, its output layer as wide as the widest
task; all columns start from one theta_0 and move only within one random subspace:
theta_t = theta_0 + P (Q alpha_t), with Q shared and alpha_t per task. With ``sharing="hard"``
there is one network instead, trunk and heads (one dense layer as wide as all tasks' outputs
together), and theta = theta_0 + P w.
"""

from __future__ import annotations

from typing import Sequence

import keras

from mtlzoo.architectures import backbones
from mtlzoo.architectures.registry import register_architecture
from mtlzoo.subspace.columns import SubspaceColumns


@register_architecture("subspace")
def subspace(
    inputs,
    tasks,
    backbone: str = "auto",
    units: Sequence[int] = (64, 64),
    filters: Sequence[int] = (32,),
    kernel_size: int = 3,
    activation: str = "relu",
    intrinsic_dim: int | None = None,
    task_dim: int | None = 16,
    expansion: str = "kronecker",
    seed: int = 0,
    levels: int | None = None,
    sharing: str = "columns",
):
    """One column per task, all trained in one random subspace of the column's weights.

    Args:
        backbone, units, filters, kernel_size, activation: each task's column, as in
            ``hard_sharing`` (a column ends in one dense layer as wide as the widest task).
        intrinsic_dim: l, the dimension of the random subspace (default: 1000, or the column's
            number of weights if that is smaller).
        task_dim: k, the length of each task's coordinates alpha_t in the learned shared basis Q
            (l x k); ``None``: no shared basis, each task trains its own l coordinates
            (independent single-task subspace training, for intrinsic-dimension baselines).
        expansion: the random expansion P: ``"kronecker"``, ``"sparse"`` or ``"dense"``.
        seed: the seed P (and Q's start) are drawn from.
        levels: train with Q and alpha quantised to a learned codebook of this many values
            (``mtlzoo bound`` adds one to a trained model; set it here to train that way throughout).
        sharing: ``"columns"`` (one column per task) or ``"hard"`` (one network for every task,
            all its weights in the subspace: pass ``task_dim=None``, since there is one w).
    """
    if sharing not in ("columns", "hard"):
        raise ValueError(f"subspace: sharing must be 'columns' or 'hard', got {sharing!r}.")
    if sharing == "hard" and task_dim is not None:
        raise ValueError(f"subspace: sharing='hard' trains one network, whose coordinates w have no task "
                         f"basis; pass task_dim=None (got task_dim={task_dim!r}).")
    x = backbones.join_inputs(inputs, "subspace")
    kind = backbones.resolve_backbone(backbone, len(x.shape))
    start = keras.Input(x.shape[1:], name="column_input")
    if kind == "mlp":
        h = backbones.mlp(start, units, activation=activation, prefix="column")
    else:
        h = backbones.cnn(start, filters, units, kernel_size=kernel_size, activation=activation, prefix="column")
    sizes = [task.output_size for task in tasks]
    width = sum(sizes) if sharing == "hard" else max(sizes)
    column = keras.Model(start, keras.layers.Dense(width, name="column_output", dtype="float32")(h), name="column")
    if intrinsic_dim is None:
        intrinsic_dim = min(1000, column.count_params())
    outputs = SubspaceColumns(column, sizes, intrinsic_dim, task_dim, expansion=expansion, seed=seed,
                              levels=levels, one_network=sharing == "hard", name="subspace_columns")(x)
    return {task.name: keras.layers.Identity(name=task.name, dtype="float32")(out) for task, out in zip(tasks, outputs)}
