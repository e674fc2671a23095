"""`.keras` round trips: bit-identical in a fresh process, and across the TF and JAX backends."""

import json

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.tasks import Task

TASKS = [Task("digit", "classification", num_classes=4), Task("size", "regression", units=2), Task("odd", "binary")]


def trained_model(inputs, **params):
    rng = np.random.default_rng(0)
    shape = next(iter(inputs.values()))
    x = rng.normal(size=(64, *shape)).astype("float32")
    y = {
        "digit": rng.integers(0, 4, 64),
        "size": rng.normal(size=(64, 2)).astype("float32"),
        "odd": rng.integers(0, 2, (64, 1)).astype("float32"),
    }
    keras.utils.set_random_seed(1)
    model = mtlzoo.create_model("hard_sharing", TASKS, inputs, **params)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit({next(iter(inputs)): x}, y, epochs=2, batch_size=16, verbose=0)
    return model, {next(iter(inputs)): x}


@pytest.mark.parametrize(
    "inputs, params",
    [pytest.param({"features": (12,)}, {"shared_units": [16, 8], "head_units": [4]}, id="mlp"),
     pytest.param({"image": (10, 10, 1)}, {"filters": [4, 8], "shared_units": [8]}, id="cnn", marks=pytest.mark.slow)],
)
def test_keras_file_reloads_bit_identically_in_a_fresh_process(tmp_path, run_python, inputs, params):
    model, x = trained_model(inputs, **params)
    model.save(tmp_path / "model.keras")
    name = next(iter(x))
    np.save(tmp_path / "x.npy", x[name])
    for task, value in model.predict(x, verbose=0).items():
        np.save(tmp_path / f"pred_{task}.npy", value)
    np.save(tmp_path / "opt.npy", np.concatenate([np.ravel(v.numpy()) for v in model.optimizer.variables]))
    proc = run_python(
        f"""
        import json, keras, numpy as np
        import mtlzoo  # registers MultiTaskModel
        model = keras.saving.load_model("model.keras")
        preds = model.predict({{"{name}": np.load("x.npy")}}, verbose=0)
        opt = np.concatenate([np.ravel(v.numpy()) for v in model.optimizer.variables])
        print(json.dumps({{
            "identical": {{t: bool(np.array_equal(p, np.load(f"pred_{{t}}.npy"))) for t, p in preds.items()}},
            "optimizer_identical": bool(np.array_equal(opt, np.load("opt.npy"))),
            "iterations": int(model.optimizer.iterations.numpy()),
            "tasks": [t.name for t in model.tasks],
            "type": type(model).__name__,
        }}))
        """
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["identical"] == {"digit": True, "size": True, "odd": True}
    assert result["optimizer_identical"] and result["iterations"] == 8
    assert result["tasks"] == ["digit", "size", "odd"] and result["type"] == "MultiTaskModel"


@pytest.mark.slow
def test_models_move_between_tensorflow_and_jax(tmp_path, run_python):
    model, x = trained_model({"image": (10, 10, 1)}, filters=[4], shared_units=[8])
    model.save(tmp_path / "from_tf.keras")
    np.save(tmp_path / "x.npy", x["image"])
    tf_preds = model.predict(x, verbose=0)
    # In JAX: load the TF-written file, and train a model of its own with the default fit.
    proc = run_python(
        """
        import json, keras, numpy as np
        import mtlzoo
        assert keras.backend.backend() == "jax"
        x = {"image": np.load("x.npy")}
        loaded = keras.saving.load_model("from_tf.keras")
        for task, value in loaded.predict(x, verbose=0).items():
            np.save(f"jax_loaded_{task}.npy", value)
        rng = np.random.default_rng(0)
        y = {"digit": rng.integers(0, 4, 64), "size": rng.normal(size=(64, 2)).astype("float32"),
             "odd": rng.integers(0, 2, (64, 1)).astype("float32")}
        keras.utils.set_random_seed(2)
        model = mtlzoo.create_model("hard_sharing", loaded.tasks, {"image": (10, 10, 1)}, filters=[4], shared_units=[8])
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        history = model.fit(x, y, epochs=8, batch_size=16, verbose=0).history
        model.save("from_jax.keras")
        for task, value in model.predict(x, verbose=0).items():
            np.save(f"jax_{task}.npy", value)
        print(json.dumps({"loss": history["loss"]}))
        """,
        backend="jax",
    )
    loss = json.loads(proc.stdout.strip().splitlines()[-1])["loss"]
    assert loss[-1] < 0.8 * loss[0]
    for task in ("digit", "size", "odd"):
        np.testing.assert_allclose(np.load(tmp_path / f"jax_loaded_{task}.npy"), tf_preds[task], atol=1e-5)
    from_jax = keras.saving.load_model(tmp_path / "from_jax.keras")
    assert isinstance(from_jax, mtlzoo.MultiTaskModel)
    for task, value in from_jax.predict(x, verbose=0).items():
        np.testing.assert_allclose(value, np.load(tmp_path / f"jax_{task}.npy"), atol=1e-5)


@pytest.mark.slow  # a fresh JAX process (12 s); .ci/run runs the slow set
def test_recipe_trains_on_jax_and_the_run_loads_in_tensorflow(tmp_path, run_python):
    from helpers import small_recipe_dict, write_recipe

    write_recipe(tmp_path / "recipe.yaml", small_recipe_dict(epochs=3))
    proc = run_python(
        """
        import json, numpy as np, mtlzoo
        recipe = mtlzoo.load_recipe("recipe.yaml")
        model = mtlzoo.train(recipe, "run", verbose=0)
        data = recipe.make_dataset().load("test")
        np.save("x.npy", data.inputs["features"][:16])
        np.save("pred.npy", model.predict({"features": data.inputs["features"][:16]}, verbose=0)["task_10"])
        print(json.dumps(json.load(open("run/run.json"))))
        """,
        backend="jax",
    )
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["backend"] == "jax" and info["replicas"] == 1
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["loss"][-1] < history["loss"][0]
    _, model = mtlzoo.load_run(tmp_path / "run")
    pred = model.predict({"features": np.load(tmp_path / "x.npy")}, verbose=0)["task_10"]
    np.testing.assert_allclose(pred, np.load(tmp_path / "pred.npy"), atol=1e-5)
