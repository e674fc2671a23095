"""SavedModel export for TensorFlow Serving, and reading exports back.

``export_saved_model`` writes ``BASE/<version>/`` the way TF Serving expects:

- ``serving_default`` takes the model's named inputs (dynamic batch, the inputs' own dtypes,
  so a model that rescales uint8 images itself is served raw images) and returns, for every
  task ``T``, its raw output ``T``; classification, binary and multilabel tasks also return
  ``T_probabilities`` (softmax or sigmoid) and ``T_class_ids`` (int64: the arg-max class, or
  the 0/1 decision per label at probability 0.5); a survival task also returns ``T_risk`` (one
  risk score per example, higher: earlier events), a segmentation task ``T_probabilities``
  (per pixel) and ``T_mask`` (int64 0/1 per pixel, at probability 0.5).
- ``predict_<T>`` returns only task ``T``'s outputs, for clients that want one task.
- Only the main tasks are served: auxiliary and adversarial heads (and a privileged target's)
  are dropped from the graph unless ``include_auxiliary=True``.
- ``assets.extra/tf_serving_warmup_requests`` holds PredictionLog records built from real
  inputs, which TF Serving replays before it declares the version available.

The version is built in a hidden temporary directory and renamed into place, so a server
watching ``BASE`` never loads a partial version and a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Mapping

import keras
import numpy as np

from mtlzoo.errors import ExportError
from mtlzoo.io import atomic_path, rename_exclusive
from mtlzoo.serving import SERVING_DEFAULT
from mtlzoo_client.inputs import check_inputs
from mtlzoo.tasks import Task

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many warmup records
PROBABILITIES, CLASS_IDS, RISK, MASK = "_probabilities", "_class_ids", "_risk", "_mask"

# Signature keys travel through TF Serving's REST JSON, gRPC maps and saved_model_cli, so keep
# them to plain identifiers.
_KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")




# ---------------------------------------------------------------------------------------------
# What the signatures contain


def output_suffixes(task: Task) -> list[str]:
    """What the export appends to ``task``'s name for each of its signature outputs."""
    return {"regression": [""], "survival": ["", RISK], "segmentation": ["", PROBABILITIES, MASK]}.get(
        task.kind, ["", PROBABILITIES, CLASS_IDS])


def serving_outputs(task: Task, raw):
    """``{key: tensor}`` that the export returns for ``task`` given its raw output tensor."""
    outputs = {task.name: raw}
    if task.kind == "survival":
        outputs[task.name + RISK] = raw[:, 0]
    elif task.kind == "segmentation":
        outputs[task.name + PROBABILITIES] = keras.ops.sigmoid(raw)
        outputs[task.name + MASK] = keras.ops.cast(keras.ops.greater(raw, 0.0), "int64")
    elif task.kind == "classification":
        outputs[task.name + PROBABILITIES] = keras.ops.softmax(raw, axis=-1)
        outputs[task.name + CLASS_IDS] = keras.ops.cast(keras.ops.argmax(raw, axis=-1), "int64")
    elif task.kind in ("binary", "multilabel"):
        outputs[task.name + PROBABILITIES] = keras.ops.sigmoid(raw)
        decisions = keras.ops.cast(keras.ops.greater(raw, 0.0), "int64")
        # A binary task answers one class id per example, like a classification task.
        outputs[task.name + CLASS_IDS] = decisions[:, 0] if task.kind == "binary" else decisions
    return outputs


def serving_output_names(model: keras.Model) -> dict[str, list[str]]:
    """``{task_or_output: [signature output keys]}``, checking that every key is valid and unique."""
    _check_dict_outputs(model)
    tasks = {t.name: t for t in getattr(model, "tasks", ())}
    names = {}
    for output in model.output:
        if output in tasks:
            names[output] = [output + s for s in output_suffixes(tasks[output])]
        else:
            names[output] = [output]
    keys = [k for ks in names.values() for k in ks]
    bad = [k for k in keys if not _KEY_PATTERN.match(k)]
    if bad:
        raise ExportError(
            f"Output name(s) {bad} cannot be signature keys: use letters, digits and '_', "
            "starting with a letter."
        )
    clashes = sorted({k for k in keys if keys.count(k) > 1})
    if clashes:
        raise ExportError(
            f"Signature output key(s) {clashes} would be produced twice (a task named like another "
            f"task's '{PROBABILITIES}', '{CLASS_IDS}', '{RISK}' or '{MASK}' output); rename the task."
        )
    return names


