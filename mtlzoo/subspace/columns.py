"""One column network per task, every column's weights in one low-dimensional random subspace.

``SubspaceColumns`` holds a column network (the template) whose weights are theta_0, fixed,
and a random expansion P (D x l, regenerated from its seed). Task t runs the template with

    theta_t = theta_0 + P (Q alpha_t)          Q: l x k, shared;  alpha_t: k, task t's own

(Zakerinia, Ghobadi & Lampert, 2025, "Deep Multi-Task Learning Has Low Amortized Intrinsic
Dimensionality", arXiv 2501.19067). Only Q and alpha_1..T train: l*k + T*k numbers, so the
*amortized intrinsic dimension* is l*k/T + k per task. With ``task_dim=None`` there is no Q:
each task trains its own w_t in the l-dimensional subspace (theta_t = theta_0 + P w_t), T
independent single-task models in the sense of Li et al. (ICLR 2018), l numbers per task.

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
class TakeFirst(keras.layers.Layer):
    """The first ``n`` features (last axis): a task's outputs from a column sized for the widest task."""

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = positive_int("TakeFirst", "n", n)

    def call(self, x):
        return x[..., : self.n]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.n)

    def get_config(self) -> dict:
        return {**super().get_config(), "n": self.n}


@keras.saving.register_keras_serializable(package="mtlzoo")
class SubspaceColumns(keras.layers.Layer):
    """T columns sharing theta_0 and a random subspace; called on x, returns T outputs.

    Args:
        column: the template network (a built ``keras.Model``, or its serialized config) taking
            x and returning ``max(output_sizes)`` features; its weights are theta_0.
        output_sizes: each task's output width; task t gets the first ``output_sizes[t]``.
        intrinsic_dim: l, the dimension of the random subspace (P is D x l).
        task_dim: k, the length of each task's alpha_t (Q is l x k); ``None``: no Q, each task
            trains its own l-vector.
        expansion: ``"kronecker"`` (default), ``"sparse"`` or ``"dense"`` (``Expansion``).
        seed: the seed P is regenerated from.
        levels: quantise Q and alpha (or the w_t) to a learned codebook of this many values in
            the forward pass, gradients passed straight through to the unquantised values
            (quantisation-aware training, for ``mtlzoo.subspace.compression``); None: off.
    """

    def __init__(self, column, output_sizes: Sequence[int], intrinsic_dim: int, task_dim: int | None = None,
                 expansion: str = "kronecker", seed: int = 0, levels: int | None = None, **kwargs):
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

    def build(self, input_shape):
        tasks, l, k = self.num_tasks, self.intrinsic_dim, self.task_dim
        if k is None:
            self.coordinates = self.add_weight(shape=(tasks, l), initializer="zeros", name="coordinates")
        else:
            # Unit-norm columns in expectation, so |Q alpha| ~ |alpha| from the start.
            self.shared_basis = self.add_weight(
                shape=(l, k), initializer=keras.initializers.RandomNormal(stddev=1.0 / np.sqrt(l), seed=self.seed),
                name="shared_basis")
            self.coordinates = self.add_weight(shape=(tasks, k), initializer="zeros", name="coordinates")
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
        """The trained numbers: shared (l*k, or 0), per task (k, or l), and the amortized
        intrinsic dimension, shared / T + per task."""
        l, k, tasks = self.intrinsic_dim, self.task_dim, self.num_tasks
        shared, per_task = (0, l) if k is None else (l * k, k)
        return {"shared": shared, "per_task": per_task, "tasks": tasks, "amortized": shared / tasks + per_task,
                "column_weights": self.expansion.size}

    def subspace_vectors(self):
        """(T, l): each task's point in the random subspace (Q alpha_t, or w_t)."""
        free = [self._quantized(v) if self.levels is not None else v for v in self.free_variables()]
        if self.task_dim is None:
            return free[0]
        return ops.matmul(free[1], ops.transpose(free[0]))

    def task_weights(self) -> list[list]:
        """theta_t for every task, as ``[[value per template weight] per task]``."""
        sizes = [int(np.prod(v.shape)) for v in self.theta0]
        delta = self.expansion.apply(ops.cast(self.subspace_vectors(), "float32"))
        # One split, one broadcast add and one unstack per variable: their gradients are a concat
        # and a stack, where slicing each task's piece out would add T full-size zero tensors.
        pieces = ops.split(delta, np.cumsum(sizes)[:-1].tolist(), axis=1) if len(sizes) > 1 else [delta]
        per_variable = [
            ops.unstack(v.value + ops.cast(ops.reshape(piece, (self.num_tasks, *v.shape)), v.dtype), axis=0)
            for v, piece in zip(self.theta0, pieces)
        ]
        return [list(weights) for weights in zip(*per_variable)]

    def call(self, x, training=None):
        outputs = []
        for size, weights in zip(self.output_sizes, self.task_weights()):
            y = call_with(self.column, list(zip(self.theta0, weights)), x, training)
            outputs.append(y[..., :size])
        return outputs

    def compute_output_shape(self, input_shape):
        shape = self.column.compute_output_shape(input_shape)
        return [(*shape[:-1], size) for size in self.output_sizes]

    def get_config(self) -> dict:
        # Through JSON, so the config is what a .keras file holds (lists, not tuples).
        column = json.loads(json.dumps(keras.saving.serialize_keras_object(self.column)))
        return {**super().get_config(), "column": column,
                "output_sizes": list(self.output_sizes), "intrinsic_dim": self.intrinsic_dim,
                "task_dim": self.task_dim, "expansion": self.expansion.kind, "seed": self.seed, "levels": self.levels}


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
        outputs = []
        for t, (size, values) in enumerate(zip(layer.output_sizes, thetas)):
            column = keras.models.clone_model(layer.column)
            column.name = f"{layer.name}_task_{t}"
            weights = layer.column.get_weights()
            for i, value in zip(layer.theta_index, values):
                weights[i] = value
            column.set_weights(weights)
            outputs.append(TakeFirst(size, name=f"{layer.name}_take_{t}")(column(x)))
        return outputs

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
