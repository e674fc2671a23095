"""YAML recipes: what to build, on which data and tasks, and how to train, evaluate and export.

``load_recipe(path)`` validates the whole file before anything is built: an unknown key,
a wrong type, an unregistered architecture or dataset, a parameter the builder does not
take, or a task the dataset does not provide is one ``ConfigError`` naming the file, the
key and what was expected.

The ``training`` section (see ``TrainingConfig``) also picks how the tasks are combined
(``weighting``) and the regularisation that matters most for multi-task baselines (Kurin et
al., NeurIPS 2022: a well-regularised unitary scalarization is hard to beat): ``weight_decay``,
``early_stopping`` and, in the architecture, ``architecture.params.dropout``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import keras
import yaml

from mtlzoo.architectures import registry
from mtlzoo import weighting as weighting_lib
from mtlzoo.data import base as data_base
from mtlzoo.errors import ConfigError
from mtlzoo.tasks import LOSS_NORMALIZATIONS, Task
from mtlzoo.training import callbacks as mtl_callbacks
from mtlzoo.training.strategies import STRATEGIES
from mtlzoo.validation import is_int, is_number

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")




EARLY_STOPPING_DEFAULTS: Mapping[str, Any] = {
    "monitor": mtl_callbacks.DEFAULT_MONITOR,
    "patience": 5,
    "min_delta": 0.0,
    "restore_best_weights": True,
    "mode": "auto",
    "start_from_epoch": 0,
}


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The ``training`` section of a recipe.

    Besides the loop itself (``epochs``, ``batch_size``, ``optimizer``, ``learning_rate``,
    ``seed``, ``strategy``, ``shuffle``, ``validation_split``, ``steps_per_epoch``,
    ``precision``, ``alignment_search``):

    - ``weighting``: how the task losses (or gradients) are combined; a name from
      ``mtlzoo.weighting.list_weightings()`` (``unitary``, the plain sum, is the default),
      ``{name: ..., **options}`` (e.g. ``{name: static, weights: {task_00: 2.0}}``) or a list
      of them (a chain: loss weightings, then at most one gradient method). Kept as written
      in the recipe; ``model.compile(weighting=...)`` builds it.
    - ``weight_decay``: a number >= 0 (default 0: no decay) passed as the Keras optimizer's
      ``weight_decay``. In Keras 3 every optimizer applies it decoupled from the gradient
      (AdamW style: each step ``w -= learning_rate * weight_decay * w``, on every trainable
      variable, biases and a weighting method's own trainable variables included), so
      ``adam`` with a weight decay behaves like ``adamw``. 0 really means none, also for
      ``adamw`` (whose Keras default would be 0.004).
    - ``early_stopping``: null (default: train every epoch) or a mapping of
      ``monitor`` (default ``mean_val_loss``: the mean over tasks of the per-task validation
      losses, unweighted and without regularisation terms; ``mean_val_<metric>`` for any
      metric every task reports, such as ``mean_val_mae``, or any Keras log key such as
      ``val_loss`` or ``val_task_00_rmse``), ``patience`` (epochs without improvement before
      stopping, an integer >= 1, default 5), ``min_delta`` (the least change that counts as an
      improvement, default 0), ``restore_best_weights`` (default true: the saved model is the
      best epoch's) and ``mode`` (``auto``, the default, resolves ``min`` for losses and
      errors and ``max`` for accuracy, AUC and the like; set ``min`` or ``max`` to monitor a
      log key the recipe cannot predict, which is then checked at the end of the first epoch)
      and ``start_from_epoch`` (default 0; epochs before it are neither scored nor counted,
      e.g. a MUiR alignment search's generations, whose best the search restores itself).
      Stored with the defaults filled in.
    - ``loss_normalization``: ``batch`` (default) or ``labelled``: what each task's loss is
      divided by, the batch size or the task's labelled examples in the batch (for tasks with
      scarce labels, e.g. ``data.label_fraction``); see ``MultiTaskModel.compile``.

    Dropout is not a training option: it is the architecture's ``architecture.params.dropout``
    (``hard_sharing``, ``soft_sharing``, ``cross_stitch``, ``mmoe`` and ``ple`` take it).
    """

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    seed: int = 0
    strategy: str = "auto"
    shuffle: bool = True
    validation_split: str = "validation"
    steps_per_epoch: int | None = None
    precision: str = "float32"
    alignment_search: Mapping[str, Any] | None = None
    weighting: Any = "unitary"
    weight_decay: float = 0.0
    early_stopping: Mapping[str, Any] | None = None
    loss_normalization: str = "batch"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``tasks`` are resolved against the dataset."""

    name: str
    architecture: str
    params: Mapping[str, Any]
    dataset: str
    data_options: Mapping[str, Any]
    tasks: tuple[Task, ...]
    training: TrainingConfig
    evaluation_split: str = "test"
    export_name: str = ""
    description: str = ""
    source: str = "<dict>"
    tuning: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    label_fraction: Mapping[str, float] = dataclasses.field(default_factory=dict)
    label_seed: int = 0

    def make_dataset(self) -> data_base.Dataset:
        return data_base.load_dataset(self.dataset, **self.data_options)

    def load_split(self, dataset: data_base.Dataset, split: str) -> data_base.MultiTaskArrays:
        """The recipe's tasks on ``split`` (``Dataset.load_tasks``); the training split keeps
        only ``label_fraction`` of the named tasks' labels and drops examples left unlabelled."""
        data = dataset.load_tasks(split, self.tasks)
        if split == "train" and self.label_fraction:
            data = data.keep_labels(self.label_fraction, self.label_seed).labelled_only()
        return data

    def load_training_splits(self, dataset: data_base.Dataset) -> tuple[data_base.MultiTaskArrays,
                                                                         data_base.MultiTaskArrays]:
        """The training split and ``training.validation_split``, as ``train`` and tuning use them.

        Auxiliary targets the validation split lacks (privileged ones) count there as unlabelled.
        """
        train = self.load_split(dataset, "train")
        return train, self.load_split(dataset, self.training.validation_split).with_absent(train)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that ``recipe_from_dict`` turns back into an equal recipe."""
        return {
            "name": self.name,
            "description": self.description,
            "architecture": {"name": self.architecture, "params": _plain(self.params)},
            "data": {"name": self.dataset, **_plain(self.data_options),
                     **({"label_fraction": dict(self.label_fraction), "label_seed": self.label_seed}
                        if self.label_fraction else {})},
            "tasks": [_task_override(t) for t in self.tasks],
            "training": dataclasses.asdict(self.training),
            "evaluation": {"split": self.evaluation_split},
            "export": {"name": self.export_name},
            **({"tuning": _plain(self.tuning)} if self.tuning else {}),
        }


# ---------------------------------------------------------------------------------------------
# Checks shared by every section


def _describe(v) -> str:
    return f"{v!r} ({type(v).__name__})"


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str):
        raise ConfigError(self.source, key, message)

    def mapping(self, value, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(key, f"expected a mapping, got {_describe(value)}")
        return value

    def keys(self, section: Mapping, key: str, allowed, required=()):
        for k in section:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), list(allowed), n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.fail(_join(key, k), f"unknown key{did_you_mean}; expected one of {sorted(allowed)}")
        for k in required:
            if k not in section:
                self.fail(_join(key, k), "required key is missing")

    def like(self, value, default, key: str):
        """Check ``value`` has the type of ``default`` (a builder's or dataset's default)."""
        ok, expected = True, None
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif is_int(default):
            ok, expected = is_int(value), "an integer"
        elif isinstance(default, float):
            ok, expected = is_number(value), "a finite number"
        elif isinstance(default, str):
            ok, expected = isinstance(value, str), "a string"
        elif isinstance(default, (list, tuple)):
            ok = isinstance(value, (list, tuple))
            expected = "a list"
            if ok and default and is_int(default[0]):
                ok, expected = all(is_int(v) and v > 0 for v in value), "a list of positive integers"
        if not ok:
            self.fail(key, f"expected {expected}, got {_describe(value)}")


def _join(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _task_override(task: Task) -> dict[str, Any]:
    """The recipe entry of ``task``: its name and the fields a recipe set (``Task.get_config``
    leaves out the defaults)."""
    config = task.get_config()
    out: dict[str, Any] = {"name": task.name}
    if task.kind == "reconstruction":
        out.update(kind=task.kind, input=task.input)
    for key in _TASK_OVERRIDES[1:]:
        if key in config and config[key] is not None and not (key == "weight" and config[key] == 1.0):
            out[key] = config[key]
    return out


# ---------------------------------------------------------------------------------------------
# Sections

_TOP_KEYS = ("name", "description", "architecture", "data", "tasks", "training", "evaluation", "export", "tuning")
_TASK_OVERRIDES = ("name", "weight", "loss", "metrics", "role", "head_units", "reversal", "reversal_strength", "adversary")
# A task the dataset does not provide: a reconstruction of one of its inputs.
_NEW_TASK_KEYS = (*_TASK_OVERRIDES, "kind", "input")
_TRAINING_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda v: is_int(v) and v > 0, "a positive integer"),
    "batch_size": (lambda v: is_int(v) and v > 0, "a positive integer"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {list(OPTIMIZERS)}"),
    "learning_rate": (lambda v: is_number(v) and v > 0, "a finite positive number"),
    "seed": (lambda v: is_int(v) and v >= 0, "a non-negative integer"),
    "strategy": (lambda v: v in STRATEGIES, f"one of {list(STRATEGIES)}"),
    "shuffle": (lambda v: isinstance(v, bool), "true or false"),
    "validation_split": (lambda v: isinstance(v, str), "a split name"),
    "steps_per_epoch": (lambda v: v is None or (is_int(v) and v > 0), "a positive integer or null (one pass)"),
    "precision": (lambda v: v in PRECISIONS, f"one of {list(PRECISIONS)}"),
    "alignment_search": (lambda v: v is None or isinstance(v, Mapping), "a mapping of AlignmentSearch options"),
    "weighting": (
        lambda v: v is None or isinstance(v, (str, Mapping, list)),
        "a weighting name, a mapping with 'name' and options, or a list of them (a chain)",
    ),
    "weight_decay": (lambda v: is_number(v) and v >= 0, "a finite number >= 0 (0: no weight decay)"),
    "loss_normalization": (
        lambda v: v in LOSS_NORMALIZATIONS,
        "'batch' (a task's loss sums over its labels and divides by the batch size) or 'labelled' (by its labels)",
    ),
    "early_stopping": (
        lambda v: v is None or isinstance(v, Mapping),
        f"null or a mapping with keys {sorted(EARLY_STOPPING_DEFAULTS)}",
    ),
}
_EARLY_STOPPING_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "monitor": (lambda v: isinstance(v, str) and bool(v), "a log key such as 'mean_val_loss' or 'val_task_00_mae'"),
    "patience": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "min_delta": (lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
    "restore_best_weights": (lambda v: isinstance(v, bool), "true or false"),
    "mode": (lambda v: v in mtl_callbacks.MONITOR_MODES, f"one of {list(mtl_callbacks.MONITOR_MODES)}"),
    "start_from_epoch": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
}


def _check_params(c: _Checker, params: Mapping, accepted: Mapping[str, inspect.Parameter], key: str, what: str):
    for name, value in params.items():
        if name not in accepted:
            c.fail(_join(key, name), f"{what} takes no such parameter; it accepts {sorted(accepted)}")
        default = accepted[name].default
        if default is not inspect.Parameter.empty and default is not None:
            c.like(value, default, _join(key, name))


def _architecture(c: _Checker, raw) -> tuple[str, dict]:
    section = c.mapping(raw, "architecture")
    c.keys(section, "architecture", ("name", "params"), required=("name",))
    name = section["name"]
    if name not in registry.list_models():
        c.fail("architecture.name", f"unknown architecture {name!r}; registered: {registry.list_models()}")
    params = dict(c.mapping(section.get("params"), "architecture.params"))
    accepted = registry.get_architecture(name).parameters()
    _check_params(c, params, accepted, "architecture.params", f"architecture {name!r}")
    for param, value in params.items():
        if param in _PARAM_CHECKS:
            check, expected = _PARAM_CHECKS[param]
            if not check(value):
                c.fail(f"architecture.params.{param}", f"expected {expected}, got {_describe(value)}")
    _check_size(c, params)
    return name, params


def _is_activation(value) -> bool:
    try:
        keras.activations.get(value)
    except (ValueError, TypeError):
        return False
    return True


# Checks beyond the type of a builder's default, by parameter name.
_PARAM_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "activation": (_is_activation, "a Keras activation name such as 'relu', 'gelu' or 'linear'"),
    "dropout": (lambda v: is_number(v) and 0 <= v < 1, "a rate in [0, 1)"),
}
# Lists of layer widths: consecutive widths multiply into kernels.
_WIDTH_PARAMS = ("shared_units", "units", "filters", "stem_units", "expert_units", "head_units")
MAX_PARAMETERS_ENV = "MTLZOO_MAX_PARAMETERS"
MAX_PARAMETERS = 10**9


def _check_size(c: _Checker, params: Mapping) -> None:
    """Refuse widths whose kernels alone would exceed the parameter limit, before anything is built.

    The bound is from below (each width list's kernels and biases, as if fed one feature), so a
    refused recipe is surely too large; ``$MTLZOO_MAX_PARAMETERS`` raises the limit.
    """
    limit_text = os.environ.get(MAX_PARAMETERS_ENV, str(MAX_PARAMETERS))
    try:
        limit = int(float(limit_text))
    except ValueError:
        c.fail("architecture.params", f"${MAX_PARAMETERS_ENV} must be a number, got {limit_text!r}")
    for param in _WIDTH_PARAMS:
        widths = params.get(param)
        if not isinstance(widths, (list, tuple)):
            continue
        least = sum(a * b + b for a, b in zip([1, *widths], widths))
        if least > limit:
            c.fail(
                f"architecture.params.{param}",
                f"widths {list(widths)} need at least {least:.3g} parameters, above the limit of {limit:.3g} "
                f"(set ${MAX_PARAMETERS_ENV} to raise it)",
            )


def _data(c: _Checker, raw) -> tuple[str, dict, data_base.Dataset]:
    section = dict(c.mapping(raw, "data"))
    if "name" not in section:
        c.fail("data.name", "required key is missing")
    name = section.pop("name")
    if name not in data_base.list_datasets():
        c.fail("data.name", f"unknown dataset {name!r}; registered: {data_base.list_datasets()}")
    accepted = data_base.dataset_options(name)
    _check_params(c, section, accepted, "data", f"dataset {name!r}")
    try:
        dataset = data_base.load_dataset(name, **section)
    except (ValueError, TypeError) as e:
        c.fail("data", str(e))
    return name, section, dataset


def _tasks(c: _Checker, raw, dataset: data_base.Dataset) -> tuple[Task, ...]:
    available = {t.name: t for t in dataset.tasks()}
    if raw is None or raw == "all":
        return tuple(available.values())
    if not isinstance(raw, list) or not raw:
        c.fail("tasks", f"expected 'all' or a non-empty list of task names or mappings, got {_describe(raw)}")
    tasks = []
    for i, entry in enumerate(raw):
        key = f"tasks[{i}]"
        entry = {"name": entry} if isinstance(entry, str) else c.mapping(entry, key)
        if entry.get("kind") == "reconstruction":
            tasks.append(_reconstruction_task(c, entry, key, dataset, tasks))
            continue
        c.keys(entry, key, _TASK_OVERRIDES, required=("name",))
        name = entry["name"]
        if name not in available:
            c.fail(
                f"{key}.name",
                f"dataset {dataset.name!r} provides no task {name!r}; it provides {sorted(available)}",
            )
        if any(t.name == name for t in tasks):
            c.fail(f"{key}.name", f"task {name!r} is listed twice")
        overrides = {k: v for k, v in entry.items() if k != "name"}
        if "weight" in overrides and not (is_number(overrides["weight"]) and overrides["weight"] >= 0):
            c.fail(f"{key}.weight", f"expected a finite number >= 0, got {_describe(overrides['weight'])}")
        try:
            tasks.append(dataclasses.replace(available[name], **overrides))
        except (ValueError, TypeError) as e:
            c.fail(key, str(e))
    if not any(t.role == "main" for t in tasks):
        c.fail("tasks", "at least one task must have role 'main'; auxiliary and adversarial tasks only help one")
    return tuple(tasks)


def _reconstruction_task(c: _Checker, entry: Mapping, key: str, dataset: data_base.Dataset, tasks) -> Task:
    c.keys(entry, key, _NEW_TASK_KEYS, required=("name", "input"))
    inputs = dataset.input_spec()
    if entry["input"] not in inputs:
        c.fail(f"{key}.input", f"dataset {dataset.name!r} has inputs {sorted(inputs)}, not {entry['input']!r}")
    if entry["name"] in {t.name for t in dataset.tasks()} | {t.name for t in tasks}:
        c.fail(f"{key}.name", f"task {entry['name']!r} already exists; name the reconstruction task differently")
    try:
        return Task(**entry)
    except (ValueError, TypeError) as e:
        c.fail(key, str(e))


def _labels(c: _Checker, section: dict, tasks: tuple[Task, ...]) -> tuple[dict[str, float], int]:
    """``data.label_fraction`` (``{task: fraction of its training labels to keep}``) and
    ``data.label_seed`` (which labels; default 0), taken out of the dataset's options."""
    fractions = c.mapping(section.pop("label_fraction", None), "data.label_fraction")
    seed = section.pop("label_seed", 0)
    names = {t.name for t in tasks if t.kind != "reconstruction"}
    for name, fraction in fractions.items():
        if name not in names:
            c.fail(f"data.label_fraction.{name}", f"not a task of this recipe; its tasks are {sorted(names)}")
        if not (is_number(fraction) and 0 < fraction <= 1):
            c.fail(f"data.label_fraction.{name}", f"expected a fraction in (0, 1], got {_describe(fraction)}")
    if not (is_int(seed) and seed >= 0):
        c.fail("data.label_seed", f"expected a non-negative integer, got {_describe(seed)}")
    return {k: float(v) for k, v in fractions.items()}, int(seed)


def _training(c: _Checker, raw, dataset: data_base.Dataset, tasks: tuple[Task, ...]) -> TrainingConfig:
    section = c.mapping(raw, "training")
    c.keys(section, "training", _TRAINING_CHECKS)
    for k, value in section.items():
        check, expected = _TRAINING_CHECKS[k]
        if not check(value):
            c.fail(f"training.{k}", f"expected {expected}, got {_describe(value)}")
    config = TrainingConfig(**section)
    if config.alignment_search is not None:
        _check_alignment_search(c, config.alignment_search)
    if config.validation_split not in dataset.splits:
        c.fail("training.validation_split", f"dataset {dataset.name!r} has splits {list(dataset.splits)}")
    if isinstance(config.learning_rate, int):
        config = dataclasses.replace(config, learning_rate=float(config.learning_rate))
    if isinstance(config.weight_decay, int):
        config = dataclasses.replace(config, weight_decay=float(config.weight_decay))
    if config.weighting is None:
        config = dataclasses.replace(config, weighting="unitary")
    _check_weighting(c, config, tasks)
    if config.early_stopping is not None:
        config = dataclasses.replace(config, early_stopping=_early_stopping(c, config.early_stopping, tasks))
    return config


def _check_weighting(c: _Checker, config: TrainingConfig, tasks: tuple[Task, ...]) -> None:
    """Check the weighting against these tasks, as ``compile`` will, so a bad one fails here.

    Only checked, not built: building creates Keras variables, which would start TensorFlow
    before a multi-worker strategy can configure its collectives."""
    registered = weighting_lib.list_weightings()
    try:
        method = weighting_lib.get(_plain(config.weighting))
        method.check_tasks([t.name for t in tasks], [t.role for t in tasks])
    except (ValueError, TypeError) as e:
        message = str(e).rstrip()
        if "registered" not in message:
            message = f"{message.rstrip('.')}; registered weightings: {registered}"
        c.fail("training.weighting", message)
    if method.uses_gradients and config.precision == "mixed_float16":
        c.fail(
            "training.weighting",
            f"{weighting_name(config.weighting)!r} combines gradients, which float16 loss scaling "
            "would distort; use precision 'mixed_bfloat16' or 'float32' with it",
        )


def weighting_name(spec) -> str:
    """A short name for a ``training.weighting`` value: ``pcgrad``, ``uncertainty+pcgrad``."""
    if spec is None:
        return "unitary"
    if isinstance(spec, Mapping):
        return str(spec.get("name"))
    if isinstance(spec, (list, tuple)):
        return "+".join(weighting_name(s) for s in spec)
    return str(spec)


def _early_stopping(c: _Checker, raw: Mapping, tasks: tuple[Task, ...]) -> dict[str, Any]:
    key = "training.early_stopping"
    c.keys(raw, key, _EARLY_STOPPING_CHECKS)
    for k, value in raw.items():
        check, expected = _EARLY_STOPPING_CHECKS[k]
        if not check(value):
            c.fail(f"{key}.{k}", f"expected {expected}, got {_describe(value)}")
    options = {**EARLY_STOPPING_DEFAULTS, **raw}
    options["min_delta"] = float(options["min_delta"])
    monitor, mode = options["monitor"], options["mode"]
    known = mtl_callbacks.predicted_log_keys(tasks)
    if monitor not in known:
        if monitor.startswith("mean_val_") or (monitor.startswith("mean_") and mode == "auto"):
            means = sorted(k for k in known if k.startswith("mean_val_"))
            c.fail(
                f"{key}.monitor",
                f"{monitor!r} is not a mean the tasks report; task means are {means} "
                "(mean_val_<metric> for every metric all tasks have)",
            )
        if mode == "auto":
            hint = difflib.get_close_matches(monitor, list(known), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            c.fail(
                f"{key}.monitor",
                f"unknown log key {monitor!r}{did_you_mean}; expected a task mean "
                f"{sorted(k for k in known if k.startswith('mean_val_'))}, 'loss', 'val_loss' or a "
                f"per-task key such as {_example_key(known, tasks)!r}; to monitor another log key, "
                "also set mode to 'min' or 'max' (it is then checked at the end of the first epoch)",
            )
    elif mode == "auto" and known[monitor] is None:
        c.fail(
            f"{key}.mode",
            f"cannot tell whether {monitor!r} should go down or up; set mode to 'min' or 'max'",
        )
    return options


def _example_key(known: Mapping[str, Any], tasks: tuple[Task, ...]) -> str:
    first = f"val_{tasks[0].name}_" if tasks else "val_"
    return next((k for k in known if k.startswith(first) and not k.endswith("_loss")), f"{first}loss")


def _check_alignment_search(c: _Checker, options: Mapping) -> None:
    from mtlzoo.muir import AlignmentSearch

    accepted = [p for p in inspect.signature(AlignmentSearch).parameters if p != "monitor"]
    c.keys(options, "training.alignment_search", accepted)
    try:
        AlignmentSearch(**options)
    except (ValueError, TypeError) as e:
        c.fail("training.alignment_search", str(e))


def _string(c: _Checker, section: Mapping, key: str, prefix: str, default: str) -> str:
    value = section.get(key, default)
    if not isinstance(value, str):
        c.fail(_join(prefix, key), f"expected a string, got {_describe(value)}")
    return value


def recipe_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Recipe:
    """Validate a recipe given as a dict (as parsed from YAML)."""
    c = _Checker(source)
    if not isinstance(raw, Mapping):
        c.fail("", f"expected a mapping at the top level, got {_describe(raw)}")
    c.keys(raw, "", _TOP_KEYS, required=("name", "architecture", "data"))
    name = _string(c, raw, "name", "", "")
    if not name:
        c.fail("name", "must be a non-empty string")
    architecture, params = _architecture(c, raw["architecture"])
    data_section = dict(c.mapping(raw["data"], "data"))
    label_options = {k: data_section.pop(k) for k in ("label_fraction", "label_seed") if k in data_section}
    dataset_name, data_options, dataset = _data(c, data_section)
    tasks = _tasks(c, raw.get("tasks"), dataset)
    label_fraction, label_seed = _labels(c, label_options, tasks)
    training = _training(c, raw.get("training"), dataset, tasks)
    evaluation = c.mapping(raw.get("evaluation"), "evaluation")
    c.keys(evaluation, "evaluation", ("split",))
    split = _string(c, evaluation, "split", "evaluation", "test")
    if split not in dataset.splits:
        c.fail("evaluation.split", f"dataset {dataset_name!r} has splits {list(dataset.splits)}")
    export = c.mapping(raw.get("export"), "export")
    c.keys(export, "export", ("name",))
    return Recipe(
        name=name,
        architecture=architecture,
        params=params,
        dataset=dataset_name,
        data_options=data_options,
        tasks=tasks,
        training=training,
        evaluation_split=split,
        export_name=_string(c, export, "name", "export", name),
        description=_string(c, raw, "description", "", ""),
        source=source,
        tuning=dict(c.mapping(raw.get("tuning"), "tuning")),
        label_fraction=label_fraction,
        label_seed=label_seed,
    )


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a YAML recipe file."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "recipe file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise ConfigError(source, "", f"cannot read the recipe: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, where, f"invalid YAML: {getattr(e, 'problem', e)}") from None
    return recipe_from_dict(raw, source)


def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the resolved recipe as YAML (it loads back to an equal recipe)."""
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
