"""One column network per task, every column's weights in one low-dimensional random subspace.

``SubspaceColumns`` holds a column network (the template) whose weights are theta_0, fixed,
and a random expansion P (D x l, regenerated from its seed). Task t runs the template with

    theta_t = theta_0 + P (Q alpha_t)          Q: l x k, shared;  alpha_t: k, task t's own

(Zakerinia, Ghobadi & Lampert, 2025, "Deep Multi-Task Learning Has Low Amortized Intrinsic
Dimensionality", arXiv 2501.19067). Only Q and alpha_1..T train: l*k + T*k numbers, so the
*amortized intrinsic dimension* is l*k/T + k per task. With ``task_dim=None`` there is no Q:
each task trains its own w_t in the l-dimensional subspace (theta_t = theta_0 + P w_t), T
independent single-task models in the sense of Li et al. (ICLR 2018), l numbers per task.
With ``one_network=True`` all tasks share one network (hard parameter sharing, trunk and heads
in the subspace): its output holds the tasks' outputs side by side, theta = theta_0 + P w, l
numbers in all.

``freeze(model)`` writes theta_t into plain copies of the column: no expansion left, to export.
"""

from __future__ import annotations

import json
from typing import Sequence

import keras
import numpy as np
from keras import ops

from mtlzoo.layers.substitution import call_with
from mtlzoo.subspace.compression import nearest
from mtlzoo.subspace.expansions import Expansion
from mtlzoo.validation import positive_int


@keras.saving.register_keras_serializable(package="mtlzoo")
class OutputSlice(keras.layers.Layer):
    """Features ``start .. start + size`` (last axis): one task's outputs from a column's output."""

    def __init__(self, start: int, size: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise ValueError(f"OutputSlice: start must be a non-negative integer, got {start!r}.")
        self.start = start
        self.size = positive_int("OutputSlice", "size", size)

    def call(self, x):
        return x[..., self.start: self.start + self.size]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.size)

    def get_config(self) -> dict:
        return {**super().get_config(), "start": self.start, "size": self.size}


