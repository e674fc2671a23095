"""DeepMTS: residual U-Net segmentation plus a cascaded DenseNet survival branch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from harness import check_model_round_trip
from mtlzoo.tasks import Task

TASKS = [Task("tumour", "segmentation"), Task("risk", "survival")]
SMALL = {"levels": 3, "filters": 4, "dense_growth": 4, "dense_layers": 2}
IMAGES_2D = {"pet": (16, 16, 1), "ct": (16, 16, 1)}
IMAGES_3D = {"pet": (8, 8, 8, 1), "ct": (8, 8, 8, 1)}


def data(spec, n=8, seed=0):
    """Random inputs for ``spec``, a 0/1 mask and (time > 0, event) targets."""
    rng = np.random.default_rng(seed)
    x = {name: rng.normal(size=(n, *shape)).astype("float32") for name, shape in spec.items()}
    spatial = next(shape[:-1] for shape in spec.values() if len(shape) > 1)
    y = {
        "tumour": (rng.random((n, *spatial, 1)) > 0.5).astype("float32"),
        "risk": np.stack([rng.uniform(1.0, 10.0, n), rng.integers(0, 2, n)], axis=1).astype("float32"),
    }
    y["risk"][0, 1] = 1.0  # at least one event, so the Cox loss has information
    return x, y


@pytest.fixture(scope="module")
def trained():
    """A 2-D model with clinical covariates, fitted 30 steps on one fixed batch, and its history."""
    keras.utils.set_random_seed(0)
    spec = {**IMAGES_2D, "clinical": (3,)}
    model = mtlzoo.create_model("deep_mts", TASKS, spec, **SMALL)
    model.compile(optimizer="adam")
    x, y = data(spec)
    history = model.fit(x, y, batch_size=8, epochs=30, shuffle=False, verbose=0).history
    return model, x, history


@pytest.mark.parametrize("spec", [IMAGES_2D, IMAGES_3D], ids=["2d", "3d"])
def test_builds_mask_logits_and_a_risk_score(spec):
    model = mtlzoo.create_model("deep_mts", TASKS, spec, **SMALL)
    x, _ = data(spec, n=2)
    out = model.predict(x, verbose=0)
    spatial = spec["pet"][:-1]
    assert out["tumour"].shape == (2, *spatial, 1) and out["risk"].shape == (2, 1)
    assert {str(v.dtype) for v in out.values()} == {"float32"}
    assert model.shared_layer == "unet_down_2_out"  # the bottleneck
    assert model.architecture["name"] == "deep_mts"  # every layer explicitly named: rebuildable


def test_the_densenet_runs_at_full_half_or_quarter_resolution():
    images = {"pet": (64, 64, 1), "ct": (64, 64, 1)}
    models = {res: mtlzoo.create_model("deep_mts", TASKS, images, dense_resolution=res)
              for res in ("full", "half", "quarter")}
    full, half, quarter = models.values()
    assert [m.get_layer("dense_stem_conv").output.shape[1:3] for m in models.values()] == [(64, 64), (32, 32), (16, 16)]
    # All end at the U-Net bottleneck's resolution; pooling the input skips the first blocks.
    assert {m.get_layer("dense_out_relu").output.shape[1:3] for m in models.values()} == {(8, 8)}
    names = {res: {layer.name for layer in m.layers if layer.name[:7] in ("dense_0", "dense_1", "dense_2", "dense_3")}
             for res, m in models.items()}
    assert names["quarter"] < names["half"] < names["full"]
    assert "dense_3_0_conv" in names["full"] - names["half"] and "dense_2_0_conv" in names["half"] - names["quarter"]
    assert full.count_params() == 559_683 and full.count_params() > half.count_params() > quarter.count_params()
    # A 2-level U-Net needs sizes divisible by 2 only; a pool by 4 still gives the one block it keeps.
    small = mtlzoo.create_model("deep_mts", TASKS, {"pet": (6, 6, 1)}, levels=2, dense_resolution="quarter")
    assert small.get_layer("dense_stem_conv").output.shape[1:3] == (2, 2)
    assert small.predict({"pet": np.ones((1, 6, 6, 1), "float32")}, verbose=0)["risk"].shape == (1, 1)
    with pytest.raises(ValueError, match=r"dense_resolution must be one of \['full', 'half', 'quarter'\], got 'eighth'"):
        mtlzoo.create_model("deep_mts", TASKS, images, dense_resolution="eighth")


@pytest.mark.parametrize(
    "tasks, message",
    [
        ([Task("risk", "survival"), Task("grade", "binary")],
         r"'deep_mts' predicts tasks of kind \['segmentation', 'survival'\], not 'grade' \(binary\)"),
        ([*TASKS, Task("grade", "binary")], r"not 'grade' \(binary\); architectures for these tasks: none"),
        ([Task("risk", "survival")], r"one task of kind 'segmentation' .*; got 'risk' \(survival\)"),
        ([Task("a", "segmentation"), Task("b", "segmentation")], r"got 'a' \(segmentation\), 'b' \(segmentation\)"),
        ([*TASKS, Task("os", "survival")], r"at most one of kind 'survival'"),
    ],
)
def test_needs_one_segmentation_and_at_most_one_survival_task(tasks, message):
    with pytest.raises(ValueError, match=message):
        mtlzoo.create_model("deep_mts", tasks, IMAGES_2D, **SMALL)


def test_without_a_survival_task_it_is_the_plain_u_net():
    both = mtlzoo.create_model("deep_mts", TASKS, IMAGES_2D, **SMALL)
    alone = mtlzoo.create_model("deep_mts", TASKS[:1], IMAGES_2D, **SMALL)
    assert list(alone.output) == ["tumour"]
    assert not any(layer.name.startswith(("survival", "dense")) for layer in alone.layers)
    unet = {layer.name for layer in alone.layers}
    assert unet < {layer.name for layer in both.layers}
    # Generic architectures turn dense tasks away with the same kind of message.
    with pytest.raises(ValueError, match=r"architectures for these tasks: \['deep_mts'\]"):
        mtlzoo.create_model("hard_sharing", TASKS, IMAGES_2D)


@pytest.mark.parametrize(
    "spec, levels, message",
    [
        ({"pet": (18, 16, 1)}, 3, r"input 'pet' has spatial shape \(18, 16\).*multiple of 4"),
        ({"ct": (16, 16, 12, 1)}, 4, r"input 'ct' has spatial shape \(16, 16, 12\).*multiple of 8"),
        ({"pet": (16, 16, 1), "ct": (8, 8, 1)}, 3, "share one spatial shape"),
        ({"pet": (16, 16)}, 3, r"image inputs \(H, W, C\).*got \{'pet': \(16, 16\)\}"),
        ({"clinical": (3,)}, 3, "got none"),
    ],
)
def test_input_shapes_are_checked(spec, levels, message):
    with pytest.raises(ValueError, match=message):
        mtlzoo.create_model("deep_mts", TASKS, spec, **{**SMALL, "levels": levels})


@pytest.mark.parametrize("params, message", [({"levels": 1}, "levels must be at least 2"),
                                             ({"upsampling": "bilinear"}, "unknown upsampling"),
                                             ({"dropout": 1.0}, "dropout must be below 1")])
def test_parameters_are_checked(params, message):
    with pytest.raises(ValueError, match=message):
        mtlzoo.create_model("deep_mts", TASKS, IMAGES_2D, **{**SMALL, **params})


def test_images_join_in_sorted_name_order():
    model = mtlzoo.create_model("deep_mts", TASKS, {"pet": (8, 8, 1), "ct": (8, 8, 1)}, levels=2, filters=2)
    joined = model.get_layer("images")
    assert [t.name for t in joined.input] == ["ct", "pet"]


@pytest.mark.slow  # trains the module's model (20 s); .ci/run runs the slow set
def test_trains_with_the_default_losses(trained):
    _, _, history = trained
    for key in ("loss", "tumour_loss", "risk_loss"):
        assert np.all(np.isfinite(history[key])), key
        assert history[key][-1] < history[key][0], key


@pytest.mark.slow  # trains the module's model (20 s); .ci/run runs the slow set
def test_keras_file_reloads_with_identical_predictions(trained, tmp_path):
    model, x, _ = trained
    model.save(tmp_path / "deep_mts.keras")
    again = keras.saving.load_model(tmp_path / "deep_mts.keras")
    assert type(again) is mtlzoo.MultiTaskModel and again.architecture == model.architecture
    want, got = model.predict(x, verbose=0), again.predict(x, verbose=0)
    for task in ("tumour", "risk"):
        np.testing.assert_array_equal(got[task], want[task], err_msg=task)


@pytest.mark.slow  # trains the module's model (20 s); .ci/run runs the slow set
def test_clinical_covariates_move_the_risk_only(trained):
    model, x, _ = trained
    shifted = {**x, "clinical": x["clinical"] + 1.0}
    before, after = model.predict(x, verbose=0), model.predict(shifted, verbose=0)
    np.testing.assert_array_equal(after["tumour"], before["tumour"])
    assert not np.allclose(after["risk"], before["risk"])


@pytest.mark.slow  # trains the module's model (20 s); .ci/run runs the slow set
def test_risk_gradient_reaches_the_segmentation_path(trained):
    model, x, _ = trained
    # The mask head and the decoder feed the risk only through the DenseNet's probability input.
    watched = model.get_layer("tumour").kernel, model.get_layer("unet_dec_0_conv_b").kernel
    with tf.GradientTape() as tape:
        total_risk = tf.reduce_sum(model(x, training=False)["risk"])
    for variable, gradient in zip(watched, tape.gradient(total_risk, watched)):
        assert gradient is not None and float(tf.reduce_max(tf.abs(gradient))) > 0, variable.path


def test_mixed_precision_outputs_stay_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = mtlzoo.create_model("deep_mts", TASKS, IMAGES_2D, **SMALL)
    finally:
        keras.config.set_dtype_policy(previous)
    out = model.predict(data(IMAGES_2D, n=2)[0], verbose=0)
    assert {str(v.dtype) for v in out.values()} == {"float32"}
    assert all(np.all(np.isfinite(v)) for v in out.values())


@pytest.mark.slow
def test_round_trip_in_fresh_tensorflow_and_jax_processes(tmp_path, run_python):
    models, inputs = {}, {}
    for name, spec, upsampling in (("d2", {**IMAGES_2D, "clinical": (3,)}, "transpose"), ("d3", IMAGES_3D, "nearest")):
        keras.utils.set_random_seed(0)
        models[name] = mtlzoo.create_model("deep_mts", TASKS, spec, upsampling=upsampling, **SMALL)
        models[name].compile(optimizer="adam")
        x, y = data(spec)
        models[name].fit(x, y, batch_size=8, epochs=1, verbose=0)
        inputs[name] = x
    check_model_round_trip(run_python, tmp_path, models, inputs)


@pytest.mark.slow
def test_trains_on_jax(run_python):
    run_python(
        f"""
        import keras, numpy as np
        import mtlzoo
        from mtlzoo.tasks import Task
        assert keras.backend.backend() == "jax"
        keras.utils.set_random_seed(0)
        model = mtlzoo.create_model("deep_mts", [Task("tumour", "segmentation"), Task("risk", "survival")],
                                    {{"pet": (8, 8, 8, 1), "ct": (8, 8, 8, 1)}}, **{SMALL!r})
        model.compile(optimizer="adam")
        rng = np.random.default_rng(0)
        x = {{n: rng.normal(size=(8, 8, 8, 8, 1)).astype("float32") for n in ("pet", "ct")}}
        y = {{"tumour": (rng.random((8, 8, 8, 8, 1)) > 0.5).astype("float32"),
              "risk": np.stack([rng.uniform(1, 10, 8), np.ones(8)], 1).astype("float32")}}
        loss = model.fit(x, y, batch_size=8, epochs=10, verbose=0).history["loss"]
        assert np.all(np.isfinite(loss)) and loss[-1] < loss[0], loss
        """,
        backend="jax",
    )
