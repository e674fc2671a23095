"""Fine-tuning: new, dropped and replaced tasks on a trained trunk, frozen stages, plain fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo.models import surgery as finetune
from mtlzoo.data import load_dataset
from mtlzoo.tasks import Task

RNG = np.random.default_rng(0)
TASKS = [Task("a", "regression"), Task("b", "binary"), Task("c", "classification", num_classes=3)]


def test_retask_adds_drops_replaces_and_freeze_keeps_the_trunk(tmp_path):
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model("hard_sharing", TASKS, {"features": (6,)}, shared_units=[8, 8])
    tuned = finetune.retask(model, add=[Task("d", "regression", units=2)], drop=["b"], replace=["c"])
    assert [t.name for t in tuned.tasks] == ["a", "c", "d"]
    x = {"features": RNG.normal(size=(16, 6)).astype("float32")}
    before, after = model.predict(x, verbose=0), tuned.predict(x, verbose=0)
    np.testing.assert_array_equal(after["a"], before["a"])  # the kept head is the same layer
    assert not np.allclose(after["c"], before["c"])  # the replaced head is fresh
    assert after["d"].shape == (16, 2)
    assert finetune.freeze(tuned) == ["shared_dense_0", "shared_dense_1"]  # the declared trunk
    assert finetune.freeze(tuned, "shared_*") == ["shared_dense_0", "shared_dense_1"]
    trunk = [w.numpy().copy() for w in tuned.get_layer("shared_dense_0").weights]
    tuned.compile(optimizer=keras.optimizers.Adam(0.01))
    y = {"a": RNG.normal(size=(16, 1)), "c": RNG.integers(0, 3, 16), "d": RNG.normal(size=(16, 2))}
    history = tuned.fit(x, y, epochs=5, verbose=0).history["loss"]
    assert history[-1] < history[0]
    for w, value in zip(tuned.get_layer("shared_dense_0").weights, trunk):
        np.testing.assert_array_equal(w.numpy(), value)
    # It saves, reloads and exports like any zoo model.
    tuned.save(tmp_path / "tuned.keras")
    reloaded = keras.saving.load_model(tmp_path / "tuned.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0)["d"], tuned.predict(x, verbose=0)["d"], atol=1e-6)
    assert reloaded.shared_layer == "shared_dense_1"
    # A file written before models recorded their trunk: the hard-sharing names tell it.
    legacy = {k: v for k, v in tuned.get_config().items() if k != "shared_layer"}
    assert mtlzoo.MultiTaskModel.from_config(legacy).shared_layer == "shared_dense_1"
    path = mtlzoo.export_saved_model(tuned, tmp_path / "export")
    served = tf.saved_model.load(str(path)).signatures["serving_default"](features=tf.constant(x["features"]))
    assert sorted(k for k in served if "_" not in k) == ["a", "c", "d"]
    finetune.unfreeze(tuned)
    assert all(layer.trainable for layer in tuned.layers)


def test_retask_errors_say_what_was_expected():
    model = mtlzoo.create_model("hard_sharing", TASKS, {"features": (6,)}, shared_units=[8])
    with pytest.raises(ValueError, match=r"drop=...\) names unknown task\(s\) \['z'\]"):
        finetune.retask(model, drop=["z"])
    with pytest.raises(ValueError, match=r"would duplicate task\(s\) \['a'\]"):
        finetune.retask(model, add=[Task("a", "regression")])
    with pytest.raises(ValueError, match="without tasks"):
        finetune.retask(model, drop=["a", "b", "c"])
    with pytest.raises(ValueError, match="No layer with weights matches"):
        finetune.freeze(model, "nothing_*")
    columns = mtlzoo.create_model("cross_stitch", TASKS, {"features": (6,)}, units=[8])
    with pytest.raises(ValueError, match="declares no shared representation; pass from_layer="):
        finetune.retask(columns, add=[Task("d", "regression")])
    with pytest.raises(ValueError, match="declares no shared trunk; name the layers"):
        finetune.freeze(columns)


@pytest.mark.slow  # long for the default run; .ci/run runs the slow set
def test_finetuning_the_multimnist_preset_beats_training_from_scratch(data_dir):
    preset = "multimnist_hard_sharing"
    card = mtlzoo.list_pretrained()[preset]
    # Four pairings of 500 training and of the test images (the fixtures hold 600 and 200): 2000
    # training and 800 test canvases, whose labels are the sums of their two digits.
    datasets = [load_dataset("multi_mnist", seed=seed, max_examples=500) for seed in range(4)]

    def canvases_and_sums(split):
        parts = [dataset.load(split) for dataset in datasets]
        images = np.concatenate([arrays.inputs["image"] for arrays in parts])
        sums = np.concatenate([arrays.targets["left"] + arrays.targets["right"] for arrays in parts])
        return {"image": images}, sums.astype("int64")

    (train_x, train_y), (test_x, test_y) = canvases_and_sums("train"), canvases_and_sums("test")
    task = Task("sum", "classification", num_classes=19)
    scores = {}
    for start in ("preset", "scratch"):
        keras.utils.set_random_seed(0)
        if start == "preset":
            model = finetune.retask(mtlzoo.load(preset), add=[task], drop=["left", "right"], head_units=[50])
        else:
            params = card["recipe"]["architecture"]["params"]
            model = mtlzoo.create_model("hard_sharing", [task], datasets[0].input_spec(), **params)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.fit(train_x, {"sum": train_y}, epochs=5, batch_size=32, verbose=0)
        predicted = model.predict(test_x, verbose=0)["sum"].argmax(-1)
        scores[start] = float(np.mean(predicted == test_y))
    # Same data, steps and architecture: the pretrained trunk already reads both digits.
    assert scores["preset"] > scores["scratch"] + 0.15, scores
