"""Fine-tuning a (pretrained) multi-task model: change its tasks, freeze what should not move.

``retask`` builds a new ``MultiTaskModel`` on the same trunk: tasks dropped, heads replaced by
fresh ones, new tasks added; ``freeze`` / ``unfreeze`` set the declared trunk, or layers by
name pattern, trainable or not. Then compile and ``fit`` as usual; the result saves, reloads
and exports like any zoo model::

    model = mtlzoo.load("multimnist_hard_sharing")
    model = mtlzoo.models.retask(model, add=[mtlzoo.Task("sum", "classification", num_classes=19)],
                                   drop=["left", "right"])
    mtlzoo.models.freeze(model)  # the shared trunk; or name layers by glob, e.g. "shared_*"
    model = mtlzoo.models.drop_auxiliary(model)  # only the main tasks' heads
    model.compile(optimizer="adam"); model.fit(...)
"""

from __future__ import annotations

import fnmatch
from typing import Sequence

import keras

from mtlzoo.architectures import backbones
from mtlzoo.models.model import MultiTaskModel
from mtlzoo.tasks import Task, as_tasks


def trunk_layer(model: MultiTaskModel) -> str:
    """The layer whose output is the model's declared shared representation (hard sharing)."""
    if model.shared_layer is None:
        raise ValueError(
            f"Model {model.name!r} declares no shared representation; pass from_layer= naming the "
            f"layer whose output new heads should read. Its layers: {[l.name for l in model.layers]}."
        )
    return model.shared_layer


def retask(
    model: MultiTaskModel,
    *,
    add: Sequence[Task | dict] = (),
    drop: Sequence[str] = (),
    replace: Sequence[str] = (),
    from_layer: str | None = None,
    head_units: Sequence[int] = (),
    activation: str = "relu",
) -> MultiTaskModel:
    """A model with the same inputs and trunk as ``model`` and a changed set of tasks.

    Args:
        add: new tasks, each given a fresh head on the trunk.
        drop: tasks to remove (their heads go with them).
        replace: tasks whose heads are re-initialised (same task, fresh head).
        from_layer: the layer whose output new heads read (default: the trunk's last layer).
        head_units: hidden widths of each new head.

    The new model shares the kept layers, and so their weights, with ``model``.
    """
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"retask needs a MultiTaskModel, got {type(model).__name__}.")
    names = [t.name for t in model.tasks]
    for what, given in (("drop", drop), ("replace", replace)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"retask({what}=...) names unknown task(s) {unknown}; the model's tasks are {names}.")
    added = as_tasks(add) if add else ()
    clashes = sorted({t.name for t in added} & (set(names) - set(drop)))
    if clashes:
        raise ValueError(f"retask(add=...) would duplicate task(s) {clashes}; drop or replace them instead.")
    layer_name = from_layer or trunk_layer(model)
    try:
        trunk = model.get_layer(layer_name).output
    except ValueError:
        raise ValueError(f"No layer {layer_name!r} in {model.name!r}; its layers: {[l.name for l in model.layers]}.")
    outputs, tasks = {}, []
    for task in model.tasks:
        if task.name in drop:
            continue
        fresh = task.name in replace
        outputs[task.name] = (backbones.task_head(trunk, task, head_units, activation=activation) if fresh
                              else model.output[task.name])
        tasks.append(task)
    for task in added:
        outputs[task.name] = backbones.task_head(trunk, task, head_units, activation=activation)
        tasks.append(task)
    if not tasks:
        raise ValueError("retask would leave the model without tasks.")
    return MultiTaskModel(inputs=model.input, outputs=outputs, tasks=tasks, shared=layer_name, name=model.name)


def drop_auxiliary(model: MultiTaskModel) -> MultiTaskModel:
    """``model`` with only its main tasks: auxiliary and adversarial heads (their gradient
    reversal, confusion and decoder layers too) are gone, the rest shares its layers with ``model``.
    What export serves by default, and where fine-tuning on the main tasks starts."""
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"drop_auxiliary needs a MultiTaskModel, got {type(model).__name__}.")
    keep = model.main_tasks
    if len(keep) == len(model.tasks):
        return model
    return MultiTaskModel(inputs=model.input, outputs={t.name: model.output[t.name] for t in keep}, tasks=keep,
                          shared=model.shared_layer, name=model.name)


def _set_trainable(model: keras.Model, patterns, trainable: bool) -> list[str]:
    if patterns is None:  # the declared shared trunk
        trunk = {layer.name for layer in model.trunk_layers} if isinstance(model, MultiTaskModel) else set()
        if not trunk:
            raise ValueError(f"Model {model.name!r} declares no shared trunk; name the layers to change by pattern.")
        changed = [l for l in model.layers if l.weights and l.name in trunk]
    else:
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        changed = [l for l in model.layers if l.weights and any(fnmatch.fnmatch(l.name, p) for p in patterns)]
        if not changed:
            raise ValueError(f"No layer with weights matches {patterns}; the layers: {[l.name for l in model.layers]}.")
    for layer in changed:
        layer.trainable = trainable
    return [layer.name for layer in changed]


def freeze(model: keras.Model, patterns=None) -> list[str]:
    """Stop training the layers whose names match the glob ``patterns`` (default: the layers of
    the declared shared trunk); returns their names.

    Compile (again) afterwards: Keras fixes the trainable set when it compiles.
    """
    return _set_trainable(model, patterns, False)


def unfreeze(model: keras.Model, patterns="*") -> list[str]:
    """Train the layers matching ``patterns`` again (compile afterwards)."""
    return _set_trainable(model, patterns, True)


def for_recipe(model: MultiTaskModel, recipe, *, freeze_patterns: Sequence[str] = (),
               head_units: Sequence[int] = ()) -> MultiTaskModel:
    """``model`` retasked to ``recipe``'s tasks: shared ones keep their heads, others come or go."""
    wanted = {t.name: t for t in recipe.tasks}
    have = [t.name for t in model.tasks]
    tuned = retask(model, add=[t for name, t in wanted.items() if name not in have],
                   drop=[name for name in have if name not in wanted], head_units=head_units)
    for pattern in freeze_patterns:
        freeze(tuned, pattern)
    return tuned
