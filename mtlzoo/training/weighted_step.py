"""Train steps for gradient weighting methods (TensorFlow and JAX), and the per-task losses.

A gradient method needs the gradient of every task loss with respect to the shared
parameters (or the shared representation), and both backends get them in one vectorised
pass, never a Python loop of T full backward passes. On TensorFlow, where the model has a
shared representation (hard sharing), each task's gradient at the representation comes from
its own head alone and goes through the trunk in one ``pfor`` over the tasks; otherwise one
``GradientTape.jacobian`` with ``pfor``. On JAX, ``vmap`` of one ``vjp``.

Under a ``tf.distribute`` strategy every replica sees a slice of the batch, and Keras losses
are already divided by the number of replicas. The per-task gradients (or their Gram matrix,
for representation gradients) are summed over the replicas *before* the method combines
them, so every replica combines the global per-task gradients, exactly as on one device;
the combined shared gradient is then divided by the replica count, because the optimizer sums
what the replicas apply. On JAX, ``keras.distribution`` compiles one global program, so the
sums are already global.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops


def task_losses(model, y, y_pred, sample_weight):
    """The compiled loss of each task (times its static weight), a list of scalars in task order.

    Updates the ``<task>_loss`` metrics as ``Model.compute_loss`` would. Under tf.distribute
    each value is already divided by the number of replicas.
    """
    trackers = {m.name: m for m in model.metrics}  # Keras adds <task>_loss means when there are 2+ tasks
    if len(model.tasks) > 1 and f"{model.tasks[0].name}_loss" not in trackers:
        # Keras makes them when it first computes the compiled loss; do that once, discarding
        # its metric updates (the stateless scope), so that the means count every batch once.
        # The scope maps the trainable variables to themselves: weight regularizers read them.
        with keras.StatelessScope(state_mapping=[(v, ops.copy(v)) for v in model.trainable_variables]):
            keras.Model.compute_loss(model, None, y, y_pred, sample_weight, training=False)
        trackers = {m.name: m for m in model.metrics}
    values = []
    for name, (loss_fn, weight) in model.task_loss_functions().items():
        weights = sample_weight[name] if isinstance(sample_weight, dict) else sample_weight
        value = ops.cast(loss_fn(y[name], y_pred[name], weights), "float32")
        tracker = trackers.get(f"{name}_loss")
        if tracker is not None:
            tracker.update_state(unscale_for_replicas(value), sample_weight=ops.shape(y_pred[name])[0])
        values.append(value if weight is None else value * weight)
    return values


def weighted_task_losses(model, y, y_pred, sample_weight, additional_losses):
    """``(weighted loss of each task, other loss terms, observed per-task loss values,
    the tasks present in the global batch)`` for ``model.weighting``.

    The weighted losses are a list of scalars, not one stacked tensor, so that the gradient
    of one task's term reaches back through that task's head only. ``additional_losses`` are
    the model's regularization and ``add_loss`` terms of this forward pass.
    """
    losses = task_losses(model, y, y_pred, sample_weight)
    # One all-reduce for the loss values and the label counts of the global batch.
    observed, counts = ops.unstack(sum_over_replicas(ops.stack(
        [ops.stop_gradient(ops.stack(losses)), labelled_counts(model, sample_weight)])))
    present = ops.cast(counts > 0, "float32")
    weights, penalty = model.weighting.loss_weights(observed, present)
    extra = ops.zeros((), "float32")
    for loss in additional_losses:
        extra = extra + ops.sum(ops.cast(loss, "float32"))
    if penalty is not None:
        extra = extra + penalty
    # Every replica adds these (a regularizer, the mean of an add_loss over its own batch) and
    # the replicas' gradients are summed: each contributes its share, as Keras does for them.
    extra = share_for_replicas(extra)
    return [w * loss for w, loss in zip(ops.unstack(weights), losses)], extra, observed, present


def train_step(model, *args):
    """``train_step`` for a weighting with ``uses_gradients``, on the running backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return tf_train_step(model, *args)
    if backend == "jax":
        return jax_train_step(model, *args)
    raise NotImplementedError(f"Gradient weighting methods run on TensorFlow and JAX, not {backend!r}.")


def _loss_tracker(model):
    """The mean behind the ``loss`` log (``Model.metrics`` lists it first)."""
    return next(m for m in model.metrics if m.name == "loss")


def labelled_counts(model, sample_weight):
    """The examples of this replica's batch with a non-zero sample weight, per task (shape (T,));
    a task without sample weights counts as labelled. A task is present in the global batch
    when its count summed over the replicas is positive."""
    counts = []
    for task in model.tasks:
        weights = sample_weight.get(task.name) if isinstance(sample_weight, dict) else sample_weight
        if weights is None:
            counts.append(ops.ones((), "float32"))
        else:
            counts.append(ops.sum(ops.cast(ops.not_equal(weights, 0), "float32")))
    return ops.stack(counts)


