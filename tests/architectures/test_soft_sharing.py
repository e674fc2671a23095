"""Soft parameter sharing: the task regularisers, the per-task layers, and the architecture."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo.layers import regularizers
from mtlzoo.layers import PerTaskConv2D, PerTaskDense
from mtlzoo.tasks import Task

RNG = np.random.default_rng(0)
STACKED = RNG.normal(size=(3, 4, 5)).astype("float32")  # (tasks, in, out), as PerTaskDense stores it


def value(regularizer, x):
    return float(keras.ops.convert_to_numpy(regularizer(keras.ops.convert_to_tensor(x))))


def test_mean_regularizer_is_the_mean_regularised_mtl_penalty():
    a = STACKED.reshape(3, -1)
    mean = a.mean(axis=0)
    want = 0.5 * (np.sum(mean**2) + 2.0 / 3 * np.sum((a - mean) ** 2))
    assert value(regularizers.MeanRegularizer(0.5, deviation_weight=2.0), STACKED) == pytest.approx(want, rel=1e-5)
    # Equal task weights cost only the size of their mean.
    same = np.repeat(STACKED[:1], 3, axis=0)
    assert value(regularizers.MeanRegularizer(1.0), same) == pytest.approx(np.sum(STACKED[0] ** 2), rel=1e-5)


def test_trace_norm_is_the_sum_of_singular_values():
    want = np.linalg.svd(STACKED.reshape(3, -1), compute_uv=False).sum()
    assert value(regularizers.TraceNormRegularizer(2.0), STACKED) == pytest.approx(2 * want, rel=1e-5)
    # Rank one (every task a multiple of one vector) costs the norm of the stacked matrix.
    rank_one = np.outer([1.0, 2.0, -1.0], STACKED[0].ravel()).reshape(STACKED.shape)
    assert value(regularizers.TraceNormRegularizer(1.0), rank_one) == pytest.approx(
        np.linalg.norm(rank_one), rel=1e-5)


def test_group_lasso_groups_each_weight_across_tasks():
    want = np.sqrt((STACKED.reshape(3, -1) ** 2).sum(axis=0)).sum()
    assert value(regularizers.GroupLasso(1.0), STACKED) == pytest.approx(want, rel=1e-5)
    # On a Dense kernel (features, tasks) the groups are the features: the rows.
    kernel = RNG.normal(size=(6, 3)).astype("float32")
    want_rows = np.linalg.norm(kernel, axis=1).sum()
    assert value(regularizers.GroupLasso(1.0, task_axis=-1), kernel) == pytest.approx(want_rows, rel=1e-5)


@pytest.mark.parametrize("name", sorted(regularizers.REGULARIZERS))
def test_gradients_are_finite_even_at_zero_weights(name):
    regularizer = regularizers.get(name, strength=1.0)
    for start in (STACKED, np.zeros_like(STACKED)):
        w = keras.Variable(start)
        with tf.GradientTape() as tape:
            loss = regularizer(w)
        grad = tape.gradient(loss, w).numpy()
        assert np.all(np.isfinite(grad)), (name, start.any())


@pytest.mark.parametrize("name", sorted(regularizers.REGULARIZERS))
def test_regularizers_serialise_and_reject_bad_settings(name):
    regularizer = regularizers.get(name, strength=0.25, task_axis=-1)
    again = keras.regularizers.deserialize(keras.regularizers.serialize(regularizer))
    assert type(again) is type(regularizer) and again.get_config() == regularizer.get_config()
    with pytest.raises(ValueError, match="strength must be a number >= 0"):
        regularizers.get(name, strength=-1)
    with pytest.raises(ValueError, match="task_axis=3 is out of range for a weight of shape"):
        regularizers.get(name, task_axis=3)(STACKED)
    with pytest.raises(ValueError, match=r"Unknown task regulariser 'l7'; expected one of"):
        regularizers.get("l7")


def test_per_task_layers_compute_one_column_per_task():
    xs = [RNG.normal(size=(4, 6)).astype("float32") for _ in range(2)]
    dense = PerTaskDense(2, 3, activation="relu")
    ys = dense(xs)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in dense.weights)
    assert kernel.shape == (2, 6, 3) and bias.shape == (2, 3)
    assert not np.allclose(kernel[0], kernel[1])  # each column draws its own initial values
    for t in range(2):
        np.testing.assert_allclose(ys[t], np.maximum(xs[t] @ kernel[t] + bias[t], 0), rtol=1e-5, atol=1e-6)
    images = [RNG.normal(size=(2, 5, 5, 3)).astype("float32") for _ in range(2)]
    conv = PerTaskConv2D(2, 4, 3)
    outs = conv(images)
    for t in range(2):
        single = keras.layers.Conv2D(4, 3, padding="same")
        single.build((None, 5, 5, 3))
        single.set_weights([keras.ops.convert_to_numpy(conv.kernel)[t], keras.ops.convert_to_numpy(conv.bias)[t]])
        np.testing.assert_allclose(outs[t], single(images[t]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expects a list of 2 tensors"):
        PerTaskDense(2, 3)(xs[0])


def _column_spread(model):
    """Mean distance of each column's kernel to the columns' mean, over all stacked kernels."""
    spreads = []
    for layer in model.layers:
        if isinstance(layer, (PerTaskDense, PerTaskConv2D)):
            k = keras.ops.convert_to_numpy(layer.kernel).reshape(layer.num_tasks, -1)
            spreads.append(np.linalg.norm(k - k.mean(axis=0), axis=1).mean())
    return float(np.mean(spreads))


def test_soft_sharing_adds_the_penalty_and_pulls_the_columns_together():
    tasks = [Task("a", "regression"), Task("b", "regression")]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 6)).astype("float32")
    y = {"a": x[:, :1] * 2, "b": x[:, 1:2] - x[:, :1]}
    spread = {}
    for strength in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        model = mtlzoo.create_model("soft_sharing", tasks, {"x": (6,)}, units=[16, 16], strength=strength)
        layers = [layer for layer in model.layers if isinstance(layer, PerTaskDense)]
        assert len(model.losses) == len(layers) == 2
        want = sum(value(regularizers.MeanRegularizer(strength), layer.kernel) for layer in layers)
        assert sum(float(keras.ops.convert_to_numpy(v)) for v in model.losses) == pytest.approx(want, rel=1e-5)
        start = _column_spread(model)
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        model.fit({"x": x}, y, epochs=20, batch_size=32, verbose=0)
        spread[strength] = _column_spread(model) / start
    # Without the penalty the independently initialised columns stay apart; with it they converge.
    assert spread[0.0] > 0.8 and spread[1.0] < 0.3 * spread[0.0]


@pytest.mark.slow  # long for the default run; .ci/run runs the slow set
def test_group_lasso_on_a_plain_dense_model_selects_shared_features():
    # Three tasks that all depend on the first 2 of 8 features, from few noisy examples: least
    # squares spreads weight over the other 6 features, the penalty switches whole rows off.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype("float32")
    y = x[:, :2] @ rng.normal(size=(2, 3)).astype("float32") + 0.5 * rng.normal(size=(32, 3)).astype("float32")
    norms = {}
    for strength in (0.0, 0.1):
        keras.utils.set_random_seed(0)
        layer = keras.layers.Dense(3, kernel_regularizer=regularizers.GroupLasso(strength, task_axis=-1))
        model = keras.Sequential([keras.Input((8,)), layer])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        model.fit(x, y, epochs=150, batch_size=32, verbose=0)
        norms[strength] = np.linalg.norm(keras.ops.convert_to_numpy(layer.kernel), axis=1)
    unused = {k: v[2:] for k, v in norms.items()}
    assert unused[0.1].sum() < 0.4 * unused[0.0].sum()
    assert (unused[0.1] < 0.02).sum() >= 3 and (unused[0.0] < 0.02).sum() == 0
    assert norms[0.1][:2].min() > 0.5


def test_bad_soft_sharing_parameters():
    tasks = [Task("a", "regression"), Task("b", "regression")]
    with pytest.raises(ValueError, match=r"unknown regularizer 'l3'; expected one of \['group_lasso', 'mean', 'trace_norm'\]"):
        mtlzoo.create_model("soft_sharing", tasks, {"x": (3,)}, regularizer="l3")
    with pytest.raises(ValueError, match="strength must be a number >= 0"):
        mtlzoo.create_model("soft_sharing", tasks, {"x": (3,)}, strength=-0.1)
