"""Export and predict under faults: racing exports, JSON integer widths, malformed request files."""

import json
import os
import re
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from conftest import REPO, cli_here
from mtlzoo.serving.export import ExportError, export_saved_model, predict_exported, read_request
from mtlzoo.tasks import Task
from mtlzoo_client import ServingInputError

TASKS = [Task("kind", "classification", num_classes=3), Task("score", "regression")]
IMAGES = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 1)).astype("uint8")
# TensorFlow's own start-up logging, which is not the command's output.
TF_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} |To enable the following instructions)")


def child_env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def predict_cli(*args):
    """``mtlzoo predict ARGS`` started as a user starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "mtlzoo.cli", "predict", *map(str, args)],
        cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def own_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line and not TF_LOG.match(line)]


@pytest.fixture(scope="module")
def features_model():
    keras.utils.set_random_seed(0)
    return mtlzoo.create_model("hard_sharing", TASKS, {"features": (3,)}, shared_units=[4])


@pytest.fixture(scope="module")
def image_model():
    keras.utils.set_random_seed(0)
    return mtlzoo.create_model(
        "hard_sharing",
        [Task("digit", "classification", num_classes=3)],
        {"image": {"shape": (4, 4, 1), "dtype": "uint8", "scale": 1 / 255}},
        filters=[2],
        shared_units=[4],
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory, features_model, image_model):
    base = tmp_path_factory.mktemp("exports")
    export_saved_model(features_model, base / "features")
    export_saved_model(image_model, base / "image")
    return base


# ---------------------------------------------------------------------------------------------
# 1. Version numbers under concurrent exports

EXPORT_WHEN_TOLD = """
import os, pathlib, sys, time
import keras, mtlzoo
from mtlzoo.serving.export import export_saved_model

model_file, base, ready, go = sys.argv[1:5]
model = keras.saving.load_model(model_file)
pathlib.Path(ready).touch()
deadline = time.monotonic() + 120
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("never told to start")
    time.sleep(0.002)
