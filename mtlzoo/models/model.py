"""``MultiTaskModel``: a functional Keras model that knows its tasks and its shared trunk, and
``create_model``, which builds one from a registered architecture."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

import keras
from keras import ops

from mtlzoo import auxiliary
from mtlzoo import presets as preset_store
from mtlzoo import weighting as weighting_lib
from mtlzoo.architectures.registry import Heads, check_params, get_architecture
from mtlzoo.models.inputs import make_inputs
from mtlzoo.models.sharing import gradient_plan
from mtlzoo.tasks import LOSS_NORMALIZATIONS, Task, as_tasks, main_tasks
from mtlzoo.training import compat, weighted_step


class _ShippedPresets:
    """``MultiTaskModel.presets``: ``{name: model card}`` of the shipped presets, read when asked."""

    def __get__(self, instance, owner) -> dict[str, dict]:
        return preset_store.list_pretrained()


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
        # The registry entry and parameters that built this graph (create_model), and the graph
        # as built: while it is unchanged, the .keras config stores the record, not the graph.
        self._mtl_architecture: str | None = None
        self._mtl_built_graph: str | None = None
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
    def architecture(self) -> dict | None:
        """``{"name", "params", "inputs", "dtype_policy"}`` of the registered architecture that
        built this model (``create_model``), or None for a model built otherwise."""
        return None if self._mtl_architecture is None else json.loads(self._mtl_architecture)

    def _record_architecture(self, name: str, inputs, params: Mapping[str, Any]) -> None:
        """Keep what rebuilds this model through the registry, unless a rebuild could differ from
        it: parameters that are not plain data, or layers Keras numbered (``dense_3``), which
        another process would number differently."""
        params = {k: v for k, v in params.items() if k != "init_from"}  # the weights come from the file
        record = {"name": name, "params": params, "inputs": inputs, "dtype_policy": keras.config.dtype_policy().name}
        try:
            text = json.dumps(record, allow_nan=False)
        except (TypeError, ValueError):
            return
        for layer in self.layers:
            base = _snake_case(type(layer).__name__)
            if re.fullmatch(rf"{re.escape(base)}_\d+", layer.name):
                return
        self._mtl_architecture = text
        self._mtl_built_graph = _graph_key(super().get_config())

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
            if task.output_size is not None and width != task.output_size:
                raise ValueError(
                    f"Output {task.name!r} has width {width}, but a {task.kind} task with these "
                    f"settings needs {task.output_size}."
                )
        self._mtl_tasks = tasks

    @classmethod
    def from_preset(cls, preset, *, compile: bool = False, **kwargs) -> "MultiTaskModel":
        """The model a preset holds (keras-hub's spelling of ``mtlzoo.load``): a shipped name
        (``MultiTaskModel.presets``), a directory, a gfile path or a ``URL#sha256=...``."""
        return preset_store.load(preset, compile=compile, **kwargs)

    def save_to_preset(self, preset_dir) -> None:
        """Write this model as a preset directory that ``from_preset`` loads (keras-hub's spelling
        of ``mtlzoo.presets.save_model_preset``)."""
        preset_store.save_model_preset(self, preset_dir)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The model's tasks, in output order."""
        return self._mtl_tasks

    @property
    def main_tasks(self) -> tuple[Task, ...]:
        """The tasks with role ``main`` (export, early stopping and model selection use these)."""
        return tuple(main_tasks(self._mtl_tasks))

    def get_task(self, name: str) -> Task:
        for task in self._mtl_tasks:
            if task.name == name:
                return task
        raise KeyError(f"No task {name!r}; this model has {[t.name for t in self._mtl_tasks]}.")

    def compile(self, optimizer="adam", loss="auto", loss_weights=None, metrics="auto", weighting=None,
                loss_normalization="batch", **kwargs):
        """``keras.Model.compile`` with each task's default loss, weight and metrics.

        ``"auto"`` (as in keras-hub; ``None`` means the same) gives every task its defaults.
        Anything passed explicitly wins; per-task dicts may name a subset of tasks, the rest
        keep their defaults. The default metrics are compiled as ``weighted_metrics``.
        ``weighting`` combines the task losses: a name from ``mtlzoo.weighting.list_weightings()``,
        ``{"name": ..., **options}``, a list (a chain) or a ``Weighting``; the default is the
        plain sum (unitary scalarization).
        ``loss_normalization`` says what a task's loss divides its weighted sum by: ``"batch"``
        (default, Keras's own: the batch size, so a task labelled on few examples of a batch
        weighs little) or ``"labelled"`` (the sum of its sample weights in the batch: the mean
        over its labelled examples, so a task keeps its weight however scarce its labels; 0 in a
        batch without any; under several replicas, the mean of the replicas' means).
        """
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(f"loss_normalization must be one of {list(LOSS_NORMALIZATIONS)}, got {loss_normalization!r}.")
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
            if loss_normalization == "labelled":
                for value in loss.values():
                    if getattr(value, "reduction", None) == "sum_over_batch_size":
                        value.reduction = "mean_with_sample_weight"
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
        self.weighting = method.bind([t.name for t in self._mtl_tasks], roles=[t.role for t in self._mtl_tasks])
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
        callbacks = list(callbacks or [])
        if not self._unitary():
            method = self.weighting
            end_epoch = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: method.end_epoch())
            # First, so that checkpointing callbacks save the method's state after its epoch update.
            callbacks.insert(0, end_epoch)
        if auxiliary.adversary_layers(self) and not any(isinstance(c, auxiliary.AdversarySchedule) for c in callbacks):
            callbacks.insert(0, auxiliary.AdversarySchedule())
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
        mine = {"tasks": [t.get_config() for t in self._mtl_tasks], "shared_layer": self.shared_layer}
        if self._mtl_architecture is not None and _graph_key(config) == self._mtl_built_graph:
            # Rebuilt through the registry when loaded: a few hundred bytes instead of the graph.
            return {"name": config["name"], "trainable": config["trainable"], "architecture": self.architecture, **mine}
        return {**config, **mine}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        tasks = config.pop("tasks", None)
        if "architecture" in config and "layers" not in config:
            return _rebuild(config["architecture"], tasks, config["name"])
        if "shared_layer" in config:
            shared = config.pop("shared_layer")
        else:  # written before models recorded it: the naming every zoo trunk used
            shared = _legacy_shared_layer(config)
        graph = keras.Model.from_config(config, custom_objects=custom_objects)
        return cls(inputs=graph.input, outputs=graph.output, tasks=tasks, shared=shared, name=graph.name)


