"""Cross-stitch networks: the unit's arithmetic, its coefficients, placement and initialisation."""

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.architectures.cross_stitch import stitch_alphas
from mtlzoo.layers import CrossStitch
from mtlzoo.tasks import Task

TASKS = [Task("a", "classification", num_classes=3), Task("b", "regression")]
IMAGE = {"image": (12, 12, 1)}


def test_initial_coefficients_are_normalised_per_task():
    two = CrossStitch(2).initial_alphas(channels=3)
    np.testing.assert_allclose(two[:, :, 0], [[0.9, 0.1], [0.1, 0.9]], atol=1e-7)
    three = CrossStitch(3, self_weight=0.9, other_weight=0.1).initial_alphas(channels=2)
    np.testing.assert_allclose(three[:, :, 1], np.where(np.eye(3), 0.9, 0.1) / 1.1, atol=1e-7)
    np.testing.assert_allclose(three.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("shape", [(5, 4), (5, 3, 3, 4)], ids=["dense", "conv"])
def test_each_task_takes_a_per_channel_mix_of_all_columns(shape):
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=shape).astype("float32") for _ in range(3)]
    unit = CrossStitch(3)
    unit.build([shape] * 3)
    alpha = rng.normal(size=(3, 3, shape[-1])).astype("float32")
    unit.kernel.assign(alpha)
    got = [keras.ops.convert_to_numpy(y) for y in unit(xs)]
    for i in range(3):
        want = sum(alpha[i, j] * xs[j] for j in range(3))  # broadcast over the channel axis
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(unit.alphas(), alpha)


def test_alpha_lr_multiplier_scales_adam_steps_of_the_coefficients():
    steps = {}
    for multiplier in (1.0, 100.0):
        inputs = [keras.Input((4,)), keras.Input((4,))]
        unit = CrossStitch(2, alpha_lr_multiplier=multiplier)
        outputs = unit(inputs)
        model = keras.Model(inputs, keras.layers.Add()(outputs))
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
        rng = np.random.default_rng(0)
        x = [rng.normal(size=(8, 4)).astype("float32") for _ in range(2)]
        before = unit.alphas()
        np.testing.assert_allclose(before[:, :, 0], [[0.9, 0.1], [0.1, 0.9]], atol=1e-6)
        model.train_on_batch(x, rng.normal(size=(8, 4)).astype("float32"))
        steps[multiplier] = np.abs(unit.alphas() - before)
    # Adam's first step moves every stored coefficient by about the learning rate whatever its
    # gradient's scale, so the effective coefficients move `multiplier` times further.
    np.testing.assert_allclose(steps[100.0] / steps[1.0], 100.0, rtol=0.02)


def test_stitch_placement_and_learned_coefficients():
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model("cross_stitch", TASKS, IMAGE, filters=[4, 8], units=[8],
                                stitch_after=["conv_1", "dense_0"])
    assert sorted(stitch_alphas(model)) == ["cross_stitch_conv_1", "cross_stitch_dense_0"]
    before = stitch_alphas(model)
    assert before["cross_stitch_conv_1"].shape == (2, 2, 8)
    rng = np.random.default_rng(0)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit({"image": rng.normal(size=(32, 12, 12, 1))},
              {"a": rng.integers(0, 3, 32), "b": rng.normal(size=(32, 1))}, epochs=2, verbose=0)
    after = stitch_alphas(model)
    for name in before:
        assert np.abs(after[name] - before[name]).max() > 1e-3
    assert model.get_layer("cross_stitch_dense_0").alphas().shape == (2, 2, 8)
    with pytest.raises(ValueError, match="has no CrossStitch layer"):
        stitch_alphas(mtlzoo.create_model("hard_sharing", TASKS, IMAGE))