print(export_saved_model(model, base))
"""


def test_concurrent_exports_to_one_base_each_get_a_version(tmp_path, features_model):
    features_model.save(tmp_path / "model.keras")
    base, go = tmp_path / "models" / "demo", tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EXPORT_WHEN_TOLD, str(tmp_path / "model.keras"), str(base), str(r), str(go)],
            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for r in ready
    ]
    try:
        # Both have imported TensorFlow and loaded the model before either starts exporting.
        deadline = time.monotonic() + 240
        while not all(r.exists() for r in ready):
            assert all(p.poll() is None for p in procs), "an exporter died before the start"
            assert time.monotonic() < deadline, "exporters never got ready"
            time.sleep(0.05)
        go.touch()
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    printed = sorted(out.strip().splitlines()[-1] for out, _ in results)
    assert printed == [str(base / "1"), str(base / "2")]
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # nothing hidden left behind
    x = np.random.default_rng(1).normal(size=(2, 3)).astype("float32")
    want = features_model.predict({"features": x}, verbose=0)
    for version in ("1", "2"):
        got = tf.saved_model.load(str(base / version), tags=["serve"]).signatures["serving_default"](
            features=tf.constant(x)
        )
        np.testing.assert_allclose(got["score"].numpy(), want["score"], atol=1e-5)
        np.testing.assert_allclose(got["kind"].numpy(), want["kind"], atol=1e-5)


class WritesAVersionWhenTraced(keras.layers.Layer):
    """Passes tensors through; while an export traces it, writes ``target`` as another export would."""

    target = None

    def call(self, x):
        if self.target is not None and not tf.executing_eagerly():
            self.target.mkdir(parents=True, exist_ok=True)
            (self.target / "saved_model.pb").write_text("another export's")
        return x

    def compute_output_shape(self, shape):
        return shape


def test_a_version_written_during_an_export_is_never_replaced(tmp_path):
    inputs = keras.Input((3,), name="features")
    intruder = WritesAVersionWhenTraced()
    hidden = intruder(inputs)
    model = mtlzoo.MultiTaskModel(
        inputs={"features": inputs},
        outputs={"kind": keras.layers.Dense(3)(hidden), "score": keras.layers.Dense(1)(hidden)},
        tasks=TASKS,
    )
    base = tmp_path / "models"

    def theirs(version):
        return (base / version / "saved_model.pb").read_bytes() == b"another export's"

    # Version 1 was free when this export started and taken when it finished: it moves on.
    intruder.target = base / "1"
    assert export_saved_model(model, base) == base / "2"
    assert theirs("1") and not theirs("2")
    # An explicit version taken meanwhile is an error, not a replacement.
    intruder.target = base / "5"
    with pytest.raises(FileExistsError, match=r"Version 5 already exists at .*another export wrote it"):
        export_saved_model(model, base, version=5)
    assert theirs("5")
    # Unless replacing was asked for.
    intruder.target = base / "6"
    assert export_saved_model(model, base, version=6, overwrite=True) == base / "6"
    assert not theirs("6")
    tf.saved_model.load(str(base / "6"))
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "5", "6"]


def test_rename_exclusive_claims_a_name_or_fails(tmp_path):
    from mtlzoo.io import rename_exclusive

    def staged(name):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_text(name)
        return tmp_path / name

    rename_exclusive(staged("a"), tmp_path / "1")
    assert (tmp_path / "1" / "saved_model.pb").read_text() == "a" and not (tmp_path / "a").exists()
    (tmp_path / "2").mkdir()  # empty: rename(2) would replace it, so it counts as taken
    (tmp_path / "3").write_text("a file")
    for taken in ("1", "2", "3"):
        with pytest.raises(FileExistsError):
            rename_exclusive(staged(f"b{taken}"), tmp_path / taken)
        assert (tmp_path / f"b{taken}" / "saved_model.pb").exists()
    assert (tmp_path / "1" / "saved_model.pb").read_text() == "a" and (tmp_path / "3").read_text() == "a file"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty directory"):
        rename_exclusive(tmp_path / "empty", tmp_path / "4")
    (tmp_path / "file").write_text("new")
    with pytest.raises(FileExistsError):
        rename_exclusive(tmp_path / "file", tmp_path / "3")
    rename_exclusive(tmp_path / "file", tmp_path / "4")
    assert (tmp_path / "4").read_text() == "new" and not (tmp_path / "file").exists()


# ---------------------------------------------------------------------------------------------
# 2. JSON integers into integer inputs


def request_body(images):
    """A request as ``mtlzoo export`` writes it (``request.json``)."""
    return {"signature_name": "serving_default", "instances": [{"image": image.tolist()} for image in images]}


def test_json_request_feeds_a_uint8_input(tmp_path, exports, image_model):
    want = image_model.predict({"image": IMAGES}, verbose=0)["digit"]
    (tmp_path / "rows.json").write_text(json.dumps(request_body(IMAGES)))
    (tmp_path / "columns.json").write_text(json.dumps({"inputs": {"image": IMAGES.tolist()}}))
    for name in ("rows.json", "columns.json"):
        inputs, signature = read_request(tmp_path / name)
        got = predict_exported(exports / "image", inputs, signature or "serving_default")
        np.testing.assert_allclose(got["digit"], want, atol=1e-5)


@pytest.mark.parametrize(
    "model, value, message",
    [
        ("image", 300, r"input 'image' has value 300, outside the range of uint8 \(0\.\.255\); expected uint8"),
        ("image", -1, r"input 'image' has value -1, outside the range of uint8 \(0\.\.255\)"),
        ("image", 1.5, r"input 'image' has dtype float64; expected uint8 .*\(an integer input takes whole numbers only\)"),
        ("image", True, r"input 'image' has dtype bool; expected uint8 .*\(true/false is not a number\)"),
        ("features", False, r"input 'features' has dtype bool; expected float32 .*\(true/false is not a number\)"),
        ("image", "7", r"input 'image' has dtype <U1; expected uint8 .*\(strings are not numbers\)"),
        ("features", "x", r"input 'features' has dtype <U1; expected float32 .*\(strings are not numbers\)"),
    ],
)
def test_json_values_that_do_not_fit_the_input_are_refused(tmp_path, exports, model, value, message):
    shape = (4, 4, 1) if model == "image" else (3,)
    body = {"instances": [{model: np.full(shape, value, dtype=object).tolist()}]}
    (tmp_path / "request.json").write_text(json.dumps(body))
    inputs, _ = read_request(tmp_path / "request.json")
    with pytest.raises(ServingInputError, match=message):
        predict_exported(exports / model, inputs)


def test_api_integers_are_range_checked_and_bools_refused(exports, image_model):
    want = image_model.predict({"image": IMAGES}, verbose=0)["digit"]
    got = predict_exported(exports / "image", {"image": IMAGES.astype("int64")})
    np.testing.assert_allclose(got["digit"], want, atol=1e-5)
    with pytest.raises(ServingInputError, match="has value 256, outside the range of uint8"):
        predict_exported(exports / "image", {"image": np.full((1, 4, 4, 1), 256)})
    with pytest.raises(ServingInputError, match="has dtype float32; expected uint8"):
        predict_exported(exports / "image", {"image": IMAGES.astype("float32")})
    with pytest.raises(ServingInputError, match=r"has dtype bool; expected float32 .*true/false is not a number"):
        predict_exported(exports / "features", {"features": np.ones((2, 3), bool)})
    # Unchanged: integers feed a float input.
    assert predict_exported(exports / "features", {"features": np.ones((2, 3), "int64")})["score"].shape == (2, 1)


def test_cli_predict_answers_the_request_export_writes_for_uint8(tmp_path, exports, image_model):
    (tmp_path / "request.json").write_text(json.dumps(request_body(IMAGES)))
    proc = predict_cli("--export", exports / "image", "--input", tmp_path / "request.json",
                       "--output", tmp_path / "answer.json")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    got = json.loads((tmp_path / "answer.json").read_text())["outputs"]
    want = image_model.predict({"image": IMAGES}, verbose=0)["digit"]
    np.testing.assert_allclose(got["digit"], want, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 3. Request files that are not what they claim


def write_objects_npz(path):
    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.zeros(3), np.zeros(2)]
    np.savez(path, features=ragged)


def write_truncated_npz(path):
    np.savez(path, features=np.zeros((2, 3), "float32"))
    path.write_bytes(path.read_bytes()[:-40])


BAD_REQUESTS = {
    "ragged_rows.json": ({"instances": [{"features": [1, 2, 3]}, {"features": [1, 2]}]},
                         "input 'features' has rows of different lengths; expected a rectangular array"),
    "ragged_columns.json": ({"inputs": {"features": [[1, 2, 3], [1]]}}, "has rows of different lengths"),
    "nested_dict.json": ({"instances": [{"features": [{"value": 1}, 2, 3]}]},
                         "input 'features' holds a JSON object {\"value\": 1}; expected numbers, true/false or strings"),
    "null.json": ({"instances": [{"features": [None, 2, 3]}]}, "input 'features' holds null"),
    "mixed.json": ({"instances": [{"features": [1, "two", 3]}]}, "input 'features' mixes numbers and strings"),
    "mixed_bools.json": ({"instances": [{"features": [1, True, 3]}]}, "mixes numbers and true/false"),
    "empty_instances.json": ({"instances": []}, "\"instances\" must be a non-empty list"),
    "empty_row.json": ({"instances": [{}]}, "\"instances\" must be a non-empty list"),
    "empty_inputs.json": ({"inputs": {}}, "\"inputs\" must map input names to values"),
    "no_examples.json": ({"inputs": {"features": []}}, "input 'features' has no examples"),
    "objects.npz": (write_objects_npz, "array 'features' holds Python objects (dtype=object"),
    "text.npz": ("features: 1 2 3\n", "is not a zip archive; expected an .npz archive"),
    "truncated.npz": (write_truncated_npz, "is damaged or not written by np.savez"),
    "array.npz": (lambda path: path.write_bytes(np.lib.format.magic(1, 0) + b"not really"),
                  "is not a zip archive"),
    "no_arrays.npz": (lambda path: np.savez(path), "holds no arrays"),
}


def write_bad_request(path, content):
    if callable(content):
        content(path)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_malformed_request_is_an_error_naming_the_file(tmp_path, name):
    content, message = BAD_REQUESTS[name]
    path = tmp_path / name
    write_bad_request(path, content)
    with pytest.raises(ExportError) as error:
        read_request(path)
    text = str(error.value)
    assert text.startswith(repr(str(path))) and message in text and "\n" not in text


def test_cli_predict_malformed_request_is_one_line_and_exit_2(tmp_path, exports):
    # One of each family (JSON values, npz contents, npz container); the rest are checked in-process.
    names = ["ragged_rows.json", "objects.npz", "truncated.npz"]
    for name in names:
        write_bad_request(tmp_path / name, BAD_REQUESTS[name][0])
    # The first as the command runs (a process: exit status, nothing else on stderr), the others in process.
    proc = predict_cli("--export", exports / "features", "--input", tmp_path / names[0])
    out, err = proc.communicate(timeout=300)
    results = [(names[0], proc.returncode, out, err)]
    for name in names[1:]:
        done = cli_here("predict", "--export", exports / "features", "--input", tmp_path / name)
        results.append((name, done.returncode, done.stdout, done.stderr))
    for name, code, out, err in results:
        assert code == 2, err[-3000:]
        assert "Traceback" not in err and out == ""
        expected = f"mtlzoo predict: error: {str(tmp_path / name)!r}"
        assert own_lines(err) == [own_lines(err)[-1]] and own_lines(err)[-1].startswith(expected), err
        assert BAD_REQUESTS[name][1] in err


def test_request_json_stays_valid_after_a_clean_read(tmp_path):
    """A well-formed body still reads as before: names sorted, signature kept, arrays typed."""
    body = {"signature_name": "predict_kind", "instances": [{"b": [1, 2], "a": ["x"]}, {"b": [3, 4], "a": ["y"]}]}
    (tmp_path / "ok.json").write_text(json.dumps(body))
    inputs, signature = read_request(tmp_path / "ok.json")
    assert signature == "predict_kind" and list(inputs) == ["a", "b"]
    assert inputs["b"].dtype == np.int64 and inputs["b"].shape == (2, 2) and inputs["a"].dtype.kind == "U"


def test_npz_request_still_reads(tmp_path):
    np.savez(tmp_path / "x.npz", features=np.ones((2, 3), "float32"), flags=np.array([True, False]))
    inputs, signature = read_request(tmp_path / "x.npz")
    assert signature is None and sorted(inputs) == ["features", "flags"] and inputs["flags"].dtype == bool
