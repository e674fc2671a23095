"""Mixture-of-experts sharing: MMoE (Ma et al., KDD 2018) and PLE (Tang et al., RecSys 2020).

Both layers map one input to one representation per task.  Experts are small dense networks;
each task mixes the expert outputs with its own softmax gate, computed from the input the
task sees, so tasks share experts to the degree that helps them.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import keras
from keras import ops

from mtlzoo.validation import positive_int


def _units_list(layer: str, name: str, value) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(
            f"{layer}: {name} must be a non-empty list of positive integers (layer widths), "
            f"got {value!r}."
        )
    if any(isinstance(u, bool) or not isinstance(u, numbers.Integral) or u < 1 for u in value):
        raise ValueError(f"{layer}: {name} must contain only positive integers, got {list(value)!r}.")
    return [int(u) for u in value]


def _mix(gate, expert_outputs):
    """Gate-weighted sum: ``gate`` is (..., E), each of the E expert outputs is (..., U)."""
    stacked = ops.stack(expert_outputs, axis=-2)  # (..., E, U)
    return ops.sum(ops.expand_dims(gate, -1) * stacked, axis=-2)


@keras.saving.register_keras_serializable(package="mtlzoo")
class MixtureOfExperts(keras.layers.Layer):
    """Multi-gate mixture of experts (MMoE): shared expert MLPs, one softmax gate per task.

    Args:
        num_tasks: number of tasks, i.e. of gates and of outputs.
        num_experts: number of expert networks, shared by all tasks.
        expert_units: widths of each expert's dense layers, e.g. ``[32]``; the last width is
            the width of every task's output.
        activation: activation of the expert layers.

    ``call(x)`` returns a list of ``num_tasks`` tensors ``(..., expert_units[-1])``: task t's
    gate-weighted sum of the expert outputs.  ``gate_weights(x)`` returns the gates themselves.
    ``expert(e)`` lists the dense layers of expert ``e``; ``gates[t]`` is task t's gate.
    """

    def __init__(self, num_tasks, num_experts, expert_units, activation="relu", **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.num_tasks = positive_int(cls, "num_tasks", num_tasks)
        self.num_experts = positive_int(cls, "num_experts", num_experts)
        self.expert_units = _units_list(cls, "expert_units", expert_units)
        self.activation = keras.activations.get(activation)
        # Flat lists of sublayers, here and in PLE: every Keras 3 release saves the layers of a
        # list, only recent ones those of nested lists, so `.keras` files stay widely loadable.
        self.expert_layers = [
            keras.layers.Dense(
                units, activation=self.activation, name=f"expert_{e}_dense_{i}", dtype=self.dtype_policy
            )
            for e in range(self.num_experts)
            for i, units in enumerate(self.expert_units)
        ]
        self.gates = [
            keras.layers.Dense(self.num_experts, activation="softmax", name=f"gate_{t}", dtype=self.dtype_policy)
            for t in range(self.num_tasks)
        ]

    def expert(self, e: int) -> list:
        """The dense layers of expert ``e``, input to output."""
        depth = len(self.expert_units)
        return list(self.expert_layers[e * depth:(e + 1) * depth])

    def build(self, input_shape):
        for e in range(self.num_experts):
            shape = input_shape
            for dense in self.expert(e):
                dense.build(shape)
                shape = dense.compute_output_shape(shape)
        for gate in self.gates:
            gate.build(input_shape)
        self.built = True

    def expert_outputs(self, x) -> list:
        """Each expert's output for ``x``, a list of ``num_experts`` tensors."""
        outputs = []
        for e in range(self.num_experts):
            y = x
            for dense in self.expert(e):
                y = dense(y)
            outputs.append(y)
        return outputs

    def call(self, x):
        outputs = self.expert_outputs(x)
        return [_mix(gate(x), outputs) for gate in self.gates]

    def gate_weights(self, x):
        """Softmax gate values ``(batch, num_tasks, num_experts)``; each row sums to 1."""
        return ops.stack([gate(x) for gate in self.gates], axis=-2)

    def compute_output_shape(self, input_shape):
        return [(*input_shape[:-1], self.expert_units[-1]) for _ in range(self.num_tasks)]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tasks=self.num_tasks,
            num_experts=self.num_experts,
            expert_units=list(self.expert_units),
            activation=keras.activations.serialize(self.activation),
        )
        return config


