"""Mixed precision as a recipe option: half-precision compute, float32 weights and outputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from helpers import GENERAL_ARCHITECTURES, default_few, small_recipe_dict
from mtlzoo.recipes.config import ConfigError, recipe_from_dict
from mtlzoo.training import trainer

X = np.random.default_rng(0).normal(size=(3, 20)).astype("float32")


def recipe(architecture="hard_sharing", precision="mixed_float16", epochs=2):
    raw = small_recipe_dict(epochs=epochs, precision=precision)
    raw["architecture"] = {"name": architecture, "params": {}}
    return recipe_from_dict(raw, source="test")


@pytest.mark.parametrize("architecture", default_few(GENERAL_ARCHITECTURES, keep=("hard_sharing", "muir")))
def test_every_architecture_trains_in_mixed_float16_with_loss_scaling(tmp_path, architecture):
    model = trainer.train(recipe(architecture), tmp_path / "run", verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    computes = {layer.dtype_policy.compute_dtype for layer in model.layers if layer.weights}
    assert "float16" in computes
    assert all(w.dtype == "float32" for w in model.weights if "float" in str(w.dtype))
    answers = model.predict({"features": X}, verbose=0)
    assert {str(v.dtype) for v in answers.values()} == {"float32"}
    assert all(np.all(np.isfinite(v)) for v in answers.values())


@pytest.mark.slow  # trains, exports and resumes (17 s); .ci/run runs the slow set
def test_mixed_precision_exports_float32_and_resumes(tmp_path):
    half = recipe(epochs=3)
    trainer.train(half, tmp_path / "run", epochs=2, verbose=0)
    resumed = trainer.train(half, tmp_path / "run", resume=True, verbose=0)
    assert isinstance(resumed.optimizer, keras.optimizers.LossScaleOptimizer)
    path = mtlzoo.export_saved_model(resumed, tmp_path / "export")
    served = tf.saved_model.load(str(path)).signatures["serving_default"](features=tf.constant(X))
    assert {v.dtype for v in served.values()} == {tf.float32}
    np.testing.assert_allclose(served["task_00"].numpy(), resumed.predict({"features": X}, verbose=0)["task_00"],
                               atol=1e-3)
    bf16 = trainer.train(recipe(precision="mixed_bfloat16"), tmp_path / "bf16", verbose=0)
    assert not isinstance(bf16.optimizer, keras.optimizers.LossScaleOptimizer)  # bfloat16 needs none


def test_an_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match=r"training.precision: expected one of \['float32', 'mixed_float16'"):
        recipe(precision="float16")