@keras.saving.register_keras_serializable(package="mtlzoo")
class SubspaceColumns(keras.layers.Layer):
    """T columns sharing theta_0 and a random subspace; called on x, returns T outputs.

    Args:
        column: the template network (a built ``keras.Model``, or its serialized config) taking
            x and returning ``max(output_sizes)`` features (``sum(output_sizes)`` with
            ``one_network``); its weights are theta_0.
        output_sizes: each task's output width; task t gets the first ``output_sizes[t]`` of its
            column's features (with ``one_network``: the next ``output_sizes[t]`` of the one column's).
        intrinsic_dim: l, the dimension of the random subspace (P is D x l).
        task_dim: k, the length of each task's alpha_t (Q is l x k); ``None``: no Q, each task
            trains its own l-vector.
        expansion: ``"kronecker"`` (default), ``"sparse"`` or ``"dense"`` (``Expansion``).
        seed: the seed P is regenerated from.
        levels: quantise Q and alpha (or the w_t) to a learned codebook of this many values in
            the forward pass, gradients passed straight through to the unquantised values
            (quantisation-aware training, for ``mtlzoo.subspace.compression``); None: off.
        one_network: one column for all tasks instead of one per task (needs ``task_dim=None``).
    """

    def __init__(self, column, output_sizes: Sequence[int], intrinsic_dim: int, task_dim: int | None = None,
                 expansion: str = "kronecker", seed: int = 0, levels: int | None = None,
                 one_network: bool = False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(column, dict):
            column = keras.saving.deserialize_keras_object(column)
        if not isinstance(column, keras.Model) or not column.built:
            raise ValueError(f"SubspaceColumns: column must be a built keras.Model, got {type(column).__name__}.")
        self.column = column
        self.output_sizes = [positive_int("SubspaceColumns", "output_sizes[]", n) for n in output_sizes]
        if not self.output_sizes:
            raise ValueError("SubspaceColumns: output_sizes must name at least one task.")
        self.intrinsic_dim = positive_int("SubspaceColumns", "intrinsic_dim", intrinsic_dim)
        self.task_dim = None if task_dim is None else positive_int("SubspaceColumns", "task_dim", task_dim)
        self.seed = int(seed)
        self.levels = None if levels is None else positive_int("SubspaceColumns", "levels", levels)
        self.one_network = bool(one_network)
        if self.one_network and self.task_dim is not None:
            raise ValueError(f"SubspaceColumns: one_network trains one set of coordinates, so there is no task "
                             f"basis; expected task_dim=None, got {task_dim!r}.")
        wanted = sum(self.output_sizes) if self.one_network else max(self.output_sizes)
        width = column.outputs[0].shape[-1] if len(column.outputs) == 1 else None
        if width != wanted:
            raise ValueError(f"SubspaceColumns: the column must return one tensor of {wanted} features "
                             f"({'the sum' if self.one_network else 'the largest'} of output_sizes), got "
                             f"{[tuple(o.shape) for o in column.outputs]}.")
        # theta_0: the template's trainable weights (state such as moving statistics stays its own).
        self.theta_index = [i for i, v in enumerate(column.weights) if v.trainable]
        self.theta0 = [column.weights[i] for i in self.theta_index]
        size = int(sum(np.prod(v.shape) for v in self.theta0))
        if intrinsic_dim > size:
            raise ValueError(f"SubspaceColumns: intrinsic_dim={intrinsic_dim} exceeds the column's {size} weights.")
        self.expansion = Expansion(expansion, size, self.intrinsic_dim, self.seed)
        for variable in self.theta0:
            variable.trainable = False  # theta_0 is fixed: only the subspace coordinates train

    @property
    def num_tasks(self) -> int:
        return len(self.output_sizes)

    @property
    def num_columns(self) -> int:
        """How many networks run: one per task, or one (``one_network``)."""
        return 1 if self.one_network else self.num_tasks

    def build(self, input_shape):
        l, k = self.intrinsic_dim, self.task_dim
        if k is None:
            self.coordinates = self.add_weight(shape=(self.num_columns, l), initializer="zeros", name="coordinates")
        else:
            # Unit-norm columns in expectation, so |Q alpha| ~ |alpha| from the start.
            self.shared_basis = self.add_weight(
                shape=(l, k), initializer=keras.initializers.RandomNormal(stddev=1.0 / np.sqrt(l), seed=self.seed),
                name="shared_basis")
            self.coordinates = self.add_weight(shape=(self.num_tasks, k), initializer="zeros", name="coordinates")
        if self.levels is not None:
            # Evenly spaced over Q's starting spread (+-3 sd); certify starts it from k-means instead.
            spread = np.linspace(-3.0, 3.0, self.levels) / np.sqrt(l) if self.levels > 1 else np.zeros(1)
            self.codebook = self.add_weight(shape=(self.levels,), initializer=keras.initializers.Constant(spread),
                                            name="codebook")
        self.built = True

    def free_variables(self) -> list:
        """The trained subspace coordinates: ``[Q, alpha]``, or ``[w]`` without a shared basis."""
        return [self.coordinates] if self.task_dim is None else [self.shared_basis, self.coordinates]

    def _quantized(self, x):
        # Forward: the nearest codebook level; backward: identity to x, and to the levels used.
        index = ops.argmin(ops.abs(ops.expand_dims(x, -1) - self.codebook), axis=-1)
        return ops.take(self.codebook, index) + x - ops.stop_gradient(x)

    def symbols(self) -> np.ndarray:
        """The codebook index of every free value, Q then alpha flattened (``levels`` set)."""
        if self.levels is None:
            raise ValueError("SubspaceColumns.symbols: this layer has no codebook (levels=None).")
        values = np.concatenate([ops.convert_to_numpy(v).ravel() for v in self.free_variables()])
        return nearest(values, ops.convert_to_numpy(self.codebook))

    def free_parameters(self) -> dict:
        """The trained numbers: shared (l*k, l with ``one_network``, else 0), per task (k, l, or
        0 with ``one_network``), and the amortized intrinsic dimension, shared / T + per task."""
        l, k, tasks = self.intrinsic_dim, self.task_dim, self.num_tasks
        shared, per_task = (l, 0) if self.one_network else (0, l) if k is None else (l * k, k)
        return {"shared": shared, "per_task": per_task, "tasks": tasks, "amortized": shared / tasks + per_task,
                "column_weights": self.expansion.size}

    def subspace_vectors(self):
        """(T, l): each task's point in the random subspace (Q alpha_t, or w_t); (1, l) with ``one_network``."""
        free = [self._quantized(v) if self.levels is not None else v for v in self.free_variables()]
        if self.task_dim is None:
            return free[0]
        return ops.matmul(free[1], ops.transpose(free[0]))

    def task_weights(self) -> list[list]:
        """theta_t for every column, as ``[[value per template weight] per column]``."""
        sizes = [int(np.prod(v.shape)) for v in self.theta0]
        delta = self.expansion.apply(ops.cast(self.subspace_vectors(), "float32"))
        # One split, one broadcast add and one unstack per variable: their gradients are a concat
        # and a stack, where slicing each task's piece out would add T full-size zero tensors.
        pieces = ops.split(delta, np.cumsum(sizes)[:-1].tolist(), axis=1) if len(sizes) > 1 else [delta]
        per_variable = [
            ops.unstack(v.value + ops.cast(ops.reshape(piece, (self.num_columns, *v.shape)), v.dtype), axis=0)
            for v, piece in zip(self.theta0, pieces)
        ]
        return [list(weights) for weights in zip(*per_variable)]

    def slices(self) -> list[tuple[int, int, int]]:
        """(column, start, size) of each task's outputs."""
        if not self.one_network:
            return [(t, 0, size) for t, size in enumerate(self.output_sizes)]
        starts = np.cumsum([0] + self.output_sizes[:-1]).tolist()
        return [(0, start, size) for start, size in zip(starts, self.output_sizes)]

    def call(self, x, training=None):
        ys = [call_with(self.column, list(zip(self.theta0, weights)), x, training) for weights in self.task_weights()]
        return [ys[column][..., start: start + size] for column, start, size in self.slices()]

    def compute_output_shape(self, input_shape):
        shape = self.column.compute_output_shape(input_shape)
        return [(*shape[:-1], size) for size in self.output_sizes]

    def get_config(self) -> dict:
        # Through JSON, so the config is what a .keras file holds (lists, not tuples).
        column = json.loads(json.dumps(keras.saving.serialize_keras_object(self.column)))
        return {**super().get_config(), "column": column,
                "output_sizes": list(self.output_sizes), "intrinsic_dim": self.intrinsic_dim,
                "task_dim": self.task_dim, "expansion": self.expansion.kind, "seed": self.seed, "levels": self.levels,
                "one_network": self.one_network}


def find_columns(model: keras.Model) -> SubspaceColumns:
    """The model's ``SubspaceColumns`` layer, or ``ValueError`` if it has none."""
    found = [layer for layer in model.layers if isinstance(layer, SubspaceColumns)]
    if len(found) != 1:
        raise ValueError(f"{model.name!r} has {len(found)} SubspaceColumns layers; expected one "
                         "(a model of the 'subspace' architecture).")
    return found[0]


def freeze(model: keras.Model) -> keras.Model:
    """A plain copy of a subspace model: each task's column with theta_t written in, no expansion.

    It answers exactly as ``model`` does in inference mode; it is what ``export_saved_model``
    writes, and ``mtlzoo.subspace`` is not needed to load it.
    """
    layer = find_columns(model)
    thetas = [[ops.convert_to_numpy(w) for w in weights] for weights in layer.task_weights()]

    def plain_columns(x):
        ys = []
        for c, values in enumerate(thetas):
            column = keras.models.clone_model(layer.column)
            column.name = f"{layer.name}_column_{c}"
            weights = layer.column.get_weights()
            for i, value in zip(layer.theta_index, values):
                weights[i] = value
            column.set_weights(weights)
            ys.append(column(x))
        return [OutputSlice(start, size, name=f"{layer.name}_take_{t}")(ys[c])
                for t, (c, start, size) in enumerate(layer.slices())]

    def call_function(current, *args, **kwargs):
        if isinstance(current, SubspaceColumns):
            return plain_columns(args[0])
        return current(*args, **kwargs)

    # Cloned through a plain, uncompiled view: the copy gets new layers, the original keeps its own.
    frozen = keras.models.clone_model(keras.Model(model.input, model.output), call_function=call_function)
    for source in model.layers:
        if not isinstance(source, SubspaceColumns) and source.weights:
            frozen.get_layer(source.name).set_weights(source.get_weights())
    if hasattr(model, "tasks"):
        frozen = type(model)(inputs=frozen.input, outputs=frozen.output, tasks=model.tasks, name=model.name)
    return frozen
