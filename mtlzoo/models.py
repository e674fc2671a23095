"""``MultiTaskModel``: a functional Keras model that knows its tasks."""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from mtlzoo import weighting as weighting_lib
from mtlzoo.tasks import Task, as_tasks


class _ShippedPresets:
    """``MultiTaskModel.presets``: ``{name: model card}`` of the shipped presets, read when asked."""

    def __get__(self, instance, owner) -> dict[str, dict]:
        from mtlzoo.presets import list_pretrained

        return list_pretrained()


@keras.saving.register_keras_serializable(package="mtlzoo")
class MultiTaskModel(keras.Model):
    """A functional model with one named output per task.

    It is an ordinary functional ``keras.Model`` (build it with ``inputs=`` and a dict of
    ``outputs=`` keyed by task name) that also carries its ``Task`` list, so that
    ``compile(optimizer=...)`` fills in each task's default loss, metrics and weight and the
    tasks survive a ``.keras`` round trip.  The total loss is the weighted sum of the task
    losses; with the default weights of 1 that is unitary scalarization.
    ``compile(weighting=...)`` picks another way to combine the tasks (``mtlzoo.weighting``).
    """

    presets = _ShippedPresets()

    # `*args, **kwargs` (with these names) keep Keras treating the subclass as functional
    # when it serialises and revives it.
    def __init__(self, *args, tasks: Sequence[Task | dict] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._mtl_tasks: tuple[Task, ...] = ()
        self._mtl_plan = None
        if tasks is not None:
            self._set_tasks(tasks)

    def _set_tasks(self, tasks) -> None:
        tasks = as_tasks(tasks)
        if not isinstance(self.output, dict):
            raise TypeError("A MultiTaskModel needs a dict of outputs keyed by task name.")
        output_names = sorted(self.output)
        if sorted(t.name for t in tasks) != output_names:
            raise ValueError(
                f"The model's outputs {output_names} must match its tasks "
                f"{sorted(t.name for t in tasks)} one to one."
            )
        for task in tasks:
            width = self.output[task.name].shape[-1]
            if width != task.output_size:
                raise ValueError(
                    f"Output {task.name!r} has width {width}, but a {task.kind} task with these "
                    f"settings needs {task.output_size}."
                )
        self._mtl_tasks = tasks

    @classmethod
    def from_preset(cls, preset, *, compile: bool = False, **kwargs) -> "MultiTaskModel":
        """The model a preset holds (keras-hub's spelling of ``mtlzoo.load``): a shipped name
        (``MultiTaskModel.presets``), a directory, a gfile path or a ``URL#sha256=...``."""
        from mtlzoo import presets as preset_files

        return preset_files.load(preset, compile=compile, **kwargs)

    def save_to_preset(self, preset_dir) -> None:
        """Write this model as a preset directory that ``from_preset`` loads (keras-hub's spelling
        of ``mtlzoo.presets.save_model_preset``)."""
        from mtlzoo import presets as preset_files

        preset_files.save_model_preset(self, preset_dir)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The model's tasks, in output order."""
        return self._mtl_tasks

    def get_task(self, name: str) -> Task:
        for task in self._mtl_tasks:
            if task.name == name:
                return task
        raise KeyError(f"No task {name!r}; this model has {[t.name for t in self._mtl_tasks]}.")

    def compile(self, optimizer="adam", loss=None, loss_weights=None, metrics=None, weighting=None, **kwargs):
        """``keras.Model.compile`` with each task's default loss, weight and metrics.

        Anything passed explicitly wins; per-task dicts may name a subset of tasks, the rest
        keep their defaults. The default metrics are compiled as ``weighted_metrics``.
        ``weighting`` combines the task losses: a name from ``mtlzoo.weighting.list_weightings()``,
        ``{"name": ..., **options}``, a list (a chain) or a ``Weighting``; the default is the
        plain sum (unitary scalarization).
        """
        loss = self._per_task(loss, lambda t: t.make_loss(), "loss")
        loss_weights = self._per_task(loss_weights, lambda t: float(t.weight), "loss_weights")
        if metrics is None and kwargs.get("weighted_metrics") is None:
            # Weighted, so that examples with weight 0 for a task (unlabelled for it) do not
            # count in its metrics; without sample weights the two kinds agree.
            kwargs["weighted_metrics"] = self._per_task(None, lambda t: t.make_metrics(), "metrics")
        elif isinstance(metrics, dict):
            metrics = self._per_task(metrics, lambda t: t.make_metrics(), "metrics")
        method = weighting_lib.get(weighting)
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics, **kwargs)
        if method.uses_gradients and isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                f"Weighting {method.method_name!r} combines gradients, which loss scaling would "
                "distort; use precision 'mixed_bfloat16' or 'float32' with it."
            )
        previous = getattr(self, "weighting", None)
        if previous is not None and previous is not method:
            self._tracker.untrack(previous)
        # An attribute, so the method's variables train, distribute and save with the model.
        self.weighting = method.bind([t.name for t in self._mtl_tasks])
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if method.trainable_variables and not optimizer.built:
            # Weight decay is for the model; it would bias uncertainty's log-variances.
            optimizer.exclude_from_weight_decay(var_list=method.trainable_variables)
        # Worked out now, so that a model the method cannot work with fails at compile().
        self._mtl_plan = weighting_plan(self, method.gradients == "features") if method.uses_gradients else None

    def get_compile_config(self):
        config = super().get_compile_config()
        weighting = getattr(self, "weighting", None)
        if config is not None and weighting is not None and not self._unitary():
            config["weighting"] = keras.saving.serialize_keras_object(weighting)
        return config

    def compile_from_config(self, config):
        # Keras skips this for subclasses that override compile(); ours only adds defaults,
        # so reviving the saved compile arguments (and the optimizer's variables) is safe.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _unitary(self) -> bool:
        weighting = getattr(self, "weighting", None)
        return weighting is None or type(weighting) is weighting_lib.loss_methods.Unitary

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Validation and evaluation always report the plain sum, comparable across methods.
        if not training or self._unitary():
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        terms, extra, _, _ = self._weighted_task_losses(y, y_pred, sample_weight)
        return ops.sum(ops.stack(terms)) + extra

    def _weighted_task_losses(self, y, y_pred, sample_weight):
        """``(weighted loss of each task, other loss terms, observed per-task loss values,
        the tasks present in the global batch)``.

        The weighted losses are a list of scalars, not one stacked tensor, so that the gradient
        of one task's term reaches back through that task's head only.
        """
        from mtlzoo.training import weighted_step

        losses = weighted_step.task_losses(self, y, y_pred, sample_weight)
        # One all-reduce for the loss values and the label counts of the global batch.
        observed, counts = ops.unstack(weighted_step.sum_over_replicas(ops.stack(
            [ops.stop_gradient(ops.stack(losses)), weighted_step.labelled_counts(self, sample_weight)])))
        present = ops.cast(counts > 0, "float32")
        weights, penalty = self.weighting.loss_weights(observed, present)
        extra = ops.zeros((), "float32")
        for loss in self.losses:
            extra = extra + ops.cast(self._aggregate_additional_loss(loss), "float32")
        if penalty is not None:
            extra = extra + weighted_step.share_for_replicas(penalty)
        return [w * loss for w, loss in zip(ops.unstack(weights), losses)], extra, observed, present

    def train_step(self, *args):
        if self._unitary() or not self.weighting.uses_gradients:
            return super().train_step(*args)
        from mtlzoo.training import weighted_step

        backend = keras.backend.backend()
        if backend == "tensorflow":
            return weighted_step.tf_train_step(self, *args)
        if backend == "jax":
            return weighted_step.jax_train_step(self, *args)
        raise NotImplementedError(f"Gradient weighting methods run on TensorFlow and JAX, not {backend!r}.")

    def fit(self, *args, callbacks=None, **kwargs):
        if not self._unitary():
            method = self.weighting
            end_epoch = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: method.end_epoch())
            # First, so that checkpointing callbacks save the method's state after its epoch update.
            callbacks = [end_epoch, *(callbacks or [])]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def _per_task(self, given, default, what: str):
        if given is not None and not isinstance(given, dict):
            return given
        given = dict(given or {})
        unknown = sorted(set(given) - {t.name for t in self._mtl_tasks})
        if unknown:
            raise ValueError(
                f"compile({what}=...) names unknown task(s) {unknown}; the tasks are "
                f"{[t.name for t in self._mtl_tasks]}."
            )
        return {t.name: given.get(t.name, default(t)) for t in self._mtl_tasks}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["tasks"] = [t.get_config() for t in self._mtl_tasks]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        tasks = config.pop("tasks", None)
        model = super().from_config(config, custom_objects=custom_objects)
        if tasks is not None:
            model._set_tasks(tasks)
        return model


