"""Tasks: what each output of a multi-task model predicts, and how it is scored.

A task's *kind* fixes its output size, its default loss and its default metrics, so a
model built for a set of tasks can be compiled with nothing but an optimizer.
Every model output is a raw score (logits for the classification kinds, a risk score for
survival, per-pixel logits for segmentation), which is why the default losses and metrics are
the ``from_logits`` variants.

A task's *role* says what it is trained for. ``main`` tasks are the product: exported, selected
on and reported. ``auxiliary`` tasks only help the main ones: they train with the model but are
left out of the export, early stopping and model selection, and their targets may exist at
training time only (privileged information). ``adversarial`` tasks are predicted from the shared
representation through a gradient reversal layer or a confusion loss, so the trunk learns to hide
what they predict (``mtlzoo.auxiliary``). A ``reconstruction`` task (always auxiliary) decodes a named input back
from the shared representation; its target is that input.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import re
from typing import Any, Iterable, Mapping, Sequence

import keras

from mtlzoo import reconstruction, segmentation, survival
from mtlzoo.layers import adversary as adversary_layers
from mtlzoo.validation import is_int, number_at_least

KINDS = ("classification", "binary", "multilabel", "regression", "survival", "segmentation", "reconstruction")
ROLES = ("main", "auxiliary", "adversarial")
# How an adversarial task's head pushes back on the trunk (mtlzoo.layers.adversary).
ADVERSARIES = ("reversal", "confusion")
# What a task's loss divides its sample-weighted sum by (MultiTaskModel.compile).
LOSS_NORMALIZATIONS = ("batch", "labelled")

# Losses a recipe may name for the kinds that Keras has no loss for; the first is the default.
_KIND_LOSSES = {
    "survival": {"cox_efron": lambda: survival.CoxPartialLikelihood(ties="efron"),
                 "cox_breslow": lambda: survival.CoxPartialLikelihood(ties="breslow")},
    "segmentation": {"dice": lambda: segmentation.SoftDiceLoss(),
                     "dice_bce": lambda: segmentation.SoftDiceLoss(cross_entropy=1.0)},
    "reconstruction": {name: (lambda name=name: reconstruction.make_loss(name)) for name in reconstruction.LOSSES},
}

# Task names become Keras layer names, metric-name prefixes and SavedModel output keys,
# so they must be plain identifiers that no Keras log key can collide with.
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_RESERVED_NAMES = frozenset({"loss", "inputs", "outputs", "serving_default"})


@dataclasses.dataclass(frozen=True)
class Task:
    """One prediction target of a multi-task model.

    Args:
        name: identifier used as the output name (letters, digits, ``_``; starts with a letter).
        kind: ``"classification"`` (needs ``num_classes``), ``"binary"``, ``"multilabel"``
            (needs ``num_classes``, the number of labels), ``"regression"`` (``units`` outputs),
            ``"survival"`` (target ``(time, event)``, output one risk score; ``mtlzoo.survival``)
            or ``"segmentation"`` (target a binary mask, output one logit per pixel;
            ``mtlzoo.segmentation``) or ``"reconstruction"`` (needs ``input``; output and
            target have that input's shape).
        num_classes: classes or labels for the classification kinds.
        units: output dimension of a regression task.
        weight: static weight of this task's loss in the total loss (1.0: plain sum).
        loss: optional Keras loss identifier overriding the kind's default; survival tasks take
            ``"cox_efron"`` (default) or ``"cox_breslow"``, segmentation tasks ``"dice"``
            (default) or ``"dice_bce"`` (soft Dice plus pixel cross-entropy), reconstruction
            tasks ``"mse"`` (default) or ``"cross_entropy"`` (``mtlzoo.reconstruction``).
        metrics: optional Keras metric identifiers overriding the kind's defaults.
        role: ``"main"``, ``"auxiliary"`` or ``"adversarial"`` (see the module docstring);
            default ``"main"``, and ``"auxiliary"`` for a reconstruction task (always auxiliary).
        input: the model input a reconstruction task decodes.
        head_units: hidden widths of the head ``create_model`` attaches to the shared
            representation for an adversarial or reconstruction task (default ``(64,)`` for an
            adversary, ``(256,)`` for a decoder; ``()`` makes the head linear).
        reversal: how an adversarial task's gradient reversal strength moves over training:
            ``"ramp"`` (default: ``2 / (1 + exp(-10 p)) - 1`` of the way ``p`` through training,
            Ganin & Lempitsky 2015) or ``"constant"``.
        reversal_strength: the largest reversal strength (default 1.0).
        adversary: how an adversarial task's head pushes back on the trunk: ``"reversal"``
            (default: gradient reversal, the trunk maximises the head's loss) or
            ``"confusion"`` (the trunk makes the head's prediction uniform, Tzeng et al. 2015;
            ``reversal`` and ``reversal_strength`` schedule its strength the same way).
    """

    name: str
    kind: str
    num_classes: int | None = None
    units: int = 1
    weight: float = 1.0
    loss: str | None = None
    metrics: tuple[str, ...] | None = None
    role: str | None = None
    input: str | None = None
    head_units: tuple[int, ...] | None = None
    reversal: str | None = None
    reversal_strength: float | None = None
    adversary: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"Task name {self.name!r} is invalid: expected 1-64 characters, letters, digits "
                "or '_', starting with a letter (it becomes a layer and SavedModel output name)."
            )
        if self.name in _RESERVED_NAMES or keyword.iskeyword(self.name):
            raise ValueError(f"Task name {self.name!r} is reserved; choose another name.")
        if self.kind not in KINDS:
            raise ValueError(
                f"Task {self.name!r}: unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}."
            )
        if self.kind in ("classification", "multilabel"):
            if not is_int(self.num_classes) or self.num_classes < 2:
                raise ValueError(
                    f"Task {self.name!r} of kind {self.kind!r} needs num_classes, an integer >= 2; "
                    f"got {self.num_classes!r}."
                )
        elif self.num_classes is not None:
            raise ValueError(f"Task {self.name!r}: num_classes does not apply to kind {self.kind!r}.")
        if not is_int(self.units) or self.units < 1:
            raise ValueError(f"Task {self.name!r}: units must be a positive integer, got {self.units!r}.")
        if self.units != 1 and self.kind != "regression":
            raise ValueError(f"Task {self.name!r}: units applies only to regression tasks.")
        if (isinstance(self.weight, bool) or not isinstance(self.weight, (int, float))
                or not math.isfinite(self.weight) or self.weight < 0):
            raise ValueError(f"Task {self.name!r}: weight must be a finite number >= 0, got {self.weight!r}.")
        if self.loss is not None and self.kind in _KIND_LOSSES:
            if self.loss not in _KIND_LOSSES[self.kind]:
                raise ValueError(f"Task {self.name!r}: unknown {self.kind} loss {self.loss!r}; expected one of "
                                 f"{list(_KIND_LOSSES[self.kind])}.")
        elif self.loss is not None:
            _check_identifier(self, "loss", self.loss, keras.losses.get, "'mse', 'mae', 'huber'")
        self._check_role()
        if self.metrics is not None:
            if isinstance(self.metrics, str):
                raise ValueError(f"Task {self.name!r}: metrics must be a list of names, got the string {self.metrics!r}.")
            object.__setattr__(self, "metrics", tuple(self.metrics))
            for metric in self.metrics:
                _check_identifier(self, "metric", metric, keras.metrics.get, "'mae', 'accuracy', 'auc'")

    def _check_role(self) -> None:
        if self.role is None:
            object.__setattr__(self, "role", _default_role(self.kind))
        if self.role not in ROLES:
            raise ValueError(f"Task {self.name!r}: unknown role {self.role!r}; expected one of {list(ROLES)}.")
        if self.kind == "reconstruction":
            if self.role != "auxiliary":
                raise ValueError(f"Task {self.name!r}: a reconstruction task is auxiliary; got role {self.role!r}.")
            if not isinstance(self.input, str) or not self.input:
                raise ValueError(f"Task {self.name!r}: a reconstruction task needs input=, the name of the "
                                 "model input it decodes.")
        elif self.input is not None:
            raise ValueError(f"Task {self.name!r}: input applies only to reconstruction tasks.")
        if self.head_units is not None:
            if isinstance(self.head_units, (str, bytes)) or not all(is_int(u) and u > 0 for u in self.head_units):
                raise ValueError(f"Task {self.name!r}: head_units must be a list of positive integers, "
                                 f"got {self.head_units!r}.")
            if self.role != "adversarial" and self.kind != "reconstruction":
                raise ValueError(f"Task {self.name!r}: head_units applies to adversarial and reconstruction "
                                 "tasks (the architecture builds the other heads).")
            object.__setattr__(self, "head_units", tuple(int(u) for u in self.head_units))
        for field in ("reversal", "reversal_strength", "adversary"):
            if getattr(self, field) is not None and self.role != "adversarial":
                raise ValueError(f"Task {self.name!r}: {field} applies only to adversarial tasks.")
        if self.reversal is not None and self.reversal not in adversary_layers.SCHEDULES:
            raise ValueError(f"Task {self.name!r}: unknown reversal {self.reversal!r}; expected one of "
                             f"{list(adversary_layers.SCHEDULES)}.")
        if self.adversary is not None and self.adversary not in ADVERSARIES:
            raise ValueError(f"Task {self.name!r}: unknown adversary {self.adversary!r}; expected one of "
                             f"{list(ADVERSARIES)}.")
        if self.reversal_strength is not None:
            number_at_least(f"Task {self.name!r}: reversal_strength", self.reversal_strength)

    @property
    def output_size(self) -> int | None:
        """Width of the model output for this task (None for reconstruction: the input's shape)."""
        if self.kind == "reconstruction":
            return None
        if self.kind in ("classification", "multilabel"):
            return int(self.num_classes)
        if self.kind == "binary":
            return 1
        return int(self.units)

    def make_loss(self) -> keras.losses.Loss:
        """A fresh instance of this task's loss."""
        if self.kind in _KIND_LOSSES:
            options = _KIND_LOSSES[self.kind]
            return options[self.loss or next(iter(options))]()
        if self.loss is not None:
            return keras.losses.get(self.loss)
        if self.kind == "classification":
            return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if self.kind in ("binary", "multilabel"):
            return keras.losses.BinaryCrossentropy(from_logits=True)
        return keras.losses.MeanSquaredError()

    def make_metrics(self) -> list[keras.metrics.Metric]:
        """Fresh instances of this task's metrics (metric objects hold state, so never share them)."""
        if self.metrics is not None:
            return [keras.metrics.get(m) for m in self.metrics]
        if self.kind == "classification":
            return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if self.kind == "survival":
            return [survival.ConcordanceIndex(name="c_index")]
        if self.kind == "segmentation":
            return [segmentation.Dice(name="dice"), segmentation.IoU(name="iou")]
        if self.kind == "reconstruction":
            return [reconstruction.make_metric(self.loss or "mse")]
        if self.kind == "binary":
            return [
                keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
                keras.metrics.AUC(name="auc", from_logits=True),
            ]
        if self.kind == "multilabel":
            return [
                keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
                keras.metrics.AUC(
                    name="auc", from_logits=True, multi_label=True, num_labels=self.num_classes
                ),
            ]
        return [
            keras.metrics.RootMeanSquaredError(name="rmse"),
            keras.metrics.MeanAbsoluteError(name="mae"),
        ]

    def get_config(self) -> dict[str, Any]:
        config = dataclasses.asdict(self)
        for key in ("metrics", "head_units"):
            if config[key] is not None:
                config[key] = list(config[key])
        # Fields at their defaults are left out, so configs written before they existed match.
        if config["role"] == _default_role(self.kind):
            del config["role"]
        for field in ("input", "head_units", "reversal", "reversal_strength", "adversary"):
            if config[field] is None:
                del config[field]
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Task":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"Unknown task field(s) {unknown}; expected some of {sorted(known)}."
            )
        return cls(**config)


def as_tasks(tasks: Iterable[Task | Mapping[str, Any]]) -> tuple[Task, ...]:
    """Normalise tasks given as ``Task`` objects or dicts, checking names are unique."""
    if isinstance(tasks, (Task, str, Mapping)):
        raise TypeError("tasks must be a list of Task objects (or task dicts), not a single one.")
    result = tuple(t if isinstance(t, Task) else Task.from_config(t) for t in tasks)
    if not result:
        raise ValueError("At least one task is required.")
    names = [t.name for t in result]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Task names must be unique; repeated: {duplicates}.")
    if not main_tasks(result):
        raise ValueError(f"At least one task must have role 'main'; the tasks {names} are all auxiliary or "
                         "adversarial, and those only help a main task.")
    return result


def task_names(tasks: Sequence[Task]) -> list[str]:
    return [t.name for t in tasks]


def main_tasks(tasks: Sequence[Task]) -> list[Task]:
    """The tasks with role ``main``: what is exported, selected on and reported first."""
    return [t for t in tasks if t.role == "main"]


def _default_role(kind: str) -> str:
    return "auxiliary" if kind == "reconstruction" else "main"


def _check_identifier(task: Task, what: str, name, resolve, examples: str) -> None:
    """Resolve a loss or metric name now, so a typo fails when the task is made, not mid-compile."""
    try:
        resolve(name)
    except (ValueError, TypeError):
        raise ValueError(
            f"Task {task.name!r}: unknown {what} {name!r}; expected a Keras {what} name such as {examples}."
        ) from None
