"""A .keras file stores the architecture and parameters that rebuild the model, not its graph."""

import json
import zipfile

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.models import surgery
from helpers import default_few

TASKS = [mtlzoo.Task("a", "regression"), mtlzoo.Task("b", "classification", num_classes=3)]


def _config(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


@pytest.mark.parametrize(
    "architecture", default_few(["hard_sharing", "cross_stitch", "mmoe", "muir"], keep=("hard_sharing",))
)
def test_a_zoo_model_saves_its_recipe_and_loads_through_the_registry(architecture, tmp_path, run_python):
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model(architecture, TASKS, {"x": (6,)}, head_units=[4])
    x = {"x": np.random.default_rng(0).normal(size=(5, 6)).astype("float32")}
    model.save(tmp_path / "m.keras")
    config = _config(tmp_path / "m.keras")["config"]
    assert "layers" not in config
    assert config["architecture"] == {"name": architecture, "params": {"head_units": [4]}, "inputs": {"x": [6]},
                                      "dtype_policy": "float32"}
    by_hand = mtlzoo.MultiTaskModel(inputs=model.input, outputs=model.output, tasks=model.tasks)
    graph_bytes = len(json.dumps(by_hand.get_config()))  # the same graph, stored whole
    assert len(json.dumps(config)) < graph_bytes / 5
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert [l.name for l in reloaded.layers] == [l.name for l in model.layers]
    assert reloaded.architecture == model.architecture and reloaded.shared_layer == model.shared_layer
    np.testing.assert_allclose(reloaded.predict(x, verbose=0)["b"], model.predict(x, verbose=0)["b"], atol=1e-6)
    np.save(tmp_path / "x.npy", x["x"])
    np.save(tmp_path / "want.npy", model.predict(x, verbose=0)["b"])
    run_python("""
        import keras, numpy as np, mtlzoo
        model = keras.saving.load_model("m.keras")
        got = model.predict({"x": np.load("x.npy")}, verbose=0)["b"]
        np.testing.assert_allclose(got, np.load("want.npy"), atol=1e-5)
    """, backend="jax")


def test_a_changed_model_keeps_its_graph_and_old_files_still_load(tmp_path):
    model = mtlzoo.create_model("hard_sharing", TASKS, {"x": (6,)}, shared_units=[8])
    surgery.freeze(model)  # frozen layers are not what the recipe builds
    model.save(tmp_path / "frozen.keras")
    assert "layers" in _config(tmp_path / "frozen.keras")["config"]
    assert not keras.saving.load_model(tmp_path / "frozen.keras").get_layer("shared_dense_0").trainable
    tuned = surgery.retask(mtlzoo.create_model("hard_sharing", TASKS, {"x": (6,)}), drop=["b"])
    assert tuned.architecture is None  # built by hand: the graph is the only description
    tuned.save(tmp_path / "tuned.keras")
    assert "layers" in _config(tmp_path / "tuned.keras")["config"]
    assert [t.name for t in keras.saving.load_model(tmp_path / "tuned.keras").tasks] == ["a"]


def test_a_file_naming_an_unregistered_architecture_says_so(tmp_path):
    config = mtlzoo.create_model("hard_sharing", TASKS, {"x": (6,)}).get_config()
    config["architecture"]["name"] = "not_here"
    with pytest.raises(ValueError, match="saved from architecture 'not_here', which is not registered here"):
        mtlzoo.MultiTaskModel.from_config(config)


def test_mixed_precision_is_rebuilt_as_saved(tmp_path):
    from mtlzoo.training.trainer import precision

    with precision("mixed_bfloat16"):
        model = mtlzoo.create_model("hard_sharing", TASKS, {"x": (6,)})
    model.save(tmp_path / "m.keras")
    assert _config(tmp_path / "m.keras")["config"]["architecture"]["dtype_policy"] == "mixed_bfloat16"
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert reloaded.get_layer("shared_dense_0").dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
