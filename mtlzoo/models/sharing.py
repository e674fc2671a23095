"""Which variables the tasks share, and where a gradient weighting method differentiates."""

from __future__ import annotations

import keras

from mtlzoo.training import weighted_step


def shared_variables(model: keras.Model) -> list[bool]:
    """For each of ``model.trainable_variables``: does it feed more than one output?"""
    uses: dict[int, int] = {}
    for output in keras.tree.flatten(model.output):
        for v in keras.Model(model.inputs, output).trainable_variables:
            uses[id(v)] = uses.get(id(v), 0) + 1
    return [uses.get(id(v), 0) > 1 for v in model.trainable_variables]


def gradient_plan(model, features: bool) -> weighted_step.Plan:
    """The variables a gradient method works with, and the model split at its declared shared
    representation where it has one: needed for ``features``, and used for the parameter
    gradients when every shared variable sits before the representation (hard sharing)."""
    flags = shared_variables(model)
    plan = weighted_step.Plan(shared=[i for i, f in enumerate(flags) if f],
                              others=[i for i, f in enumerate(flags) if not f], features=features)
    if not plan.shared:
        raise ValueError("No trainable variable is shared by two tasks, so there is nothing to combine.")
    representation = model.shared_representation
    if representation is None:
        if features:
            raise ValueError(
                "gradients='features' needs one shared representation that every task head reads "
                f"(as in hard sharing); model {model.name!r} declares none. Use gradients='parameters'."
            )
        return plan
    trunk = keras.Model(model.inputs, representation, name="trunk")
    in_trunk = {id(v) for v in trunk.trainable_variables}
    if features or all(id(model.trainable_variables[i]) in in_trunk for i in plan.shared):
        plan.trunk = trunk
        plan.heads = keras.Model(representation, model.output, name="heads")
    return plan