def _replicas() -> int:
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def sum_over_replicas(value):
    """The sum of ``value`` over the replicas of the current tf.distribute step (else itself)."""
    if _replicas() == 1:
        return value
    import tensorflow as tf

    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def share_for_replicas(value):
    """``value`` divided by the number of replicas: each replica's share of a global term."""
    return value / _replicas()


def gather_over_replicas(value):
    """Every replica's ``value`` joined along axis 0 in replica order, inside a tf.distribute
    step (else ``value`` itself). Differentiable: each replica's slice gets the gradient that
    every replica's use of it sent back."""
    if _replicas() == 1:
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return value if context is None else context.all_gather(value, axis=0)


def unscale_for_replicas(value):
    return value * _replicas()


@dataclasses.dataclass
class Plan:
    """Which variables the gradient method works with, and how to reach them, fixed per model."""

    shared: list  # indices into model.trainable_variables
    others: list
    features: bool = False  # the method sees the gradients of the representation
    trunk: keras.Model | None = None  # inputs -> the shared representation, where there is one
    heads: keras.Model | None = None  # the shared representation -> task outputs


def _flatten(tensors, rows: int):
    return ops.concatenate([ops.reshape(t, (rows, -1)) for t in tensors], axis=1)


def _unflatten(vector, like):
    out, start = [], 0
    for v in like:
        size = 1
        for dim in v.shape:
            size *= int(dim)
        out.append(ops.reshape(vector[start:start + size], v.shape))
        start += size
    return out


def _zeros_for_none(grads, variables, rows: int | None = None):
    """Zeros where a gradient is missing (``rows``: jacobians, with a leading task axis).

    ``tape.gradient(..., unconnected_gradients=ZERO)`` fails on Keras variables.
    """
    lead = () if rows is None else (rows,)
    return [ops.zeros(lead + tuple(v.shape), v.dtype) if g is None else g for g, v in zip(grads, variables)]