def input_specs(model: keras.Model) -> dict[str, dict]:
    """``{input_name: {"dtype", "shape"}}`` of the model's named inputs (batch dimension ``None``),
    the form ``mtlzoo_client.check_inputs`` takes."""
    return {
        t.name: {"dtype": keras.backend.standardize_dtype(t.dtype), "shape": [None, *t.shape[1:]]}
        for t in model.inputs
    }


def _check_dict_outputs(model) -> None:
    if not isinstance(model, keras.Model):
        raise ExportError(f"Expected a keras.Model, got {type(model).__name__}.")
    if not isinstance(model.output, dict):
        raise ExportError(
            "The model must have a dict of outputs keyed by task name (mtlzoo.create_model builds "
            f"such models); this one returns {type(model.output).__name__}, which TF Serving would "
            "name output_0, output_1, ..."
        )


# ---------------------------------------------------------------------------------------------
# Writing


def _without_hypernetwork(model: keras.Model) -> keras.Model:
    """Generated weights written into an ordinary copy (MUiR's bank, a subspace model's
    expansion): serving needs neither."""
    from mtlzoo import muir, subspace

    if isinstance(model, muir.MuirModel):
        raise ExportError(
            "A MuirModel joins models of several domains; export each one from model.freeze() "
            "(a {component: keras.Model} dict)."
        )
    layers = getattr(model, "layers", [])
    if any(isinstance(layer, muir.HypermoduleBank) for layer in layers):
        return muir.freeze(model)
    if any(isinstance(layer, subspace.SubspaceColumns) for layer in layers):
        return subspace.freeze(model)
    return model


def served_model(model: keras.Model) -> keras.Model:
    """``model`` cut to its main tasks (``mtlzoo.models.drop_auxiliary``), or itself when it
    has no auxiliary or adversarial task."""
    from mtlzoo.models import MultiTaskModel, drop_auxiliary

    return drop_auxiliary(model) if isinstance(model, MultiTaskModel) else model


def existing_versions(base_dir: str | os.PathLike) -> list[int]:
    """Integer version directories under ``base_dir``, ascending."""
    base = Path(base_dir)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def export_saved_model(
    model: keras.Model,
    base_dir: str | os.PathLike,
    version: int | None = None,
    *,
    overwrite: bool = False,
    warmup_inputs: Mapping[str, np.ndarray] | None = None,
    model_name: str | None = None,
    include_auxiliary: bool = False,
) -> Path:
    """Export ``model`` for TF Serving to ``base_dir/<version>/`` and return that path.

    Args:
        version: a positive integer; default: one more than the newest existing version when
            the export is complete (exports racing for a number each get their own).
        overwrite: replace an existing version (otherwise that is an error, also when another
            process writes the version while this one is being written).
        warmup_inputs: real example inputs ``{name: array}``; when given, warmup records of
            several batch sizes (and one per task signature) are written from them.
        model_name: the model name TF Serving will use (recorded in the warmup requests);
            default: the last component of ``base_dir``.
        include_auxiliary: also serve the auxiliary and adversarial tasks (default: the main
            tasks only; the others' heads are not in the SavedModel at all).

    Raises:
        ExportError: a model, version or location that cannot be exported as asked.
        ServingInputError: warmup inputs that do not fit the model's inputs (``check_inputs``).
    """
    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            "SavedModel export needs the TensorFlow backend; save a .keras file on this backend "
            "and export it where KERAS_BACKEND=tensorflow (the file loads on either backend)."
        )
    model = _without_hypernetwork(model)
    if not include_auxiliary:
        model = served_model(model)
    names = serving_output_names(model)
    specs = input_specs(model)
    warmup = None if warmup_inputs is None else check_inputs(
        specs, warmup_inputs, where="the model's inputs", what="warmup input")
    base = Path(base_dir)
    if base.exists() and not base.is_dir():
        raise ExportError(f"Export base {str(base)!r} exists and is not a directory.")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ExportError(f"version must be a positive integer, got {version!r}.")
        if (base / str(version)).exists() and not overwrite:
            raise FileExistsError(_exists_message(base / str(version)))
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"Cannot create the export base {str(base)!r}: {e.strerror or e}.") from None
    if not os.access(base, os.W_OK):
        raise ExportError(f"Cannot write to the export base {str(base)!r}: permission denied.")

    # Hidden (leading dot), so TF Serving never sees a partial version; removed whatever happens.
    with tempfile.TemporaryDirectory(prefix=f".{version or 'next'}.", suffix=".tmp", dir=base) as tmp:
        staging = Path(tmp) / "version"
        _write_archive(model, specs, names, staging)
        if warmup is not None:
            _write_warmup(staging / WARMUP_FILE, warmup, names, model_name or base.resolve().name)
        return _publish(staging, base, version, overwrite)


