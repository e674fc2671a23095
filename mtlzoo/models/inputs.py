"""Named model inputs: shapes, raw dtypes and the in-model rescaling that serving clients rely on."""

from __future__ import annotations

from typing import Any, Mapping

import keras


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
