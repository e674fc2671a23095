"""Running a model or layer with some of its variables replaced by computed values.

MUiR's generated kernels and a subspace model's theta_0 + P Q alpha_t are both weights computed
on every call; ``call_with`` runs the unchanged Keras model with them, on TF and JAX alike.
"""

from __future__ import annotations

import keras


def call_with(model: keras.Model, generated: list, inputs, training):
    """``model(inputs)`` with the kernels in ``generated`` substituted, updates kept.

    A StatelessScope sees only its own mapping, so every other variable is mapped to its
    current value too (inside an enclosing scope, as JAX training uses, that is the traced
    value); state the call updates (dropout seeds, moving statistics) is written back after.
    """
    substituted = {id(v) for v, _ in generated}
    others = [v for v in model.variables if id(v) not in substituted]
    mapping = [(v, v.value) for v in others] + list(generated)
    with keras.StatelessScope(state_mapping=mapping) as scope:
        outputs = model(inputs, training=training)
    for variable in others:
        if not variable.trainable:
            variable.assign(scope.get_current_value(variable))
    return outputs