def _publish(staging: Path, base: Path, version: int | None, overwrite: bool) -> Path:
    """Rename the finished ``staging`` directory to ``base/<version>`` and return that path.

    Without a version, the next free number is claimed by exclusive renames, trying the next
    number whenever another export took one first. Nothing is replaced unless ``overwrite``.
    """
    if version is None:
        version = (existing_versions(base) or [0])[-1] + 1
        while True:
            try:
                rename_exclusive(staging, base / str(version))
                return base / str(version)
            except FileExistsError:
                version = max(version, (existing_versions(base) or [0])[-1]) + 1
    final = base / str(version)
    try:
        rename_exclusive(staging, final)
    except FileExistsError:
        if not overwrite:
            raise FileExistsError(_exists_message(final, raced=True)) from None
        with atomic_path(final) as replacement:
            os.rename(staging, replacement)
    return final


def _exists_message(final: Path, raced: bool = False) -> str:
    how = " (another export wrote it while this one was being written)" if raced else ""
    return f"Version {final.name} already exists at {str(final)!r}{how}; pass overwrite=True to replace it."


def _write_archive(model, specs, names, path: Path) -> None:
    import tensorflow as tf

    tasks = {t.name: t for t in getattr(model, "tasks", ())}
    signature = [{n: tf.TensorSpec(s["shape"], s["dtype"], name=n) for n, s in specs.items()}]
    structure = model.input

    def run(inputs):
        if isinstance(structure, dict):
            args = inputs
        elif isinstance(structure, (list, tuple)):
            args = [inputs[t.name] for t in structure]
        else:
            args = inputs[structure.name]
        raw = model(args, training=False)
        outputs = {}
        for output, value in raw.items():
            outputs.update(serving_outputs(tasks[output], value) if output in tasks else {output: value})
        return outputs

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_DEFAULT, run, input_signature=signature)
    def only(keys):
        return lambda inputs: {k: v for k, v in run(inputs).items() if k in keys}

    for output, keys in names.items():
        archive.add_endpoint(f"predict_{output}", only(keys), input_signature=signature)
    archive.write_out(str(path), verbose=False)


def warmup_batches(num_examples: int) -> list[int]:
    """Batch sizes 1, 2, 4, ... up to the sample size (and the sample size itself)."""
    sizes, size = [], 1
    while size < num_examples:
        sizes.append(size)
        size *= 2
    return sizes + [num_examples] if num_examples else sizes


def _write_warmup(path: Path, inputs: dict, names: dict, model_name: str) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    num = len(next(iter(inputs.values())))
    if num == 0:
        raise ExportError("warmup inputs are empty; give at least one example.")
    requests = [(SERVING_DEFAULT, size) for size in warmup_batches(num)]
    requests += [(f"predict_{output}", 1) for output in names]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, size in requests[:MAX_WARMUP_RECORDS]:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value[:size]))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


# ---------------------------------------------------------------------------------------------
# Reading


