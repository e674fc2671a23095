"""Survival tasks in training: the Cox loss's risk sets span the global batch under `mirrored`,
the C-index accumulates across replicas, and every weighting method trains a survival task."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo import weighting
from mtlzoo.survival import concordance_index, cox_negative_log_likelihood
from mtlzoo.tasks import Task
from mtlzoo.training.strategies import make_strategy

TASKS = [Task("os", "survival"), Task("size", "regression")]


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype("float32")
    time = np.round(rng.exponential(np.exp(-x[:, 0])), 1) + 0.1
    event = rng.random(n) < 0.6
    return x, {"os": np.stack([time, event], 1).astype("float32"), "size": x[:, 1:2] * 2}


def build(tasks=TASKS):
    keras.utils.set_random_seed(0)
    return mtlzoo.create_model("hard_sharing", tasks, {"features": (5,)}, shared_units=[8])


def test_mirrored_cox_step_uses_the_whole_batch_as_risk_sets():
    x, y = data()
    with make_strategy("mirrored").scope():
        model = build(TASKS[:1])
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit({"features": x}, {"os": y["os"]}, batch_size=64, epochs=1, shuffle=False, verbose=0)
    reference = build(TASKS[:1])
    time, event = y["os"][:, 0], y["os"][:, 1]

    def step(loss_of_risk):
        with tf.GradientTape() as tape:
            loss = loss_of_risk(reference({"features": x})["os"])
        return [v.numpy() - 0.1 * g.numpy() for v, g in zip(reference.trainable_variables,
                                                            tape.gradient(loss, reference.trainable_variables))]

    trained = [v.numpy() for v in model.trainable_variables]
    whole = step(lambda r: cox_negative_log_likelihood(time, event, r))
    halves = step(lambda r: (cox_negative_log_likelihood(time[:32], event[:32], r[:32])
                             + cox_negative_log_likelihood(time[32:], event[32:], r[32:])) / 2)
    assert max(np.abs(a - b).max() for a, b in zip(trained, whole)) < 1e-6
    # The per-replica risk sets would be a measurably different step.
    assert max(np.abs(a - b).max() for a, b in zip(trained, halves)) > 1e-3


def test_mirrored_evaluation_c_index_is_the_whole_sets():
    x, y = data(61, seed=1)  # batches of 16 leave a last batch of 13, split 7 + 6 over the replicas
    with make_strategy("mirrored").scope():
        model = build()
        model.compile(optimizer="adam")
    scores = model.evaluate({"features": x}, y, batch_size=16, verbose=0, return_dict=True)
    risk = model.predict({"features": x}, verbose=0)["os"][:, 0]
    assert scores["os_c_index"] == pytest.approx(concordance_index(y["os"][:, 0], y["os"][:, 1], risk), abs=1e-9)


# The plain sum and a gradient method run by default; the rest in the slow set.
QUICK = ("unitary", "pcgrad")


@pytest.mark.parametrize("method", [m if m in QUICK else pytest.param(m, marks=pytest.mark.slow)
                                    for m in weighting.list_weightings()])
def test_every_weighting_method_trains_a_survival_task(method):
    x, y = data(96, seed=2)
    # Gradient-similarity gating needs an auxiliary task to gate: the size is one there.
    model = build([TASKS[0], Task("size", "regression", role="auxiliary")] if method == "gradient_similarity" else TASKS)
    model.compile(optimizer=keras.optimizers.Adam(0.01), weighting=method)
    weights = {"os": np.ones(96, "float32"), "size": np.ones(96, "float32")}
    weights["os"][::3] = 0.0  # missing survival labels
    history = model.fit({"features": x}, y, sample_weight=weights, batch_size=32, epochs=2, verbose=0)
    losses = history.history["os_loss"]
    assert np.isfinite(losses).all()
    assert np.isfinite(history.history["os_c_index"]).all()


def test_a_gradient_method_under_mirrored_matches_one_device_with_a_survival_task():
    # PCGrad's per-task gradients go through the gathered risk sets' backward pass (vectorised
    # over the tasks); two replicas must still take exactly the one-device steps.
    x, y = data()
    trained = []
    for strategy in (make_strategy("mirrored"), tf.distribute.get_strategy()):
        with strategy.scope():
            model = build()
            model.compile(optimizer=keras.optimizers.SGD(0.05), weighting="pcgrad")
        model.fit({"features": x}, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        trained.append([v.numpy() for v in model.trainable_variables])
    assert max(np.abs(a - b).max() for a, b in zip(*trained)) < 1e-6
