"""Contracts every registered architecture keeps: dict outputs, both backends, `.keras` round trips."""


import keras
import numpy as np
import pytest

import mtlzoo
from harness import check_model_round_trip
from helpers import GENERAL_ARCHITECTURES
from mtlzoo.tasks import Task

TASKS = [Task("digit", "classification", num_classes=4), Task("odd", "binary"), Task("size", "regression", units=2)]
INPUTS = {"vector": {"features": (6,)}, "image": {"image": (12, 12, 1)}}
# Small sizes, accepted by every architecture that has these parameters.
SMALL = {"filters": [4, 8], "units": [8], "shared_units": [8], "expert_units": [8], "num_experts": 2,
         "block_shape": [4, 4], "context_size": 2}


def small_params(name):
    accepted = mtlzoo.architectures.registry.get_architecture(name).parameters()
    return {k: v for k, v in SMALL.items() if k in accepted}


def data(inputs, n=32, seed=0):
    rng = np.random.default_rng(seed)
    (name, shape), = inputs.items()
    x = {name: rng.normal(size=(n, *shape)).astype("float32")}
    y = {
        "digit": rng.integers(0, 4, n),
        "odd": rng.integers(0, 2, (n, 1)).astype("float32"),
        "size": rng.normal(size=(n, 2)).astype("float32"),
    }
    return x, y


@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize("architecture", GENERAL_ARCHITECTURES)
def test_builds_dict_outputs_and_trains(architecture, kind):
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model(architecture, TASKS, INPUTS[kind], **small_params(architecture))
    assert isinstance(model, mtlzoo.MultiTaskModel)
    assert [t.name for t in model.inputs] == list(INPUTS[kind])
    assert sorted(model.output) == ["digit", "odd", "size"]
    assert {k: v.shape[-1] for k, v in model.output.items()} == {"digit": 4, "odd": 1, "size": 2}
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    x, y = data(INPUTS[kind])
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < history[0]


@pytest.mark.parametrize("architecture", mtlzoo.list_models())
def test_unknown_parameters_name_what_is_accepted(architecture):
    with pytest.raises(ValueError, match="bogus") as info:
        mtlzoo.create_model(architecture, TASKS, INPUTS["vector"], bogus=1)
    accepted = mtlzoo.architectures.registry.get_architecture(architecture).parameters()
    assert str(info.value).endswith(f"it accepts {sorted(accepted)}.") and len(accepted) >= 5


@pytest.mark.slow
def test_every_architecture_keeps_the_model_round_trip_contract(tmp_path, run_python):
    """Config round trip, .keras reload here and in fresh TensorFlow (bit-identical) and JAX processes."""
    x, y = data(INPUTS["image"])
    models = {}
    for name in GENERAL_ARCHITECTURES:
        keras.utils.set_random_seed(0)
        model = mtlzoo.create_model(name, TASKS, INPUTS["image"], **small_params(name))
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        models[name] = model
    check_model_round_trip(run_python, tmp_path, models, {name: x for name in models})


@pytest.mark.slow
def test_models_trained_on_jax_load_in_tensorflow(tmp_path, run_python):
    run_python(
        f"""
        import keras, numpy as np
        import mtlzoo
        from mtlzoo.tasks import Task
        assert keras.backend.backend() == "jax"
        tasks = [Task("digit", "classification", num_classes=4), Task("odd", "binary"),
                 Task("size", "regression", units=2)]
        small = {SMALL!r}
        rng = np.random.default_rng(0)
        x = {{"image": rng.normal(size=(32, 12, 12, 1)).astype("float32")}}
        y = {{"digit": rng.integers(0, 4, 32), "odd": rng.integers(0, 2, (32, 1)).astype("float32"),
              "size": rng.normal(size=(32, 2)).astype("float32")}}
        np.save("x.npy", x["image"])
        for name in {GENERAL_ARCHITECTURES!r}:
            accepted = mtlzoo.architectures.registry.get_architecture(name).parameters()
            keras.utils.set_random_seed(0)
            model = mtlzoo.create_model(name, tasks, {{"image": (12, 12, 1)}},
                                        **{{k: v for k, v in small.items() if k in accepted}})
            model.compile(optimizer=keras.optimizers.Adam(0.01))
            model.fit(x, y, epochs=1, batch_size=16, verbose=0)
            model.save(f"{{name}}.keras")
            np.savez(f"{{name}}.npz", **model.predict(x, verbose=0))
        """,
        backend="jax",
    )
    x = {"image": np.load(tmp_path / "x.npy")}
    for name in GENERAL_ARCHITECTURES:
        model = keras.saving.load_model(tmp_path / f"{name}.keras")
        want = np.load(tmp_path / f"{name}.npz")
        for task, value in model.predict(x, verbose=0).items():
            np.testing.assert_allclose(value, want[task], atol=1e-5, err_msg=f"{name}/{task}")
