import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.tasks import Task, as_tasks


def test_kind_fixes_output_size_loss_and_metrics():
    cls = Task("digit", "classification", num_classes=10)
    binary = Task("even", "binary")
    multi = Task("tags", "multilabel", num_classes=5)
    reg = Task("age", "regression", units=3)
    assert [t.output_size for t in (cls, binary, multi, reg)] == [10, 1, 5, 3]
    assert isinstance(cls.make_loss(), keras.losses.SparseCategoricalCrossentropy)
    assert isinstance(binary.make_loss(), keras.losses.BinaryCrossentropy)
    assert isinstance(multi.make_loss(), keras.losses.BinaryCrossentropy)
    assert isinstance(reg.make_loss(), keras.losses.MeanSquaredError)
    assert [m.name for m in cls.make_metrics()] == ["accuracy"]
    assert [m.name for m in binary.make_metrics()] == ["accuracy", "auc"]
    assert [m.name for m in reg.make_metrics()] == ["rmse", "mae"]
    # Metric objects hold state: every call gives fresh ones.
    assert cls.make_metrics()[0] is not cls.make_metrics()[0]


def test_default_losses_are_from_logits():
    logits = np.array([[2.0, -1.0, 0.5]], dtype="float32")
    expected = -np.log(np.exp(2.0) / np.exp(logits).sum())
    got = float(Task("c", "classification", num_classes=3).make_loss()(np.array([0]), logits))
    assert got == pytest.approx(expected, rel=1e-5)
    # Binary accuracy thresholds logits at 0 (= probability 0.5).
    acc = Task("b", "binary").make_metrics()[0]
    acc.update_state(np.array([[1.0], [0.0], [1.0]]), np.array([[0.3], [-2.0], [-0.1]]))
    assert float(acc.result()) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="1st", kind="binary"), "invalid"),
        (dict(name="a-b", kind="binary"), "invalid"),
        (dict(name="loss", kind="binary"), "reserved"),
        (dict(name="class", kind="binary"), "reserved"),
        (dict(name="x", kind="ranking"), "unknown kind 'ranking'"),
        (dict(name="x", kind="classification"), "needs num_classes"),
        (dict(name="x", kind="classification", num_classes=1), "needs num_classes"),
        (dict(name="x", kind="binary", num_classes=3), "does not apply"),
        (dict(name="x", kind="binary", units=2), "only to regression"),
        (dict(name="x", kind="regression", units=0), "positive integer"),
        (dict(name="x", kind="regression", weight=-1.0), "weight"),
    ],
)
def test_invalid_tasks_are_rejected_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Task(**kwargs)


def test_as_tasks_accepts_dicts_and_rejects_duplicates():
    tasks = as_tasks([{"name": "a", "kind": "binary"}, Task("b", "regression")])
    assert [t.name for t in tasks] == ["a", "b"]
    with pytest.raises(ValueError, match="repeated"):
        as_tasks([Task("a", "binary"), Task("a", "regression")])
    with pytest.raises(ValueError, match="Unknown task field"):
        as_tasks([{"name": "a", "kind": "binary", "classes": 3}])
    with pytest.raises(ValueError, match="At least one task"):
        as_tasks([])


def test_config_round_trip():
    task = Task("tags", "multilabel", num_classes=4, weight=0.5, metrics=("auc",))
    assert Task.from_config(task.get_config()) == task


def test_compile_with_only_an_optimizer_trains_every_task_with_its_default():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    targets = {
        "digit": (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0),  # 3 classes
        "even": (x[:, 2] > 0).astype("float32")[:, None],
        "tags": (x[:, 3:6] > 0).astype("float32"),
        "age": (x[:, 6:8] @ np.array([[1.0], [-2.0]])).astype("float32"),
    }
    tasks = [
        Task("digit", "classification", num_classes=3),
        Task("even", "binary"),
        Task("tags", "multilabel", num_classes=3),
        Task("age", "regression"),
    ]
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model("hard_sharing", tasks, {"features": (8,)}, shared_units=[32])
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit({"features": x}, targets, epochs=15, batch_size=32, verbose=0).history
    for name in targets:
        assert history[f"{name}_loss"][-1] < 0.5 * history[f"{name}_loss"][0], name
    # The total is the plain sum of the task losses (unitary scalarization).
    logs = model.evaluate({"features": x}, targets, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(sum(logs[f"{n}_loss"] for n in targets), rel=1e-4)
    assert logs["digit_accuracy"] > 0.9 and logs["even_accuracy"] > 0.9 and logs["tags_accuracy"] > 0.9
    assert logs["age_rmse"] < 0.3


def test_task_weights_scale_the_total_loss():
    tasks = [Task("a", "regression", weight=2.0), Task("b", "regression", weight=0.0)]
    model = mtlzoo.create_model("hard_sharing", tasks, {"features": (3,)}, shared_units=[4])
    model.compile(optimizer="sgd")
    x = np.ones((8, 3), "float32")
    y = {"a": np.zeros((8, 1), "float32"), "b": np.full((8, 1), 5.0, "float32")}
    logs = model.evaluate({"features": x}, y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(2.0 * logs["a_loss"], rel=1e-5)
    # keras-hub's spelling of the defaults: loss="auto", metrics="auto".
    model.compile(optimizer="sgd", loss="auto", metrics="auto")
    assert model.evaluate({"features": x}, y, verbose=0, return_dict=True) == pytest.approx(logs)
    with pytest.raises(ValueError, match="unknown task"):
        model.compile(optimizer="sgd", loss={"c": "mse"})


def test_losses_given_by_name_or_function_compile_train_and_reload(tmp_path):
    tasks = [Task("a", "regression"), Task("b", "regression")]
    model = mtlzoo.create_model("hard_sharing", tasks, {"features": (3,)}, shared_units=[4])

    def half_squared(y_true, y_pred):
        return 0.5 * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)

    model.compile(optimizer="sgd", loss={"a": "mae", "b": half_squared})
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = {"a": np.full((8, 1), 2.0, "float32"), "b": np.full((8, 1), -3.0, "float32")}
    model.fit({"features": x}, y, epochs=1, verbose=0)
    logs = model.evaluate({"features": x}, y, verbose=0, return_dict=True)
    out = model.predict({"features": x}, verbose=0)
    assert logs["a_loss"] == pytest.approx(np.mean(np.abs(out["a"] - 2.0)), rel=1e-5)
    assert logs["b_loss"] == pytest.approx(0.5 * np.mean((out["b"] + 3.0) ** 2), rel=1e-5)
    assert [type(loss).__name__ for loss, _ in model.task_loss_functions().values()] == ["FunctionLoss"] * 2
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", custom_objects={"half_squared": half_squared})
    assert reloaded.evaluate({"features": x}, y, verbose=0, return_dict=True) == pytest.approx(logs)