@keras.saving.register_keras_serializable(package="mtlzoo")
class ProgressiveLayeredExtraction(keras.layers.Layer):
    """Progressive layered extraction (PLE): task-specific and shared experts over several levels.

    Each of the ``len(expert_units)`` extraction levels has, per task, ``num_task_experts``
    experts of its own, plus ``num_shared_experts`` shared experts; an expert at level ``l`` is
    one dense layer of ``expert_units[l]`` units.  Task t's gate mixes its own experts and the
    shared ones (never another task's); the shared branch's gate mixes all experts and feeds
    the shared experts of the next level, so it exists on every level but the last.  Level 0
    feeds the input ``x`` to every branch; level ``l + 1`` feeds task t's experts and gate
    with task t's mixture of level ``l``.

    Args:
        num_tasks: number of tasks (outputs).
        num_task_experts: experts owned by each task, per level.
        num_shared_experts: experts shared by all tasks, per level.
        expert_units: width of the experts of each level; its length is the number of levels.
        activation: activation of the experts.

    ``call(x)`` returns a list of ``num_tasks`` tensors ``(..., expert_units[-1])``.
    Sublayers, by level ``l`` and task ``t``: ``task_experts(l, t)``, ``shared_experts(l)``,
    ``task_gate(l, t)`` and ``shared_gate(l)`` (every level but the last).
    """

    def __init__(
        self, num_tasks, num_task_experts, num_shared_experts, expert_units, activation="relu", **kwargs
    ):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.num_tasks = positive_int(cls, "num_tasks", num_tasks)
        self.num_task_experts = positive_int(cls, "num_task_experts", num_task_experts)
        self.num_shared_experts = positive_int(cls, "num_shared_experts", num_shared_experts)
        self.expert_units = _units_list(cls, "expert_units", expert_units)
        self.activation = keras.activations.get(activation)
        self.num_levels = len(self.expert_units)

        def dense(units, name, activation=self.activation):
            return keras.layers.Dense(units, activation=activation, name=name, dtype=self.dtype_policy)

        n_task, n_shared, levels, tasks = (
            self.num_task_experts, self.num_shared_experts, self.num_levels, range(self.num_tasks)
        )
        # Flat lists ordered by (level, task, expert); the accessors below do the indexing.
        self.task_expert_layers = [
            dense(units, f"level_{l}_task_{t}_expert_{k}")
            for l, units in enumerate(self.expert_units)
            for t in tasks
            for k in range(n_task)
        ]
        self.shared_expert_layers = [
            dense(units, f"level_{l}_shared_expert_{k}")
            for l, units in enumerate(self.expert_units)
            for k in range(n_shared)
        ]
        self.task_gate_layers = [
            dense(n_task + n_shared, f"level_{l}_task_{t}_gate", "softmax") for l in range(levels) for t in tasks
        ]
        # The last level's shared mixture would feed nothing, so it has no shared gate.
        self.shared_gate_layers = [
            dense(self.num_tasks * n_task + n_shared, f"level_{l}_shared_gate", "softmax")
            for l in range(levels - 1)
        ]

    def task_experts(self, level: int, task: int) -> list:
        """The experts task ``task`` owns at ``level``."""
        start = (level * self.num_tasks + task) * self.num_task_experts
        return list(self.task_expert_layers[start:start + self.num_task_experts])

    def shared_experts(self, level: int) -> list:
        """The shared experts of ``level``."""
        start = level * self.num_shared_experts
        return list(self.shared_expert_layers[start:start + self.num_shared_experts])

    def task_gate(self, level: int, task: int):
        """Task ``task``'s gate at ``level``, over its own experts, then the shared ones."""
        return self.task_gate_layers[level * self.num_tasks + task]

    def shared_gate(self, level: int):
        """The shared gate of ``level`` (not the last), over every task's experts, then the shared ones."""
        if not 0 <= level < self.num_levels - 1:
            raise IndexError(
                f"Levels 0 to {self.num_levels - 2} have a shared gate; the last level, and so "
                f"level {level} of {self.num_levels}, has none."
            )
        return self.shared_gate_layers[level]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for l in range(self.num_levels):
            for layer in self.shared_experts(l):
                layer.build(shape)
            for t in range(self.num_tasks):
                for layer in (*self.task_experts(l, t), self.task_gate(l, t)):
                    layer.build(shape)
            if l < self.num_levels - 1:
                self.shared_gate(l).build(shape)
            shape = (*shape[:-1], self.expert_units[l])
        self.built = True

    def _forward(self, x, with_gates=False):
        """Task outputs of the last level, and the gates of every level (see ``gate_weights``)."""
        task_inputs, shared_input = [x] * self.num_tasks, x
        gates = []
        for l in range(self.num_levels):
            own = [[expert(task_inputs[t]) for expert in self.task_experts(l, t)] for t in range(self.num_tasks)]
            shared = [expert(shared_input) for expert in self.shared_experts(l)]
            task_gates = [self.task_gate(l, t)(task_inputs[t]) for t in range(self.num_tasks)]
            level = {"tasks": ops.stack(task_gates, axis=-2)} if with_gates else {}
            next_inputs = [_mix(task_gates[t], own[t] + shared) for t in range(self.num_tasks)]
            if l < self.num_levels - 1:
                shared_gate = self.shared_gate(l)(shared_input)
                level["shared"] = shared_gate
                shared_input = _mix(shared_gate, [e for experts in own for e in experts] + shared)
            task_inputs = next_inputs
            gates.append(level)
        return task_inputs, gates

    def call(self, x):
        return self._forward(x)[0]

    def gate_weights(self, x):
        """The softmax gate values of every level, as a list with one dict per level.

        ``level["tasks"]`` is ``(batch, num_tasks, num_task_experts + num_shared_experts)``:
        task t's weights on its own experts, then on the shared experts.  On every level but
        the last, ``level["shared"]`` is ``(batch, num_tasks * num_task_experts +
        num_shared_experts)``: the shared gate's weights on task 0's experts, task 1's, ...,
        then the shared experts.  Every gate sums to 1 over its experts.
        """
        return self._forward(x, with_gates=True)[1]

    def compute_output_shape(self, input_shape):
        return [(*input_shape[:-1], self.expert_units[-1]) for _ in range(self.num_tasks)]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tasks=self.num_tasks,
            num_task_experts=self.num_task_experts,
            num_shared_experts=self.num_shared_experts,
            expert_units=list(self.expert_units),
            activation=keras.activations.serialize(self.activation),
        )
        return config