# ---------------------------------------------------------------------------------------------
# Which variables and tensors the tasks share, read from the functional graph.


def _upstream(tensor, stop: int | None = None) -> dict[int, Any]:
    """The KerasTensors ``tensor`` is computed from (itself included), nearest first, not
    walking past the tensor whose id is ``stop``."""
    seen: dict[int, Any] = {}
    queue = [tensor]
    while queue:
        t = queue.pop(0)
        if id(t) in seen:
            continue
        seen[id(t)] = t
        if id(t) == stop:
            continue
        operation, node_index, _ = t._keras_history
        queue.extend(operation._inbound_nodes[node_index].input_tensors)
    return seen


def shared_variables(model: keras.Model) -> list[bool]:
    """For each of ``model.trainable_variables``: does it feed more than one output?"""
    uses: dict[int, int] = {}
    for output in model.outputs:
        found = set()
        for t in _upstream(output).values():
            for v in getattr(t._keras_history[0], "trainable_variables", []):
                found.add(id(v))
        for i in found:
            uses[i] = uses.get(i, 0) + 1
    return [uses.get(id(v), 0) > 1 for v in model.trainable_variables]


def shared_representation(model: keras.Model):
    """The tensor nearest the outputs through which every output depends on the inputs."""
    inputs = {id(t) for t in model.inputs}
    upstream = [_upstream(o) for o in model.outputs]
    for key, tensor in upstream[0].items():
        if key in inputs or not all(key in u for u in upstream[1:]):
            continue
        if all(not (inputs & set(_upstream(o, stop=key))) for o in model.outputs):
            return tensor
    raise ValueError(
        "gradients='features' needs one shared representation that every task output is "
        "computed from (as in hard sharing); this model has none. Use gradients='parameters'."
    )


def weighting_plan(model: keras.Model, features: bool):
    """The variables a gradient method works with, and the model split at its shared
    representation where it has one: needed for ``features``, and used for the parameter
    gradients when every shared variable sits before the representation (hard sharing)."""
    from mtlzoo.training.weighted_step import Plan

    flags = shared_variables(model)
    plan = Plan(shared=[i for i, f in enumerate(flags) if f], others=[i for i, f in enumerate(flags) if not f],
                features=features)
    if not plan.shared:
        raise ValueError("No trainable variable is shared by two tasks, so there is nothing to combine.")
    try:
        representation = shared_representation(model)
    except ValueError:
        if features:
            raise
        return plan
    trunk = keras.Model(model.inputs, representation, name="trunk")
    in_trunk = {id(v) for v in trunk.trainable_variables}
    if features or all(id(model.trainable_variables[i]) in in_trunk for i in plan.shared):
        plan.trunk = trunk
        plan.heads = keras.Model(representation, model.output, name="heads")
    return plan
