"""Tasks: what each output of a multi-task model predicts, and how it is scored.

A task's *kind* fixes its output size, its default loss and its default metrics, so a
model built for a set of tasks can be compiled with nothing but an optimizer.
Every model output is a raw score (logits for the classification kinds, a risk score for
survival, per-pixel logits for segmentation), which is why the default losses and metrics are
the ``from_logits`` variants.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import re
from typing import Any, Iterable, Mapping, Sequence

import keras

from mtlzoo import segmentation, survival
from mtlzoo.validation import is_int

KINDS = ("classification", "binary", "multilabel", "regression", "survival", "segmentation")

# Losses a recipe may name for the kinds that Keras has no loss for; the first is the default.
_KIND_LOSSES = {
    "survival": {"cox_efron": lambda: survival.CoxPartialLikelihood(ties="efron"),
                 "cox_breslow": lambda: survival.CoxPartialLikelihood(ties="breslow")},
    "segmentation": {"dice": lambda: segmentation.SoftDiceLoss(),
                     "dice_bce": lambda: segmentation.SoftDiceLoss(cross_entropy=1.0)},
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
            ``mtlzoo.segmentation``).
        num_classes: classes or labels for the classification kinds.
        units: output dimension of a regression task.
        weight: static weight of this task's loss in the total loss (1.0: plain sum).
        loss: optional Keras loss identifier overriding the kind's default; survival tasks take
            ``"cox_efron"`` (default) or ``"cox_breslow"``, segmentation tasks ``"dice"``
            (default) or ``"dice_bce"`` (soft Dice plus pixel cross-entropy).
        metrics: optional Keras metric identifiers overriding the kind's defaults.
    """

    name: str
    kind: str
    num_classes: int | None = None
    units: int = 1
    weight: float = 1.0
    loss: str | None = None
    metrics: tuple[str, ...] | None = None

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
        if self.metrics is not None:
            if isinstance(self.metrics, str):
                raise ValueError(f"Task {self.name!r}: metrics must be a list of names, got the string {self.metrics!r}.")
            object.__setattr__(self, "metrics", tuple(self.metrics))
            for metric in self.metrics:
                _check_identifier(self, "metric", metric, keras.metrics.get, "'mae', 'accuracy', 'auc'")

    @property
    def output_size(self) -> int:
        """Width of the model output for this task."""
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
        if config["metrics"] is not None:
            config["metrics"] = list(config["metrics"])
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
    return result


def task_names(tasks: Sequence[Task]) -> list[str]:
    return [t.name for t in tasks]


def _check_identifier(task: Task, what: str, name, resolve, examples: str) -> None:
    """Resolve a loss or metric name now, so a typo fails when the task is made, not mid-compile."""
    try:
        resolve(name)
    except (ValueError, TypeError):
        raise ValueError(
            f"Task {task.name!r}: unknown {what} {name!r}; expected a Keras {what} name such as {examples}."
        ) from None
