"""The architecture registry: ``register_architecture``, ``get_architecture``, ``list_architectures``.

A builder is a function ``builder(inputs, tasks, **params)`` that wires Keras layers from named
``keras.Input`` tensors to one output per task and returns ``{task_name: tensor}``, or
``Heads(outputs, shared=tensor)`` to declare the shared representation every head reads
(fine-tuning, ``gradients: features`` and cross-stitch ``init_from`` use it).  ``create_model``
makes the inputs, checks the parameters against the builder's signature, and wraps the graph
in a ``MultiTaskModel`` (``mtlzoo.models.create_model``), so builders contain only what makes their architecture different.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import typing
from typing import Any, Callable, Mapping


Builder = Callable[..., Any]


class Heads(typing.NamedTuple):
    """What a builder returns when its tasks share one representation: ``{task: output}`` and
    the tensor every task head reads (the end of the shared trunk)."""

    outputs: Mapping[str, Any]
    shared: Any = None
_RESERVED_PARAMS = ("inputs", "tasks")


# Task kinds whose output is one vector per example: every dense task head predicts them.
VECTOR_KINDS = ("classification", "binary", "multilabel", "regression", "survival")


@dataclasses.dataclass(frozen=True)
class ArchitectureEntry:
    name: str
    builder: Builder
    description: str
    task_kinds: tuple[str, ...] = VECTOR_KINDS

    def check_tasks(self, tasks) -> None:
        """Raise ``ValueError`` for a task of a kind this architecture cannot predict."""
        wrong = [f"{t.name!r} ({t.kind})" for t in tasks if t.kind not in self.task_kinds]
        if wrong:
            able = [n for n, e in sorted(_ARCHITECTURES.items()) if all(t.kind in e.task_kinds for t in tasks)]
            raise ValueError(
                f"Architecture {self.name!r} predicts tasks of kind {list(self.task_kinds)}, not {', '.join(wrong)}; "
                f"architectures for these tasks: {able or 'none'}."
            )

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The builder's tunable parameters (everything but ``inputs`` and ``tasks``)."""
        params = inspect.signature(self.builder).parameters
        return {k: p for k, p in params.items() if k not in _RESERVED_PARAMS}


_ARCHITECTURES: dict[str, ArchitectureEntry] = {}


def register_architecture(name: str, *, description: str | None = None,
                          task_kinds: tuple[str, ...] = VECTOR_KINDS):
    """Decorator registering a builder under ``name``.

    The builder must accept ``inputs`` (``{name: keras.Input}``) and ``tasks``
    (``tuple[Task, ...]``) and any number of keyword parameters with defaults, and return
    ``{task_name: output_tensor}``. ``task_kinds`` are the task kinds it can predict (default:
    every kind with one output vector per example; dense kinds like ``segmentation`` need an
    architecture that declares them).
    """

    def decorator(builder: Builder) -> Builder:
        missing = [p for p in _RESERVED_PARAMS if p not in inspect.signature(builder).parameters]
        if missing:
            raise TypeError(f"Architecture builder {name!r} must take parameters {missing}.")
        if name in _ARCHITECTURES and _ARCHITECTURES[name].builder is not builder:
            raise ValueError(f"Architecture {name!r} is already registered.")
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _ARCHITECTURES[name] = ArchitectureEntry(name, builder, doc, tuple(task_kinds))
        return builder

    return decorator


def list_architectures(pattern: str | None = None, *, task_kinds=None) -> list[str]:
    """Registered architecture names, sorted, optionally filtered by a glob ``pattern`` and to
    those that predict every kind in ``task_kinds``."""
    names = sorted(n for n, e in _ARCHITECTURES.items() if all(k in e.task_kinds for k in task_kinds or ()))
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


list_models = list_architectures  # timm's name for the same list


def get_architecture(name: str) -> ArchitectureEntry:
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(_ARCHITECTURES)) or "(none)"
        raise ValueError(f"Unknown architecture {name!r}; registered architectures: {known}.") from None


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` when ``params`` names something the architecture does not take."""
    accepted = get_architecture(name).parameters()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"Architecture {name!r} does not take parameter(s) {unknown}; it accepts "
            f"{sorted(accepted)}."
        )
