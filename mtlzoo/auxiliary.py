"""Auxiliary and adversarial tasks: the heads ``create_model`` attaches to the shared
representation, and the adversaries' schedule ``MultiTaskModel.fit`` keeps.

Tasks with role ``auxiliary`` of the ordinary kinds are built by the architecture like any
other task (a second label that shapes the shared trunk). Two kinds of head are attached here
instead, to whatever tensor the architecture declares as its shared representation, so that
every such architecture takes them:

- an *adversarial* task's head learns to predict the task while the trunk learns to defeat it:
  by default the head reads the representation through a ``GradientReversal`` layer
  (``<task>_reversal``); with ``adversary="confusion"`` the head reads a stopped copy
  (``<task>_stop``) and a ``Confusion`` layer (``<task>_confusion``) makes the trunk push the
  same head's prediction toward uniform (``mtlzoo.layers.adversary``);
- a *reconstruction* task's decoder maps the representation back to its named input
  (``<task>_decoder_dense_<i>``, then the input's shape).

``mtlzoo.models.drop_auxiliary`` removes all of them (what export does by default).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import keras

from mtlzoo.architectures import backbones
from mtlzoo.layers import adversary
from mtlzoo.tasks import Task

ADVERSARY_UNITS = (64,)
DECODER_UNITS = (256,)


def attached_here(task: Task) -> bool:
    """Whether ``create_model`` attaches this task's head (else the architecture builds it)."""
    return task.role == "adversarial" or task.kind == "reconstruction"


def _units(task: Task, default: tuple[int, ...]) -> tuple[int, ...]:
    # An empty tuple is a request (a linear head), not a missing value.
    return default if task.head_units is None else task.head_units


def attach_heads(tasks: Sequence[Task], shared, features: Mapping[str, object], architecture: str) -> dict:
    """``{task: output}`` for the adversarial and reconstruction tasks among ``tasks``."""
    tasks = [t for t in tasks if attached_here(t)]
    if not tasks:
        return {}
    if shared is None:
        raise ValueError(
            f"Task(s) {[t.name for t in tasks]} read the shared representation, which architecture "
            f"{architecture!r} does not declare; use one that does (its builder returns Heads(outputs, "
            "shared=...)), such as hard_sharing."
        )
    flat = shared if len(shared.shape) == 2 else keras.layers.Flatten(name="shared_flat_for_auxiliary")(shared)
    outputs = {}
    for task in tasks:
        if task.role == "adversarial":
            # Unset fields keep the layer's own defaults.
            options = {k: v for k, v in (("schedule", task.reversal), ("strength", task.reversal_strength))
                       if v is not None}
            if task.adversary == "confusion":
                outputs[task.name] = _confusion_head(flat, task, options)
            else:
                reversed_ = adversary.GradientReversal(**options, name=f"{task.name}_reversal")(flat)
                outputs[task.name] = backbones.task_head(reversed_, task, _units(task, ADVERSARY_UNITS))
        else:
            outputs[task.name] = _decoder(flat, task, features)
    return outputs


def _confusion_head(flat, task: Task, options: dict):
    """The head on ``stop_gradient(flat)`` (learns the task) and, with the same layers, on
    ``flat`` (what the trunk makes uniform), joined by a ``Confusion`` layer."""
    layers = []

    def collect(layer):
        layers.append(layer)
        return layer

    stopped = adversary.StopGradient(name=f"{task.name}_stop")(flat)
    head = backbones.task_head(stopped, task, _units(task, ADVERSARY_UNITS), wrap=collect)
    live = flat
    for layer in layers:
        live = layer(live)
    return adversary.Confusion(**options, name=f"{task.name}_confusion")([head, live])


def _decoder(x, task: Task, features: Mapping[str, object]):
    if task.input not in features:
        raise ValueError(f"Reconstruction task {task.name!r} decodes input {task.input!r}, but the model's inputs "
                         f"are {sorted(features)}.")
    shape = tuple(int(d) for d in features[task.input].shape[1:])
    x = backbones.mlp(x, _units(task, DECODER_UNITS), prefix=f"{task.name}_decoder")
    x = keras.layers.Dense(math.prod(shape), name=f"{task.name}_decoder_output", dtype="float32")(x)
    return keras.layers.Reshape(shape, name=task.name, dtype="float32")(x)


def adversary_layers(model) -> list[adversary.Scheduled]:
    return [layer for layer in getattr(model, "layers", []) if isinstance(layer, adversary.Scheduled)]


class AdversarySchedule(keras.callbacks.Callback):
    """Sets every adversary layer's (``adversary.Scheduled``) ``total_steps`` to this fit's
    epochs x steps, so a ramp reaches its end with the last step (``MultiTaskModel.fit`` adds it)."""

    def on_train_begin(self, logs=None):
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        total = float(epochs * steps) if epochs and steps else 0.0
        for layer in adversary_layers(self.model):
            layer.total_steps.assign(total)
