"""The one check of inputs against a signature, for the clients and for local predictions.

A signature's inputs are ``{name: {"dtype": str, "shape": list | None}}``: numpy dtype names
(``"string"`` for TF strings), shapes with -1 or ``None`` for free dimensions (the first is the
batch) and ``None`` for an unknown rank; ``RestClient.metadata()`` returns this form.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from mtlzoo_client.errors import ServingInputError

STRING = "string"  # a TF string input; numpy holds it as an object array of bytes

# Which numpy kinds feed an input of each kind (b: bool, i/u: integers, f: floats, strings);
# integers into an integer input are also range-checked, since JSON numbers carry no width.
# Text of any kind counts as "S"; any other object array feeds nothing.
_FEEDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b", STRING: "S"}
_WHY_NOT = {
    **{("b", k): " (true/false is not a number)" for k in "iuf"},
    **{("S", k): " (strings are not numbers)" for k in "iuf"},
    **{("f", k): " (an integer input takes whole numbers only)" for k in "iu"},
    **{(k, "b"): " (a bool input takes true/false only)" for k in "iufS"},
    **{(k, STRING): " (a string input takes text or bytes)" for k in "biuf"},
}


def numpy_dtype(name: str | None) -> np.dtype | None:
    """The numpy dtype of a signature dtype name; ``None`` for strings and for dtypes that are not
    plain bool, integer or float in numpy (bfloat16, resource, ...), which are left to the server."""
    try:
        dtype = np.dtype(name) if name not in (None, STRING) else None
    except TypeError:
        return None
    return dtype if dtype is not None and dtype.kind in "biuf" else None


def shape_text(shape) -> str:
    """``[batch, 4, 4, 1]`` for a signature shape; free dimensions after the first are ``?``."""
    if shape is None:
        return "of any rank"
    dims = ["batch" if i == 0 and _free(d) else "?" if _free(d) else str(d) for i, d in enumerate(shape)]
    return "[" + ", ".join(dims) + "]"


def _free(dim) -> bool:
    return dim is None or dim < 0


def check_inputs(specs: Mapping[str, Mapping] | None, inputs: Mapping[str, Any], *, where: str = "the signature",
                 what: str = "input", json_safe: bool = False) -> dict[str, np.ndarray]:
    """Arrays for ``inputs``, checked against ``specs`` and converted to its dtypes.

    With ``specs=None`` only the form is checked (a non-empty dict of arrays with a batch axis
    and one batch length). Otherwise the names must match exactly, each array needs the spec's
    rank and fixed dimensions, and its values must convert without changing kind: integers
    feed float inputs, integers of any width feed an integer input when every value fits its
    range (a JSON request carries no width: 255 reaches a uint8 input, 256 does not), floats do
    not feed integer inputs, true/false is not a number, text feeds only string inputs.
    ``json_safe`` also refuses NaN and infinity, which strict JSON cannot carry.

    Raises:
        ServingInputError: naming the input, what it is, and what ``where`` expects.
    """
    if not isinstance(inputs, Mapping) or not inputs:
        names = f" with names {sorted(specs)}" if specs else ""
        raise ServingInputError(f"{what}s must be a non-empty dict {{name: array}}{names}.")
    if specs is not None and set(inputs) != set(specs):
        missing, unknown = sorted(set(specs) - set(inputs)), sorted(set(inputs) - set(specs))
        raise ServingInputError(
            f"{what} names {sorted(inputs)} do not match {where}, which takes {sorted(specs)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {unknown}" if unknown else "") + "."
        )
    arrays = {name: _checked(name, inputs[name], specs[name] if specs else None, what, json_safe)
              for name in sorted(inputs)}
    lengths = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ServingInputError(f"{what}s have different batch lengths {lengths}; they must all agree.")
    return arrays


def _checked(name: str, value, spec: Mapping | None, what: str, json_safe: bool) -> np.ndarray:
    try:
        array = np.asarray(value)
    except UnicodeError:  # str mixed with non-ASCII bytes: numpy tries to make them all str
        array = np.array(value, dtype=object)
    except ValueError as e:  # ragged nested lists
        raise ServingInputError(f"{what} {name!r} is not a rectangular array: {e}") from None
    if array.ndim == 0:
        raise ServingInputError(f"{what} {name!r} is a scalar; {what}s need a batch axis first.")
    if spec is not None:
        array = _converted(name, array, spec, what)
    if array.dtype.kind == "U" or (array.dtype.kind == "O" and _is_text(array)):
        # TF strings are bytes; str goes as UTF-8.
        array = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(array)
    if json_safe and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ServingInputError(
            f"{what} {name!r} contains NaN or infinity, which strict JSON cannot carry; "
            "replace them, or send this request with GrpcClient."
        )
    return array


def _converted(name: str, array: np.ndarray, spec: Mapping, what: str) -> np.ndarray:
    dtype, shape = spec["dtype"], spec["shape"]
    expected = f"expected {dtype} with shape {shape_text(shape)}"
    if shape is not None and (array.ndim != len(shape) or any(
        not _free(want) and got != want for got, want in zip(array.shape, shape)
    )):
        raise ServingInputError(f"{what} {name!r} has shape {list(array.shape)}; {expected}.")
    want = STRING if dtype == STRING else numpy_dtype(dtype)
    if want is None:
        return array
    kind = STRING if want == STRING else want.kind
    have = "S" if _is_text(array) else array.dtype.kind
    if have not in _FEEDS.get(kind, kind):
        why = _WHY_NOT.get((have, kind), "")
        raise ServingInputError(f"{what} {name!r} has dtype {array.dtype}; {expected}{why}.")
    if kind in "iu" and array.size:
        info = np.iinfo(want)
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            raise ServingInputError(
                f"{what} {name!r} has value {low if low < info.min else high}, outside the range of "
                f"{dtype} ({info.min}..{info.max}); {expected}."
            )
    return array if kind == STRING else array.astype(want, copy=False)


def _is_text(array: np.ndarray) -> bool:
    return array.dtype.kind in "SU" or (
        array.dtype.kind == "O" and all(isinstance(v, (bytes, str)) for v in array.flat)
    )
