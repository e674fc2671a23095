"""The architecture registry: ``register_architecture``, ``create_model``, ``list_models``.

A builder is a function ``builder(inputs, tasks, **params)`` that wires Keras layers from named
``keras.Input`` tensors to one output per task and returns ``{task_name: tensor}``, or
``Heads(outputs, shared=tensor)`` to declare the shared representation every head reads
(fine-tuning, ``gradients: features`` and cross-stitch ``init_from`` use it).  ``create_model``
makes the inputs, checks the parameters against the builder's signature, and wraps the graph
in a ``MultiTaskModel``, so builders contain only what makes their architecture different.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import typing
from typing import Any, Callable, Mapping, Sequence

import keras

from mtlzoo.models import MultiTaskModel
from mtlzoo.tasks import Task, as_tasks

Builder = Callable[..., Any]


class Heads(typing.NamedTuple):
    """What a builder returns when its tasks share one representation: ``{task: output}`` and
    the tensor every task head reads (the end of the shared trunk)."""

    outputs: Mapping[str, Any]
    shared: Any = None
_RESERVED_PARAMS = ("inputs", "tasks")


@dataclasses.dataclass(frozen=True)
class ArchitectureEntry:
    name: str
    builder: Builder
    description: str

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The builder's tunable parameters (everything but ``inputs`` and ``tasks``)."""
        params = inspect.signature(self.builder).parameters
        return {k: p for k, p in params.items() if k not in _RESERVED_PARAMS}


_ARCHITECTURES: dict[str, ArchitectureEntry] = {}


def register_architecture(name: str, *, description: str | None = None):
    """Decorator registering a builder under ``name``.

    The builder must accept ``inputs`` (``{name: keras.Input}``) and ``tasks``
    (``tuple[Task, ...]``) and any number of keyword parameters with defaults, and return
    ``{task_name: output_tensor}``.
    """

    def decorator(builder: Builder) -> Builder:
        missing = [p for p in _RESERVED_PARAMS if p not in inspect.signature(builder).parameters]
        if missing:
            raise TypeError(f"Architecture builder {name!r} must take parameters {missing}.")
        if name in _ARCHITECTURES and _ARCHITECTURES[name].builder is not builder:
            raise ValueError(f"Architecture {name!r} is already registered.")
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _ARCHITECTURES[name] = ArchitectureEntry(name, builder, doc)
        return builder

    return decorator


def list_architectures(pattern: str | None = None) -> list[str]:
    """Registered architecture names, sorted, optionally filtered by a glob ``pattern``."""
    names = sorted(_ARCHITECTURES)
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


def _input_spec(name, spec) -> tuple[tuple[int, ...], str, float | None]:
    """``(shape, dtype, scale)`` from ``shape`` or ``{"shape": ..., "dtype": ..., "scale": ...}``."""
    dtype, scale = "float32", None
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"shape", "dtype", "scale"})
        if unknown or "shape" not in spec:
            raise ValueError(
                f"Input {name!r}: expected a shape or a dict with 'shape' and optional 'dtype' and "
                f"'scale'; got {dict(spec)!r}."
            )
        shape, dtype, scale = spec["shape"], spec.get("dtype", dtype), spec.get("scale")
    else:
        shape = spec
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (list, tuple)) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            f"Input {name!r}: shape must be a tuple of positive integers without the batch "
            f"dimension, got {shape!r}."
        )
    try:
        dtype = keras.backend.standardize_dtype(dtype)
    except ValueError:
        raise ValueError(f"Input {name!r}: unknown dtype {dtype!r}.") from None
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise ValueError(f"Input {name!r}: scale must be a number, got {scale!r}.")
    return tuple(shape), dtype, scale


def make_inputs(inputs: Mapping[str, Any]) -> tuple[dict[str, keras.KerasTensor], dict[str, keras.KerasTensor]]:
    """Named ``keras.Input`` tensors, and the float tensors that architectures build on.

    ``inputs`` maps each name to a shape without the batch axis, e.g. ``{"features": (20,)}``,
    or to ``{"shape": (28, 28, 1), "dtype": "uint8", "scale": 1 / 255}`` for raw inputs: the
    model then takes the raw dtype (so does its SavedModel export) and rescales to float32
    itself, so serving clients send raw data.
    """
    if not isinstance(inputs, Mapping) or not inputs:
        raise ValueError("inputs must be a non-empty dict {input_name: shape}, e.g. {'features': (20,)}.")
    model_inputs, features = {}, {}
    for name, spec in inputs.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"Input name {name!r} must be a Python identifier.")
        shape, dtype, scale = _input_spec(name, spec)
        tensor = keras.Input(shape=shape, dtype=dtype, name=name)
        model_inputs[name] = features[name] = tensor
        if scale is not None or "float" not in dtype:
            features[name] = keras.layers.Rescaling(1.0 if scale is None else scale, name=f"{name}_rescale")(tensor)
    return model_inputs, features


def create_model(
    name: str,
    tasks: Sequence[Task | Mapping[str, Any]],
    inputs: Mapping[str, Sequence[int]],
    **params,
) -> MultiTaskModel:
    """Build a registered architecture for ``tasks`` on the given named inputs.

    ``inputs`` maps input names to shapes (see ``make_inputs`` for raw uint8 inputs).

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
    input_tensors, features = make_inputs(inputs)
    built = entry.builder(inputs=features, tasks=tasks, **params)
    outputs, shared = built if isinstance(built, Heads) else (built, None)
    if not isinstance(outputs, Mapping) or sorted(outputs) != sorted(t.name for t in tasks):
        raise TypeError(
            f"Architecture {name!r} must return a dict keyed by the task names "
            f"{[t.name for t in tasks]}; got {type(outputs).__name__} "
            f"{sorted(outputs) if isinstance(outputs, Mapping) else ''}."
        )
    ordered = {t.name: outputs[t.name] for t in tasks}
    return MultiTaskModel(inputs=input_tensors, outputs=ordered, tasks=tasks, shared=shared, name=name)
