"""Mixture-of-experts sharing: MMoE (Ma et al., KDD 2018) and PLE (Tang et al., RecSys 2020).

Both architectures put a shared stem in front of the experts: an optional MLP for vector
inputs (by default none, so the experts see the input itself) and a small CNN for images.
The stem is a shared feature extractor, the role the shared embeddings play in the MMoE
paper; the sharing between tasks that these architectures are about happens in the experts.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras
import numpy as np

from mtlzoo.architectures import backbones
from mtlzoo.layers.experts import MixtureOfExperts, ProgressiveLayeredExtraction
from mtlzoo.architectures.registry import register_architecture

EXPERT_LAYERS = (MixtureOfExperts, ProgressiveLayeredExtraction)


def _stem(inputs, architecture, backbone, filters, kernel_size, stem_units, activation, dropout):
    x = backbones.join_inputs(inputs, architecture)
    kind = backbones.resolve_backbone(backbone, len(x.shape))
    if kind == "mlp":
        return backbones.mlp(x, stem_units, activation=activation, dropout=dropout, prefix="stem")
    return backbones.cnn(
        x, filters, stem_units, kernel_size=kernel_size, activation=activation, dropout=dropout, prefix="stem"
    )


def _heads(mixtures, tasks, head_units, activation, dropout):
    # Mixture t belongs to tasks[t]: gate_weights() relies on this order.
    return {
        task.name: backbones.task_head(mixture, task, head_units, activation=activation, dropout=dropout)
        for mixture, task in zip(mixtures, tasks)
    }


@register_architecture("mmoe")
def mmoe(
    inputs,
    tasks,
    backbone: str = "auto",
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    stem_units: Sequence[int] = (),
    num_experts: int = 4,
    expert_units: Sequence[int] = (32,),
    head_units: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
):
    """Multi-gate mixture of experts: shared experts, one softmax gate and one head per task.

    Args:
        backbone: the shared stem: ``"auto"`` (MLP for vector inputs, CNN for images),
            ``"mlp"`` or ``"cnn"``.
        filters: filters of each conv + max-pool stage of the CNN stem.
        kernel_size: size of the stem's convolution kernels.
        stem_units: widths of the stem's dense layers (after the convolutions for a CNN);
            empty: vector inputs go to the experts as they are.
        num_experts: number of experts, shared by all tasks.
        expert_units: widths of each expert's dense layers.
        head_units: widths of the hidden layers of every task head (empty: a linear head).
        activation: activation of hidden layers and experts.
        dropout: dropout rate after every dense layer of the stem and the heads.

    The experts are the layer named ``"mixture_of_experts"``; ``gate_weights(model, x)``
    reports how each task weighs them.
    """
    x = _stem(inputs, "mmoe", backbone, filters, kernel_size, stem_units, activation, dropout)
    mixtures = MixtureOfExperts(
        len(tasks), num_experts, expert_units, activation=activation, name="mixture_of_experts"
    )(x)
    return _heads(mixtures, tasks, head_units, activation, dropout)


@register_architecture("ple")
def ple(
    inputs,
    tasks,
    backbone: str = "auto",
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    stem_units: Sequence[int] = (),
    num_task_experts: int = 2,
    num_shared_experts: int = 2,
    expert_units: Sequence[int] = (32, 32),
    head_units: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
):
    """Progressive layered extraction: task-specific and shared experts over several levels.

    Args:
        backbone: the shared stem: ``"auto"`` (MLP for vector inputs, CNN for images),
            ``"mlp"`` or ``"cnn"``.
        filters: filters of each conv + max-pool stage of the CNN stem.
        kernel_size: size of the stem's convolution kernels.
        stem_units: widths of the stem's dense layers (after the convolutions for a CNN);
            empty: vector inputs go to the experts as they are.
        num_task_experts: experts of each task, per level.
        num_shared_experts: experts shared by all tasks, per level.
        expert_units: width of the experts of each extraction level; one entry per level (a
            single level is the paper's customized gate control, CGC).
        head_units: widths of the hidden layers of every task head (empty: a linear head).
        activation: activation of hidden layers and experts.
        dropout: dropout rate after every dense layer of the stem and the heads.

    The experts are the layer named ``"progressive_layered_extraction"``;
    ``gate_weights(model, x)`` reports how each task weighs them.
    """
    x = _stem(inputs, "ple", backbone, filters, kernel_size, stem_units, activation, dropout)
    mixtures = ProgressiveLayeredExtraction(
        len(tasks),
        num_task_experts,
        num_shared_experts,
        expert_units,
        activation=activation,
        name="progressive_layered_extraction",
    )(x)
    return _heads(mixtures, tasks, head_units, activation, dropout)


def gate_weights(model: keras.Model, inputs: Any, *, layer: str | None = None) -> dict[str, np.ndarray]:
    """How much each task relies on each expert, for one batch of ``inputs`` (as the model takes them).

    ``model`` is a model built by ``"mmoe"`` or ``"ple"`` (or any model with one
    ``MixtureOfExperts`` or ``ProgressiveLayeredExtraction`` layer; name it with ``layer=``
    if there are several).  Returns ``{task_name: array}``, the softmax gate values, which sum
    to 1 over the last axis:

    - MMoE: ``(batch, num_experts)``.
    - PLE: ``(batch, num_levels, num_task_experts + num_shared_experts)``: per extraction
      level, the task's weights on its own experts, then on the shared experts.  The shared
      branch's gates are available from ``ProgressiveLayeredExtraction.gate_weights``.

    Task names follow ``model.tasks``; the layer's task ``t`` is ``model.tasks[t]``, which
    holds for models built by ``create_model`` (it wires the mixtures to the tasks in order).
    """
    expert_layer = _find_expert_layer(model, layer)
    names = _task_names(model)
    if len(names) != expert_layer.num_tasks:
        raise ValueError(
            f"Layer {expert_layer.name!r} has {expert_layer.num_tasks} task gates but the model has "
            f"{len(names)} tasks {names}; gate_weights needs one gate per task, in task order."
        )
    # Called eagerly rather than through predict(): a new model per call would retrace a
    # tf.function each time, which TF warns about when users inspect many batches.
    features = keras.Model(model.input, expert_layer.input)(inputs, training=False)
    gates = expert_layer.gate_weights(features)
    if isinstance(expert_layer, MixtureOfExperts):
        gates = keras.ops.convert_to_numpy(gates)  # (batch, tasks, experts)
    else:  # (batch, levels, tasks, experts)
        gates = np.stack([keras.ops.convert_to_numpy(level["tasks"]) for level in gates], axis=1)
    return {name: gates[..., t, :] for t, name in enumerate(names)}


def _find_expert_layer(model: keras.Model, name: str | None):
    found = [l for l in model.layers if isinstance(l, EXPERT_LAYERS)]
    if name is not None:
        found = [l for l in found if l.name == name]
        if not found:
            raise ValueError(
                f"The model has no MixtureOfExperts or ProgressiveLayeredExtraction layer named "
                f"{name!r}; it has {[l.name for l in model.layers if isinstance(l, EXPERT_LAYERS)]}."
            )
    if not found:
        raise ValueError(
            f"Model {model.name!r} has no MixtureOfExperts or ProgressiveLayeredExtraction layer; "
            "gate_weights needs a model built by the 'mmoe' or 'ple' architecture."
        )
    if len(found) > 1:
        raise ValueError(
            f"Model {model.name!r} has several expert layers {[l.name for l in found]}; "
            "choose one with layer=NAME."
        )
    return found[0]


def _task_names(model: keras.Model) -> list[str]:
    tasks = getattr(model, "tasks", None)
    if tasks:
        return [t.name for t in tasks]
    if isinstance(model.output, Mapping):
        return list(model.output)
    raise ValueError(
        f"Model {model.name!r} has neither tasks nor a dict of outputs; gate_weights names the "
        "gates after the tasks, so it needs a MultiTaskModel (from mtlzoo.create_model)."
    )
