"""SavedModel export for TF Serving: layout, signatures, warmup, and checks as TF Serving reads it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import mtlzoo
from mtlzoo.serving.export import (
    WARMUP_FILE,
    ExportError,
    existing_versions,
    export_saved_model,
    predict_exported,
    read_request,
    warmup_batches,
)
from mtlzoo.tasks import Task
from mtlzoo_client import ServingInputError
from helpers import GENERAL_ARCHITECTURES, default_few

TASKS = [Task("kind", "classification", num_classes=3), Task("score", "regression")]
ALL_KINDS = [
    Task("digit", "classification", num_classes=4),
    Task("odd", "binary"),
    Task("tags", "multilabel", num_classes=3),
    Task("size", "regression", units=2),
]
X = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return mtlzoo.create_model("hard_sharing", TASKS, {"features": (5,)}, shared_units=[8])


@pytest.fixture(scope="module")
def all_kinds():
    keras.utils.set_random_seed(0)
    return mtlzoo.create_model("hard_sharing", ALL_KINDS, {"features": (5,)}, shared_units=[8])


def saved_model_cli() -> str:
    return shutil.which("saved_model_cli") or str(Path(sys.executable).with_name("saved_model_cli"))


def test_export_writes_numbered_versions_for_tf_serving(tmp_path, model):
    base = tmp_path / "models" / "demo"
    assert export_saved_model(model, base) == base / "1"
    assert export_saved_model(model, base) == base / "2"
    assert export_saved_model(model, base, version=7) == base / "7"
    assert existing_versions(base) == [1, 2, 7]
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "7"]  # no temporary leftovers
    signature = tf.saved_model.load(str(base / "7"), tags=["serve"]).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["features"]
    assert signature.structured_input_signature[1]["features"].shape.as_list() == [None, 5]


def test_signatures_answer_every_task_with_derived_outputs(tmp_path, all_kinds):
    path = export_saved_model(all_kinds, tmp_path)
    loaded = tf.saved_model.load(str(path), tags=["serve"])
    assert sorted(loaded.signatures) == [
        "predict_digit", "predict_odd", "predict_size", "predict_tags", "serving_default"
    ]
    got = {k: v.numpy() for k, v in loaded.signatures["serving_default"](features=tf.constant(X)).items()}
    raw = all_kinds.predict({"features": X}, verbose=0)
    assert sorted(got) == sorted([
        "digit", "digit_probabilities", "digit_class_ids",
        "odd", "odd_probabilities", "odd_class_ids",
        "tags", "tags_probabilities", "tags_class_ids",
        "size",
    ])
    for task in raw:
        np.testing.assert_allclose(got[task], raw[task], atol=1e-5)
    softmax = np.exp(raw["digit"]) / np.exp(raw["digit"]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got["digit_probabilities"], softmax, atol=1e-5)
    assert got["digit_class_ids"].dtype == np.int64 and got["digit_class_ids"].shape == (6,)
    np.testing.assert_array_equal(got["digit_class_ids"], raw["digit"].argmax(axis=1))
    np.testing.assert_allclose(got["odd_probabilities"], 1 / (1 + np.exp(-raw["odd"])), atol=1e-5)
    np.testing.assert_array_equal(got["odd_class_ids"], (raw["odd"][:, 0] > 0).astype(np.int64))
    assert got["tags_probabilities"].shape == (6, 3) and got["tags_class_ids"].shape == (6, 3)
    np.testing.assert_array_equal(got["tags_class_ids"], (raw["tags"] > 0).astype(np.int64))
    one = loaded.signatures["predict_odd"](features=tf.constant(X))
    assert sorted(one) == ["odd", "odd_class_ids", "odd_probabilities"]
    assert sorted(loaded.signatures["predict_size"](features=tf.constant(X))) == ["size"]


def test_saved_model_cli_shows_every_signature(tmp_path, all_kinds):
    path = export_saved_model(all_kinds, tmp_path)
    out = subprocess.run(
        [saved_model_cli(), "show", "--dir", str(path), "--all"], capture_output=True, text=True, check=True
    ).stdout
    for signature in ("serving_default", "predict_digit", "predict_odd", "predict_tags", "predict_size"):
        assert f"signature_def['{signature}']" in out
    assert "inputs['features'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 5)" in out
    assert "outputs['digit_class_ids'] tensor_info:\n        dtype: DT_INT64\n        shape: (-1)" in out
    assert "outputs['tags_probabilities'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 3)" in out


# The check TF Serving's side would make: a process that never imports mtlzoo loads the export
# under the `serve` tag, runs every signature and replays every warmup record.
VERIFY_WITHOUT_MTLZOO = """
import json, sys
import numpy as np, tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