def resolve_export_dir(path: str | os.PathLike) -> Path:
    """A version directory: ``path`` itself if it holds a SavedModel, else its newest version."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = existing_versions(path)
    if not versions:
        raise FileNotFoundError(
            f"No SavedModel at {str(path)!r}: expected saved_model.pb there or integer version "
            "directories (BASE/1/, BASE/2/, ...) under it."
        )
    return path / str(versions[-1])


def predict_exported(export_dir, inputs: Mapping, signature: str = SERVING_DEFAULT) -> dict[str, np.ndarray]:
    """Answer ``inputs`` from an exported SavedModel, as TF Serving would (no mtlzoo model code).

    Inputs are checked and converted by ``mtlzoo_client.check_inputs``, the rule the clients
    apply before sending; a mismatch is a ``ServingInputError``.
    """
    import tensorflow as tf

    path = resolve_export_dir(export_dir)
    loaded = tf.saved_model.load(str(path), tags=["serve"])
    if signature not in loaded.signatures:
        raise ExportError(f"{str(path)!r} has no signature {signature!r}; it has {sorted(loaded.signatures)}.")
    fn = loaded.signatures[signature]
    specs = {
        name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        for name, spec in fn.structured_input_signature[1].items()
    }
    arrays = check_inputs(specs, inputs, where=f"signature {signature!r} of {str(path)!r}")
    outputs = fn(**{k: tf.constant(v) for k, v in arrays.items()})
    return {k: v.numpy() for k, v in sorted(outputs.items())}


def read_request(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str | None]:
    """Inputs (and signature name, if given) from a TF Serving REST body (JSON) or a ``.npz`` file.

    JSON: ``{"instances": [{name: value}, ...]}`` (rows) or ``{"inputs": {name: values}}``
    (columns), optionally with ``"signature_name"``; every value a number, true/false or a
    string, or rectangular nested lists of one of those. A file that does not hold that is an
    ``ExportError`` naming the file; whether the values suit the model is ``check_inputs``'s call.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Input file {str(path)!r} does not exist.")
    where = repr(str(path))
    if path.suffix == ".npz":
        inputs, signature = _read_npz(path, where), None
    else:
        try:
            body = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ExportError(f"{where} is not valid JSON: {e}") from None
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise ExportError(
                f"{where}: expected a JSON object with either \"instances\" (a list of rows) or "
                "\"inputs\" (named columns), as in a TF Serving REST request."
            )
        if "inputs" in body:
            columns = body["inputs"]
            if not isinstance(columns, dict) or not columns:
                raise ExportError(f"{where}: \"inputs\" must map input names to values.")
            inputs = {k: _json_array(v, f"{where}: input {k!r}") for k, v in columns.items()}
        else:
            rows = body["instances"]
            if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and r for r in rows):
                raise ExportError(f"{where}: \"instances\" must be a non-empty list of {{input_name: value}} rows.")
            names = set(rows[0])
            if any(set(r) != names for r in rows):
                raise ExportError(f"{where}: every row of \"instances\" must have the same input names.")
            inputs = {k: _json_array([r[k] for r in rows], f"{where}: input {k!r}") for k in sorted(names)}
        signature = body.get("signature_name")
    for name, value in inputs.items():
        if value.ndim and not len(value):
            raise ExportError(f"{where}: input {name!r} has no examples; expected at least one.")
    return inputs, signature


# What a JSON leaf may be, named as a user reads it (bool first: it is also an int).
_JSON_LEAVES = ((bool, "true/false"), ((int, float), "numbers"), (str, "strings"))


def _json_array(value, where: str) -> np.ndarray:
    """``value`` (a JSON value) as an array: leaves all numbers, all true/false or all strings, rectangular."""
    kinds, pending = set(), [value]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
            continue
        kind = next((k for types, k in _JSON_LEAVES if isinstance(item, types)), None)
        if kind is None:
            found = "null" if item is None else f"a JSON object {_short_json(item)}"
            raise ExportError(f"{where} holds {found}; expected numbers, true/false or strings (in nested lists).")
        kinds.add(kind)
    if len(kinds) > 1:
        # numpy would quietly turn true into 1, or 1 into "1".
        raise ExportError(f"{where} mixes {' and '.join(sorted(kinds))}; expected values of one kind.")
    try:
        array = np.array(value)
    except ValueError:
        raise ExportError(
            f"{where} has rows of different lengths; expected a rectangular array (nested lists of equal length)."
        ) from None
    if array.dtype == object:  # integers beyond 64 bits
        raise ExportError(f"{where} holds integers too large for any input dtype.")
    return array


def _short_json(value, limit: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_npz(path: Path, where: str) -> dict[str, np.ndarray]:
    """The arrays of an ``np.savez`` file, refusing pickled objects; errors name the file."""
    expected = "an .npz archive of numeric, bool or string arrays named as the model's inputs (np.savez)"
    # np.load picks the format by these first bytes, and would read a .npy file too and blame
    # pickling for any other file.
    with open(path, "rb") as f:
        if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise ExportError(f"{where} is not a zip archive; expected {expected}.")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                arrays[name] = npz[name]
    except (zipfile.BadZipFile, EOFError, ValueError, zlib.error) as e:
        if "Object arrays" in str(e):  # numpy's only word that a member needs unpickling
            raise ExportError(
                f"{where}: array {name!r} holds Python objects (dtype=object, e.g. a ragged or mixed "
                f"array), which are never unpickled; expected {expected}."
            ) from None
        raise ExportError(f"{where} is damaged or not written by np.savez ({e}); expected {expected}.") from None
    if not arrays:
        raise ExportError(f"{where} holds no arrays; expected {expected}.")
    odd = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
    if odd:
        raise ExportError(f"{where}: {odd} are not .npy arrays; expected {expected}.")
    return arrays