def test_bad_placements_and_coefficients_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['conv_5'\].*\['conv_0', 'conv_1', 'dense_0'\]"):
        mtlzoo.create_model("cross_stitch", TASKS, IMAGE, filters=[4, 8], units=[8], stitch_after=["conv_5"])
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['conv_0'\].*mlp column.*\['dense_0'\]"):
        mtlzoo.create_model("cross_stitch", TASKS, {"x": (3,)}, units=[8], stitch_after=["conv_0"])
    with pytest.raises(ValueError, match="stitch_after must be a list of stage names"):
        mtlzoo.create_model("cross_stitch", TASKS, IMAGE, stitch_after="conv_0")
    with pytest.raises(ValueError, match="self_weight must be a number >= 0"):
        mtlzoo.create_model("cross_stitch", TASKS, IMAGE, self_weight=-1.0)
    with pytest.raises(ValueError, match="alpha_lr_multiplier must be a number > 0"):
        mtlzoo.create_model("cross_stitch", TASKS, IMAGE, alpha_lr_multiplier=0)
    with pytest.raises(ValueError, match=r"init_from names unknown task\(s\) \['c'\]"):
        mtlzoo.create_model("cross_stitch", TASKS, IMAGE, init_from={"c": "x.keras"})


def _single_task_models(tmp_path, **params):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 12, 12, 1)).astype("float32")
    paths = {}
    for task, y in zip(TASKS, (rng.integers(0, 3, 32), rng.normal(size=(32, 1)))):
        keras.utils.set_random_seed(len(paths))
        model = mtlzoo.create_model("hard_sharing", [task], IMAGE, **params)
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        model.fit({"image": x}, {task.name: y}, epochs=1, verbose=0)
        paths[task.name] = tmp_path / f"{task.name}.keras"
        model.save(paths[task.name])
    return paths, x


def test_columns_start_from_trained_single_task_models(tmp_path):
    paths, x = _single_task_models(tmp_path, filters=[4, 8], shared_units=[8], head_units=[5])
    # With identity coefficients each column computes exactly its single-task network.
    model = mtlzoo.create_model(
        "cross_stitch", TASKS, IMAGE, filters=[4, 8], units=[8], head_units=[5],
        self_weight=1.0, other_weight=0.0, init_from={k: str(v) for k, v in paths.items()},
    )
    got = model.predict({"image": x}, verbose=0)
    for task in TASKS:
        single = keras.saving.load_model(paths[task.name])
        want = single.predict({"image": x}, verbose=0)[task.name]
        np.testing.assert_allclose(got[task.name], want, rtol=1e-5, atol=1e-5)
    # The default coefficients mix the columns, so the answers move away from the single models.
    mixed = mtlzoo.create_model("cross_stitch", TASKS, IMAGE, filters=[4, 8], units=[8], head_units=[5],
                                init_from={k: str(v) for k, v in paths.items()})
    assert not np.allclose(mixed.predict({"image": x}, verbose=0)["b"], got["b"], atol=1e-4)


def test_init_from_a_mismatched_model_names_the_layer_and_shapes(tmp_path):
    paths, _ = _single_task_models(tmp_path, filters=[4, 8], shared_units=[8])
    expected = r"'shared_conv_1' has weights of shape \(3, 3, 4, 8\); the column expects \(3, 3, 4, 16\)"
    with pytest.raises(ValueError, match=expected):
        mtlzoo.create_model("cross_stitch", TASKS, IMAGE, filters=[4, 16], units=[8], init_from={"a": str(paths["a"])})
    with pytest.raises(ValueError, match=r"shared trunk of 3 layers with weights .*; a column has 4"):
        mtlzoo.create_model("cross_stitch", TASKS, IMAGE, filters=[4, 8, 8], units=[8], init_from={"a": str(paths["a"])})
    with pytest.raises(FileNotFoundError, match="init_from\\['a'\\] = 'missing.keras' does not exist"):
        mtlzoo.create_model("cross_stitch", TASKS, IMAGE, init_from={"a": "missing.keras"})
