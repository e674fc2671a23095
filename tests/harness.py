"""One harness for the save/load contract every mtlzoo model and layer keeps (in the spirit of
keras-hub's ``run_layer_test``): a config round trip, a ``.keras`` reload in this process and in
fresh ones (TensorFlow bit-identical; JAX to float tolerance), and the predictions they give."""

from __future__ import annotations

import copy
import json

import keras
import numpy as np


def fresh_predictions(run_python, tmp_path, models: dict, inputs: dict, *, backend: str = "tensorflow") -> dict:
    """Save each of ``models`` ({name: model}), load it in one fresh Python process running
    ``backend`` and predict ``inputs[name]`` there: ``{name: {output: array}}``. The revived
    models must have their saved class."""
    for name, model in models.items():
        model.save(tmp_path / f"{name}.keras")
        np.savez(tmp_path / f"{name}_x.npz", **inputs[name])
    proc = run_python(
        f"""
        import json, keras, numpy as np
        import mtlzoo  # registers mtlzoo's Keras classes
        types = {{}}
        for name in {sorted(models)!r}:
            model = keras.saving.load_model(f"{{name}}.keras")
            types[name] = type(model).__name__
            np.savez(f"{{name}}_fresh.npz", **model.predict(dict(np.load(f"{{name}}_x.npz")), verbose=0))
        print(json.dumps(types))
        """,
        backend=backend,
    )
    types = json.loads(proc.stdout.strip().splitlines()[-1])
    assert types == {name: type(model).__name__ for name, model in models.items()}
    return {name: dict(np.load(tmp_path / f"{name}_fresh.npz")) for name in models}


def check_model_round_trip(run_python, tmp_path, models: dict, inputs: dict, *, jax: bool = True) -> None:
    """``{name: model}`` keep their class and config through ``get_config``/``from_config`` and
    ``.keras`` files, and predict the same after a reload: in this process and in a fresh
    TensorFlow one bit-identically, in a fresh JAX one to 1e-5."""
    want = {name: model.predict(inputs[name], verbose=0) for name, model in models.items()}
    for name, model in models.items():
        config = model.get_config()
        assert type(model).from_config(copy.deepcopy(config)).get_config() == config, name
        model.save(tmp_path / f"{name}_here.keras")
        again = keras.saving.load_model(tmp_path / f"{name}_here.keras")
        assert type(again) is type(model), name
        for output, value in again.predict(inputs[name], verbose=0).items():
            np.testing.assert_array_equal(value, want[name][output], err_msg=f"{name}/{output} in this process")
    for backend, tolerance in (("tensorflow", 0.0), ("jax", 1e-5))[: 2 if jax else 1]:
        got = fresh_predictions(run_python, tmp_path, models, inputs, backend=backend)
        for name in models:
            assert sorted(got[name]) == sorted(want[name]), name
            for output, value in got[name].items():
                np.testing.assert_allclose(value, want[name][output], rtol=0, atol=tolerance,
                                           err_msg=f"{name}/{output} in a fresh {backend} process")


def check_layer_round_trip(layer: keras.layers.Layer, inputs) -> None:
    """``layer`` keeps its config through ``from_config`` (and JSON), and a copy made from that
    config with the same weights gives the same outputs on ``inputs``."""
    config = layer.get_config()
    assert json.loads(json.dumps(config)) == config, "the config must be plain JSON"
    twin = type(layer).from_config(copy.deepcopy(config))  # Keras wrappers pop keys from the config
    assert twin.get_config() == config
    want = layer(inputs)
    twin(inputs)  # builds it
    twin.set_weights(layer.get_weights())
    for a, b in zip(keras.tree.flatten(twin(inputs)), keras.tree.flatten(want)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
