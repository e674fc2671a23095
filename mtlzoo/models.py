"""``MultiTaskModel``: a functional Keras model that knows its tasks."""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from mtlzoo import weighting as weighting_lib
from mtlzoo.tasks import Task, as_tasks
from mtlzoo.training import compat, weighted_step


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

    # `*args, **kwargs` (with these names) keep Keras treating the subclass as functional.
    def __init__(self, *args, tasks: Sequence[Task | dict] | None = None, shared=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._mtl_tasks: tuple[Task, ...] = ()
        self._mtl_plan = None
        self._mtl_losses: dict[str, tuple[keras.losses.Loss, float | None]] = {}
        self.shared_layer: str | None = self._shared_layer_name(shared)
        if tasks is not None:
            self._set_tasks(tasks)

    def _shared_layer_name(self, shared) -> str | None:
        """The name of the layer whose output is ``shared`` (a tensor of this graph or a name)."""
        if shared is None or isinstance(shared, str):
            if shared is not None:
                self.get_layer(shared)  # a clear ValueError for a name this model lacks
            return shared
        for layer in self.layers:
            try:
                if layer.output is shared:
                    return layer.name
            except (AttributeError, ValueError):  # layers called more than once have no single output
                continue
        raise ValueError("shared= must be a layer name or the output tensor of one layer of this model.")

    @property
    def shared_representation(self):
        """The tensor every task head reads (declared by the architecture), or None."""
        return None if self.shared_layer is None else self.get_layer(self.shared_layer).output

    @property
    def trunk_layers(self) -> list:
        """The layers between the inputs and the shared representation, in order (empty: none declared)."""
        if self.shared_layer is None:
            return []
        return [l for l in keras.Model(self.inputs, self.shared_representation).layers
                if not isinstance(l, keras.layers.InputLayer)]

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

    def compile(self, optimizer="adam", loss="auto", loss_weights=None, metrics="auto", weighting=None, **kwargs):
        """``keras.Model.compile`` with each task's default loss, weight and metrics.

        ``"auto"`` (as in keras-hub; ``None`` means the same) gives every task its defaults.
        Anything passed explicitly wins; per-task dicts may name a subset of tasks, the rest
        keep their defaults. The default metrics are compiled as ``weighted_metrics``.
        ``weighting`` combines the task losses: a name from ``mtlzoo.weighting.list_weightings()``,
        ``{"name": ..., **options}``, a list (a chain) or a ``Weighting``; the default is the
        plain sum (unitary scalarization).
        """
        loss = None if isinstance(loss, str) and loss == "auto" else loss
        metrics = None if isinstance(metrics, str) and metrics == "auto" else metrics
        loss = self._per_task(loss, lambda t: t.make_loss(), "loss")
        loss_weights = self._per_task(loss_weights, lambda t: float(t.weight), "loss_weights")
        if metrics is None and kwargs.get("weighted_metrics") is None:
            # Weighted, so that examples with weight 0 for a task (unlabelled for it) do not
            # count in its metrics; without sample weights the two kinds agree.
            kwargs["weighted_metrics"] = self._per_task(None, lambda t: t.make_metrics(), "metrics")
        elif isinstance(metrics, dict):
            metrics = self._per_task(metrics, lambda t: t.make_metrics(), "metrics")
        method = weighting_lib.get(weighting)
        if isinstance(loss, dict):
            # Resolved once, so that Keras's compiled loss and the weighted steps (which need
            # each task's loss on its own) call the very same loss objects.
            loss = {name: _as_loss(value) for name, value in loss.items()}
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics, **kwargs)
        if method.uses_gradients and isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                f"Weighting {method.method_name!r} combines gradients, which loss scaling would "
                "distort; use precision 'mixed_bfloat16' or 'float32' with it."
            )
        self._mtl_losses = {
            t.name: (loss[t.name] if isinstance(loss, dict) else _as_loss(loss),
                     loss_weights.get(t.name) if isinstance(loss_weights, dict) else loss_weights)
            for t in self._mtl_tasks
        }
        previous = getattr(self, "weighting", None)
        if previous is not None and previous is not method:
            compat.untrack(self, previous)
        # An attribute, so the method's variables train, distribute and save with the model.
        self.weighting = method.bind([t.name for t in self._mtl_tasks])
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if method.trainable_variables and not optimizer.built:
            # Weight decay is for the model; it would bias uncertainty's log-variances.
            optimizer.exclude_from_weight_decay(var_list=method.trainable_variables)
        # Worked out now, so that a model the method cannot work with fails at compile().
        self._mtl_plan = gradient_plan(self, method.gradients == "features") if method.uses_gradients else None

    @property
    def gradient_plan(self) -> "weighted_step.Plan | None":
        """How the compiled gradient weighting reaches the shared variables (None for loss methods)."""
        return self._mtl_plan

    def task_loss_functions(self) -> dict[str, tuple[keras.losses.Loss, float | None]]:
        """``{task: (compiled loss, static weight)}`` in task order, as ``compile`` resolved them."""
        if not self._mtl_losses:
            raise RuntimeError("Compile the model first.")
        return dict(self._mtl_losses)

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
        terms, extra, _, _ = weighted_step.weighted_task_losses(self, y, y_pred, sample_weight, self.losses)
        return ops.sum(ops.stack(terms)) + extra

    def train_step(self, *args):
        if self._unitary() or not self.weighting.uses_gradients:
            return super().train_step(*args)
        return weighted_step.train_step(self, *args)

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
        config["shared_layer"] = self.shared_layer
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        tasks = config.pop("tasks", None)
        if "shared_layer" in config:
            shared = config.pop("shared_layer")
        else:  # written before models recorded it: the naming every zoo trunk used
            shared = _legacy_shared_layer(config)
        graph = keras.Model.from_config(config, custom_objects=custom_objects)
        return cls(inputs=graph.input, outputs=graph.output, tasks=tasks, shared=shared, name=graph.name)


def _as_loss(identifier) -> keras.losses.Loss:
    """A ``keras.losses.Loss`` for a compile(loss=...) entry (a function gets Keras's wrapper)."""
    loss = keras.losses.get(identifier)
    if isinstance(loss, keras.losses.Loss):
        return loss
    name = identifier if isinstance(identifier, str) else getattr(loss, "__name__", None)
    return keras.losses.LossFunctionWrapper(loss, name=name)


def _legacy_shared_layer(config) -> str | None:
    """The shared representation of a file written without ``shared_layer``: the last layer of a
    hard-sharing trunk (``shared_dense_*`` or ``shared_dropout_*``), if any."""
    names = [layer["config"]["name"] for layer in config.get("layers", [])]
    trunk = [n for n in names if n.startswith(("shared_dense_", "shared_dropout_", "shared_flatten"))]
    return trunk[-1] if trunk else None


# ---------------------------------------------------------------------------------------------
# Which variables the tasks share, and where a gradient method differentiates.


def shared_variables(model: keras.Model) -> list[bool]:
    """For each of ``model.trainable_variables``: does it feed more than one output?"""
    uses: dict[int, int] = {}
    for output in keras.tree.flatten(model.output):
        for v in keras.Model(model.inputs, output).trainable_variables:
            uses[id(v)] = uses.get(id(v), 0) + 1
    return [uses.get(id(v), 0) > 1 for v in model.trainable_variables]


def gradient_plan(model: MultiTaskModel, features: bool) -> weighted_step.Plan:
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