def tf_train_step(model, data):
    """``train_step`` on TensorFlow for a weighting with ``uses_gradients``."""
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    plan: Plan = model.gradient_plan
    weighting = model.weighting
    variables = model.trainable_variables
    shared = [variables[i] for i in plan.shared]
    others = [variables[i] for i in plan.others]
    with tf.GradientTape(persistent=True) as tape:
        if plan.trunk is not None:
            representation = plan.trunk(x, training=True)
            y_pred = plan.heads(representation, training=True)
        else:
            y_pred = model(x, training=True)
        task_terms, extra, observed, present = weighted_task_losses(model, y, y_pred, sample_weight, model.losses)
        weighted = tf.stack(task_terms)
        total = ops.sum(weighted) + extra
    _loss_tracker(model).update_state(
        unscale_for_replicas(total), sample_weight=tf.shape(tf.nest.flatten(x)[0])[0]
    )
    num_tasks = len(model.tasks)
    if plan.trunk is not None:
        # Each task's gradient at the representation, through its own head only: T head
        # backward passes, where a jacobian would push every task through every head (T^2).
        # Zero for a task whose head stops the gradient (a confusion adversary's).
        at_representation = tf.stack([tape.gradient(term, representation, unconnected_gradients="zero")
                                      for term in task_terms])
    if plan.features:
        per_task = tf.reshape(at_representation, (num_tasks, -1))
        gram = sum_over_replicas(tf.matmul(per_task, per_task, transpose_b=True))
        coefficients = tf.stop_gradient(weighting.gradient_weights(gram, observed, present))
        with tape:  # the persistent tape records the combined loss too
            combined = ops.sum(coefficients * weighted) + extra
        shared_grads = tape.gradient(combined, shared)
    else:
        if plan.trunk is not None:
            # Then through the trunk, vectorised over the tasks (pfor, as in tape.jacobian).
            per_task = tf.vectorized_map(
                lambda cotangent: _flatten(_zeros_for_none(
                    tape.gradient(representation, shared, output_gradients=cotangent), shared), 1)[0],
                at_representation,
            )
        else:
            jac = tape.jacobian(weighted, shared, experimental_use_pfor=True)
            per_task = _flatten(_zeros_for_none(jac, shared, num_tasks), num_tasks)
        per_task = sum_over_replicas(per_task)
        gram = tf.matmul(per_task, per_task, transpose_b=True)
        coefficients = tf.stop_gradient(weighting.gradient_weights(gram, observed, present))
        direction = share_for_replicas(tf.linalg.matvec(per_task, coefficients, transpose_a=True))
        extra_grads = _zeros_for_none(tape.gradient(extra, shared), shared)
        shared_grads = [g + e for g, e in zip(_unflatten(direction, shared), extra_grads)]
    other_grads = _zeros_for_none(tape.gradient(total, others), others)
    grads = [None] * len(variables)
    for i, g in zip(plan.shared, _zeros_for_none(shared_grads, shared)):
        grads[i] = g
    for i, g in zip(plan.others, other_grads):
        grads[i] = g
    model.optimizer.apply_gradients(zip(grads, variables))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def jax_train_step(model, state, data):
    """``train_step`` on JAX for a weighting with ``uses_gradients``."""
    import jax

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    plan: Plan = model.gradient_plan
    num_tasks = len(model.tasks)
    trainable_index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    non_trainable_index = {id(v): i for i, v in enumerate(model.non_trainable_variables)}

    def state_mapping(trainable_values, non_trainable_values, metrics_values):
        return (list(zip(model.trainable_variables, trainable_values))
                + list(zip(model.non_trainable_variables, non_trainable_values))
                + list(zip(model.metrics_variables, metrics_values)))

    def current(scope, variables, values):
        out = []
        for variable, value in zip(variables, values):
            new = scope.get_current_value(variable)
            out.append(value if new is None else new)
        return out

    def call(part, trainable_values, non_trainable_values, inputs):
        """``part`` (the model, its trunk or its heads) run on the model's variable values."""
        out, new_values, losses = part.stateless_call(
            [trainable_values[trainable_index[id(v)]] for v in part.trainable_variables],
            [non_trainable_values[non_trainable_index[id(v)]] for v in part.non_trainable_variables],
            inputs, training=True, return_losses=True,
        )
        updated = list(non_trainable_values)
        for v, value in zip(part.non_trainable_variables, new_values):
            updated[non_trainable_index[id(v)]] = value
        return out, updated, list(losses)

    def rows_of(trainable_values, representation=None):
        """Per-task weighted losses and the other loss terms, as T + 1 rows."""
        values, regularization = non_trainable, []
        if plan.trunk is not None:
            if representation is None:
                representation, values, regularization = call(plan.trunk, trainable_values, values, x)
            y_pred, values, more = call(plan.heads, trainable_values, values, representation)
            regularization += more
        else:
            y_pred, values, regularization = call(model, trainable_values, values, x)
        with keras.StatelessScope(state_mapping=state_mapping(trainable_values, values, metrics_variables)) as scope:
            terms, extra, observed, present = weighted_task_losses(model, y, y_pred, sample_weight, regularization)
        aux = (y_pred, current(scope, model.non_trainable_variables, values),
               current(scope, model.metrics_variables, metrics_variables), observed, present, representation)
        return ops.stack([*terms, extra]), aux

    rows, pullback, aux = jax.vjp(rows_of, trainable, has_aux=True)
    y_pred, non_trainable, metrics_variables, observed, present, representation = aux
    eye = ops.eye(num_tasks + 1, dtype=rows.dtype)
    if plan.features:
        # Gradients of the task losses with respect to the representation: the heads only.
        _, pull_representation, _ = jax.vjp(lambda r: rows_of(trainable, r), representation, has_aux=True)
        (per_task,) = jax.vmap(pull_representation)(eye[:num_tasks])
        per_task = ops.reshape(per_task, (num_tasks, -1))
    else:
        # Row t: the gradient of task t's weighted loss; the last row: of the other terms.
        (jac,) = jax.vmap(pullback)(eye)
        per_task = _flatten([jac[i][:num_tasks] for i in plan.shared], num_tasks)
    mapping = state_mapping(trainable, non_trainable, metrics_variables)
    with keras.StatelessScope(state_mapping=mapping) as scope:
        coefficients = jax.lax.stop_gradient(
            model.weighting.gradient_weights(per_task @ per_task.T, observed, present))
    non_trainable = current(scope, model.non_trainable_variables, non_trainable)
    if plan.features:
        # Shared variables follow the combined losses, the others their own task's loss.
        cotangents = ops.stack([ops.concatenate([coefficients, ops.ones((1,))]), ops.ones((num_tasks + 1,))])
        (both,) = jax.vmap(pullback)(cotangents)
        shared = set(plan.shared)
        grads = [g[0] if i in shared else g[1] for i, g in enumerate(both)]
    else:
        shared = [model.trainable_variables[i] for i in plan.shared]
        direction = _unflatten(coefficients @ per_task, shared)
        grads = [ops.sum(j, axis=0) for j in jac]
        for i, d in zip(plan.shared, direction):
            grads[i] = d + jac[i][num_tasks]
    trainable, optimizer_variables = model.optimizer.stateless_apply(optimizer_variables, grads, trainable)
    with keras.StatelessScope(state_mapping=list(zip(model.metrics_variables, metrics_variables))) as scope:
        _loss_tracker(model).update_state(ops.sum(rows), sample_weight=ops.shape(keras.tree.flatten(x)[0])[0])
        logs = model.compute_metrics(x, y, y_pred, sample_weight)
    metrics_variables = current(scope, model.metrics_variables, metrics_variables)
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)