path, x_file = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(path, tags=["serve"])
x = dict(np.load(x_file))
answers = {}
for name, fn in loaded.signatures.items():
    answers[name] = {k: v.numpy().tolist() for k, v in fn(**{k: tf.constant(v) for k, v in x.items()}).items()}
replays = []
for record in tf.data.TFRecordDataset(path + "/assets.extra/tf_serving_warmup_requests"):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    feeds = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    out = loaded.signatures[request.model_spec.signature_name](**feeds)
    replays.append({"model": request.model_spec.name, "signature": request.model_spec.signature_name,
                    "batch": int(next(iter(feeds.values())).shape[0]),
                    "finite": all(bool(np.all(np.isfinite(v.numpy()))) for v in out.values())})
assert not any(m == "mtlzoo" or m.startswith("mtlzoo.") for m in sys.modules)
print(json.dumps({"answers": answers, "replays": replays}))
"""


@pytest.mark.parametrize("architecture", default_few(GENERAL_ARCHITECTURES, keep=("hard_sharing",)))
def test_export_verified_as_tf_serving_reads_it(tmp_path, architecture):
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model(architecture, ALL_KINDS, {"features": (5,)})
    sample = np.random.default_rng(1).normal(size=(10, 5)).astype("float32")
    path = export_saved_model(model, tmp_path / "demo", warmup_inputs={"features": sample})
    np.savez(tmp_path / "x.npz", features=X)
    proc = subprocess.run(
        [sys.executable, "-c", VERIFY_WITHOUT_MTLZOO, str(path), str(tmp_path / "x.npz")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = model.predict({"features": X}, verbose=0)
    answers = result["answers"]
    assert sorted(answers) == ["predict_digit", "predict_odd", "predict_size", "predict_tags", "serving_default"]
    for task, value in expected.items():
        np.testing.assert_allclose(answers["serving_default"][task], value, atol=1e-5)
        np.testing.assert_allclose(answers[f"predict_{task}"][task], value, atol=1e-5)
    # Warmup: batch sizes 1, 2, 4, 8 and the whole sample of 10 on serving_default, then one
    # single-example request per task signature; all answered with finite values.
    replays = result["replays"]
    assert [(r["signature"], r["batch"]) for r in replays] == [
        ("serving_default", 1), ("serving_default", 2), ("serving_default", 4), ("serving_default", 8),
        ("serving_default", 10), ("predict_digit", 1), ("predict_odd", 1), ("predict_tags", 1), ("predict_size", 1),
    ]
    assert all(r["finite"] and r["model"] == "demo" for r in replays)


def test_warmup_records_are_capped_and_use_the_real_inputs(tmp_path, model):
    assert warmup_batches(1) == [1] and warmup_batches(5) == [1, 2, 4, 5] and warmup_batches(8) == [1, 2, 4, 8]
    sample = np.arange(15, dtype="float32").reshape(3, 5)
    path = export_saved_model(model, tmp_path, warmup_inputs={"features": sample}, model_name="served")
    records = list(tf.data.TFRecordDataset(str(path / WARMUP_FILE)))
    assert 0 < len(records) <= 1000
    first = prediction_log_pb2.PredictionLog.FromString(records[0].numpy()).predict_log.request
    assert first.model_spec.name == "served"
    np.testing.assert_array_equal(tf.make_ndarray(first.inputs["features"]), sample[:1])


def test_raw_uint8_inputs_are_served_raw(tmp_path):
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model(
        "hard_sharing",
        [Task("digit", "classification", num_classes=10)],
        {"image": {"shape": (8, 8, 1), "dtype": "uint8", "scale": 1 / 255}},
        filters=[4],
        shared_units=[8],
    )
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1)).astype("uint8")
    path = export_saved_model(model, tmp_path, warmup_inputs={"image": images})
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert fn.structured_input_signature[1]["image"].dtype == tf.uint8
    got = fn(image=tf.constant(images))["digit"].numpy()
    np.testing.assert_allclose(got, model.predict({"image": images}, verbose=0)["digit"], atol=1e-5)
    # The model's own rescaling: the same images as floats in [0, 1] give the same logits.
    rescaled = model.get_layer("image_rescale")(images).numpy()
    np.testing.assert_allclose(rescaled, images / 255, atol=1e-6)


def test_existing_versions_are_kept_unless_overwrite(tmp_path, model):
    path = export_saved_model(model, tmp_path, version=1)
    stamp = (path / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="Version 1 already exists"):
        export_saved_model(model, tmp_path, version=1)
    assert (path / "saved_model.pb").stat().st_mtime_ns == stamp
    export_saved_model(model, tmp_path, version=1, overwrite=True)
    assert (path / "saved_model.pb").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


@pytest.mark.parametrize("version", [0, -3, "2", True])
def test_bad_versions_are_rejected(tmp_path, model, version):
    with pytest.raises(ExportError, match="positive integer"):
        export_saved_model(model, tmp_path, version=version)


def test_bad_locations_are_rejected(tmp_path, model):
    (tmp_path / "base").write_text("not a directory")
    with pytest.raises(ExportError, match="not a directory"):
        export_saved_model(model, tmp_path / "base")
    # /proc refuses new directories even to root, so this is unwritable on any Linux.
    with pytest.raises(ExportError, match="Cannot create the export base '/proc/mtlzoo_export'"):
        export_saved_model(model, "/proc/mtlzoo_export")


def test_models_that_cannot_be_served_are_rejected(tmp_path):
    x = keras.Input((4,), name="features")
    listed = keras.Model(x, [keras.layers.Dense(1)(x), keras.layers.Dense(2)(x)])
    with pytest.raises(ExportError, match="dict of outputs keyed by task name"):
        export_saved_model(listed, tmp_path)
    odd_keys = keras.Model({"features": x}, {"my score": keras.layers.Dense(1)(x)})
    with pytest.raises(ExportError, match=r"\['my score'\] cannot be signature keys"):
        export_saved_model(odd_keys, tmp_path)
    clash = mtlzoo.create_model(
        "hard_sharing",
        [Task("kind", "classification", num_classes=3), Task("kind_probabilities", "regression")],
        {"features": (4,)},
    )
    with pytest.raises(ExportError, match=r"\['kind_probabilities'\] would be produced twice"):
        export_saved_model(clash, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "warmup, error, message",
    [
        ({"features": np.zeros((2, 4), "float32")}, ServingInputError,
         r"warmup input 'features' has shape \[2, 4\]; expected float32 with shape \[batch, 5\]"),
        ({"features": np.zeros((2, 5, 1), "float32")}, ServingInputError, r"has shape \[2, 5, 1\]"),
        ({"features": np.array([["a"] * 5])}, ServingInputError, r"has dtype <U1; expected float32 .*strings are not numbers"),
        ({"feature": np.zeros((2, 5), "float32")}, ServingInputError, r"missing \['features'\]; unexpected \['feature'\]"),
        ({"features": np.zeros((0, 5), "float32")}, ExportError, "warmup inputs are empty"),
    ],
)
def test_bad_warmup_inputs_are_rejected_before_writing(tmp_path, model, warmup, error, message):
    with pytest.raises(error, match=message):
        export_saved_model(model, tmp_path, warmup_inputs=warmup)
    assert list(tmp_path.iterdir()) == []


class FailsWhenTraced(keras.layers.Layer):
    """Passes tensors through, except inside a tf.function trace (as during export)."""

    def call(self, x):
        if not tf.executing_eagerly():
            raise RuntimeError("this layer cannot be exported")
        return x

    def compute_output_shape(self, shape):
        return shape


def test_a_failed_export_leaves_nothing_behind(tmp_path, model):
    export_saved_model(model, tmp_path, version=1)
    inputs = keras.Input((5,), name="features")
    hidden = FailsWhenTraced()(inputs)
    fragile = mtlzoo.MultiTaskModel(
        inputs={"features": inputs},
        outputs={"kind": keras.layers.Dense(3)(hidden), "score": keras.layers.Dense(1)(hidden)},
        tasks=TASKS,
    )
    with pytest.raises(RuntimeError, match="cannot be exported"):
        export_saved_model(fragile, tmp_path)
    with pytest.raises(RuntimeError, match="cannot be exported"):
        export_saved_model(fragile, tmp_path, version=1, overwrite=True)
    # Neither a version 2 nor a temporary directory, and version 1 is intact.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
    tf.saved_model.load(str(tmp_path / "1"))


def test_predict_exported_reads_rest_bodies_and_npz(tmp_path, model):
    export_saved_model(model, tmp_path / "base")
    want = model.predict({"features": X[:2]}, verbose=0)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"signature_name": "predict_kind", "instances": [{"features": r} for r in X[:2].tolist()]}))
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps({"inputs": {"features": X[:2].tolist()}}))
    np.savez(tmp_path / "x.npz", features=X[:2])
    for path in (rows, columns, tmp_path / "x.npz"):
        inputs, signature = read_request(path)
        got = predict_exported(tmp_path / "base", inputs)
        np.testing.assert_allclose(got["kind"], want["kind"], atol=1e-5)
        np.testing.assert_allclose(got["score"], want["score"], atol=1e-5)
    assert read_request(rows)[1] == "predict_kind"
    assert sorted(predict_exported(tmp_path / "base" / "1", read_request(rows)[0], "predict_kind")) == [
        "kind", "kind_class_ids", "kind_probabilities"
    ]
    with pytest.raises(ServingInputError, match=r"'features' has shape \[2, 3\]; expected float32 with shape \[batch, 5\]"):
        predict_exported(tmp_path / "base", {"features": np.zeros((2, 3))})
    with pytest.raises(ExportError, match="has no signature 'predict_nothing'"):
        predict_exported(tmp_path / "base", {"features": X}, "predict_nothing")
    with pytest.raises(FileNotFoundError, match="No SavedModel"):
        predict_exported(tmp_path, {"features": X})
    bad = tmp_path / "bad.json"
    for body, message in [
        ("{not json", "not valid JSON"),
        ('{"instances": [], "inputs": {}}', "either \"instances\""),
        ('{"instances": [{"features": [1]}, {"other": [2]}]}', "same input names"),
    ]:
        bad.write_text(body)
        with pytest.raises(ExportError, match=message):
            read_request(bad)


def test_survival_and_segmentation_exports_answer_risk_and_mask_for_the_fusion(tmp_path):
    from mtlzoo import radiomics
    from mtlzoo.data import load_dataset

    dataset = load_dataset("tumour_survival", size=16, num_train=40, num_validation=2, num_test=8)
    train, test = dataset.load("train"), dataset.load("test")
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model("deep_mts", dataset.tasks(), dataset.input_spec(), levels=2, filters=4,
                                dense_growth=4, dense_layers=1)
    path = export_saved_model(model, tmp_path / "tumours", warmup_inputs=dict(test.inputs))
    got = predict_exported(path, dict(test.inputs))
    assert sorted(got) == ["survival", "survival_risk", "tumour", "tumour_mask", "tumour_probabilities"]
    raw = model.predict(dict(test.inputs), verbose=0)
    np.testing.assert_allclose(got["survival_risk"], raw["survival"][:, 0], atol=1e-5)
    assert got["survival_risk"].shape == (8,)
    np.testing.assert_allclose(got["tumour_probabilities"], 1 / (1 + np.exp(-raw["tumour"])), atol=1e-5)
    assert got["tumour_mask"].dtype == np.int64 and got["tumour_mask"].shape == (8, 16, 16, 1)
    np.testing.assert_array_equal(got["tumour_mask"], (raw["tumour"] > 0).astype(np.int64))
    # The second stage reads only the export's answers and the images the client sent.
    train_answers = predict_exported(path, dict(train.inputs))
    target = train.targets["survival"]
    fusion = radiomics.RadiomicsCoxFusion(top_k=2).fit(
        train_answers["survival_risk"], radiomics.feature_table(train.inputs["pet"], train.targets["tumour"]),
        target[:, 0], target[:, 1])
    fused = radiomics.fuse_answers(fusion, got, test.inputs["pet"], "survival")
    expected = fusion.predict(got["survival_risk"], radiomics.feature_table(test.inputs["pet"], got["tumour_mask"]))
    np.testing.assert_allclose(fused, expected)
    assert fused.shape == (8,) and np.isfinite(fused).all()