@keras.saving.register_keras_serializable(package="mtlzoo")
class FunctionLoss(keras.losses.Loss):
    """A loss function ``fn(y_true, y_pred) -> per-example losses`` (or a Keras name of one,
    such as ``"mse"``) as a ``keras.losses.Loss``, reduced over the batch like Keras's own."""

    def __init__(self, fn, name: str | None = None, reduction="sum_over_batch_size", dtype=None):
        fn = keras.losses.get(fn) if isinstance(fn, (str, dict)) else fn
        if not callable(fn):
            raise ValueError(f"FunctionLoss needs a loss function or its Keras name, got {fn!r}.")
        super().__init__(name=name or getattr(fn, "__name__", "loss"), reduction=reduction, dtype=dtype)
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)

    def get_config(self) -> dict:
        return {**super().get_config(), "fn": keras.saving.serialize_keras_object(self.fn)}


def _as_loss(identifier) -> keras.losses.Loss:
    """A ``keras.losses.Loss`` for a compile(loss=...) entry (a function or name of one included)."""
    loss = keras.losses.get(identifier)
    if isinstance(loss, keras.losses.Loss):
        return loss
    return FunctionLoss(loss, name=identifier if isinstance(identifier, str) else None)


def _legacy_shared_layer(config) -> str | None:
    """The shared representation of a file written without ``shared_layer``: the last layer of a
    hard-sharing trunk (``shared_dense_*`` or ``shared_dropout_*``), if any."""
    names = [layer["config"]["name"] for layer in config.get("layers", [])]
    trunk = [n for n in names if n.startswith(("shared_dense_", "shared_dropout_", "shared_flatten"))]
    return trunk[-1] if trunk else None


def _graph_key(config: dict) -> str:
    """The graph's config as comparable text: without the ids Keras adds while saving, and with a
    repr (which carries an address, so never matches) for anything that is not plain data."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k != "shared_object_id"}
        return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

    return json.dumps(plain(config), sort_keys=True, default=repr)


def _snake_case(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _rebuild(record: Mapping[str, Any], tasks, name: str) -> MultiTaskModel:
    """The model a compact .keras config describes, built again through the registry."""
    try:
        get_architecture(record["name"])
    except ValueError as e:
        raise ValueError(f"Model {name!r} was saved from architecture {record['name']!r}, which is not "
                         f"registered here; import the module that registers it first. ({e})") from None
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(record["dtype_policy"])
    try:
        return create_model(record["name"], tasks, record["inputs"], model_name=name, **record["params"])
    finally:
        keras.config.set_dtype_policy(previous)


def create_model(
    name: str,
    tasks: Sequence[Task | Mapping[str, Any]],
    inputs: Mapping[str, Sequence[int]],
    *,
    model_name: str | None = None,
    **params,
) -> MultiTaskModel:
    """Build the registered architecture ``name`` for ``tasks`` on the given named inputs.

    ``inputs`` maps input names to shapes (see ``make_inputs`` for raw uint8 inputs);
    ``model_name`` names the model (default: the architecture's name). The model remembers
    the architecture and parameters, and its .keras file stores them instead of the graph.

    Example::

        model = mtlzoo.create_model(
            "hard_sharing",
            tasks=[mtlzoo.Task("digit", "classification", num_classes=10),
                   mtlzoo.Task("is_even", "binary")],
            inputs={"image": (28, 28, 1)},
            shared_units=[64])
    """
    entry = get_architecture(name)
    check_params(name, params)
    tasks = as_tasks(tasks)
    # Adversarial and reconstruction heads are attached to the shared representation here, so
    # the architecture builds only the others.
    built_tasks = tuple(t for t in tasks if not auxiliary.attached_here(t))
    entry.check_tasks(built_tasks)
    input_tensors, features = make_inputs(inputs)
    built = entry.builder(inputs=features, tasks=built_tasks, **params)
    outputs, shared = built if isinstance(built, Heads) else (built, None)
    if not isinstance(outputs, Mapping) or sorted(outputs) != sorted(t.name for t in built_tasks):
        raise TypeError(
            f"Architecture {name!r} must return a dict keyed by the task names "
            f"{[t.name for t in built_tasks]}; got {type(outputs).__name__} "
            f"{sorted(outputs) if isinstance(outputs, Mapping) else ''}."
        )
    outputs = {**outputs, **auxiliary.attach_heads(tasks, shared, features, name)}
    ordered = {t.name: outputs[t.name] for t in tasks}
    model = MultiTaskModel(inputs=input_tensors, outputs=ordered, tasks=tasks, shared=shared, name=model_name or name)
    model._record_architecture(name, inputs, params)
    return model
