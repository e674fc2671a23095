"""Auxiliary and adversarial tasks: roles, gradient reversal and confusion, reconstruction heads, privileged
targets, gradient-similarity gating, partial labels, and what export and evaluation make of them."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import mtlzoo
from mtlzoo import weighting
from mtlzoo.data.base import MultiTaskArrays, missing_labels
from mtlzoo.data.files import DataIntegrityError
from mtlzoo.layers import Confusion, GradientReversal, StopGradient
from mtlzoo.layers.adversary import ramp, uniform_cross_entropy
from mtlzoo.models import drop_auxiliary
from mtlzoo.serving.export import export_saved_model, predict_exported
from mtlzoo.tasks import Task
from mtlzoo.training.strategies import make_strategy
from conftest import REPO
from helpers import default_few

INPUTS = {"image": {"shape": (8, 8, 1), "dtype": "uint8", "scale": 1 / 255}}
TASKS = [
    Task("left", "classification", num_classes=4),
    Task("right", "classification", num_classes=4, role="auxiliary"),
    Task("hidden", "classification", num_classes=3, role="adversarial", reversal="constant", reversal_strength=0.5),
    Task("image_rec", "reconstruction", input="image"),
]
# A second adversary, of the other kind: the tests of training, saving and export run both.
CONFUSED = Task("secret", "classification", num_classes=5, role="adversarial", adversary="confusion",
                reversal="constant", reversal_strength=0.7, head_units=[6, 5])
BOTH = [*TASKS, CONFUSED]


def build(tasks=TASKS, **params):
    keras.utils.set_random_seed(0)
    return mtlzoo.create_model("hard_sharing", tasks, INPUTS, filters=[4], shared_units=[12], **params)


def data(n=48, seed=0, tasks=TASKS):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (n, 8, 8, 1)).astype("uint8")
    y = {"left": (image[:, :4].mean(axis=(1, 2, 3)) > 127).astype("int64") + 2 * (rng.random(n) < 0.5),
         "right": rng.integers(0, 4, n), "hidden": rng.integers(0, 3, n),
         "image_rec": image.astype("float32") / 255, "secret": image[:, 0, 0, 0].astype("int64") % 5}
    return {"image": image}, {t.name: y[t.name] for t in tasks}


# --- Tasks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "t", "kind": "binary", "role": "helper"}, "unknown role 'helper'"),
    ({"name": "t", "kind": "reconstruction"}, "needs input="),
    ({"name": "t", "kind": "reconstruction", "input": "x", "role": "main"}, "a reconstruction task is auxiliary"),
    ({"name": "t", "kind": "binary", "input": "x"}, "input applies only to reconstruction"),
    ({"name": "t", "kind": "binary", "head_units": [8]}, "head_units applies to adversarial and reconstruction"),
    ({"name": "t", "kind": "binary", "role": "adversarial", "head_units": [0]}, "list of positive integers"),
    ({"name": "t", "kind": "binary", "reversal": "ramp"}, "reversal applies only to adversarial"),
    ({"name": "t", "kind": "binary", "role": "adversarial", "reversal": "linear"}, "unknown reversal 'linear'"),
    ({"name": "t", "kind": "binary", "adversary": "confusion"}, "adversary applies only to adversarial"),
    ({"name": "t", "kind": "binary", "role": "adversarial", "adversary": "uniform"},
     r"unknown adversary 'uniform'; expected one of \['reversal', 'confusion'\]"),
    ({"name": "t", "kind": "binary", "role": "adversarial", "reversal_strength": -1},
     "reversal_strength must be a number >= 0"),
    ({"name": "t", "kind": "reconstruction", "input": "x", "loss": "dice"},
     "unknown reconstruction loss 'dice'"),
])
def test_bad_roles_and_auxiliary_fields_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Task(**kwargs)


def test_a_model_needs_a_main_task():
    with pytest.raises(ValueError, match="At least one task must have role 'main'"):
        build([Task("a", "binary", role="auxiliary")])


def test_task_configs_keep_roles_and_leave_defaults_out():
    assert Task("a", "binary").get_config() == {"name": "a", "kind": "binary", "num_classes": None, "units": 1,
                                                "weight": 1.0, "loss": None, "metrics": None}
    assert "role" not in Task("r", "reconstruction", input="x").get_config()
    assert Task("r", "reconstruction", input="x").role == "auxiliary"
    for task in TASKS:
        assert Task.from_config(task.get_config()) == task


# --- Gradient reversal ----------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["constant", "ramp"])
def test_gradient_reversal_is_the_identity_forward_and_minus_lambda_backward(schedule):
    layer = GradientReversal(schedule, strength=2.0)
    x = tf.constant(np.random.default_rng(0).normal(size=(5, 3)).astype("float32") * 1e3)
    layer.build(x.shape)
    layer.total_steps.assign(10.0)
    for step in range(1, 13):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(3, dtype="float32"))
        np.testing.assert_array_equal(y.numpy(), x.numpy())  # exactly, even for large values
        expected = 2.0 if schedule == "constant" else 2.0 * (2 / (1 + math.exp(-10 * min(step / 10, 1))) - 1)
        np.testing.assert_allclose(tape.gradient(loss, x).numpy(), -expected * np.tile([0, 1, 2], (5, 1)), rtol=1e-6)
    assert float(layer.step) == 12.0
    layer(x, training=False)
    assert float(layer.step) == 12.0  # inference does not advance the schedule


def test_the_ramp_starts_at_zero_and_ends_near_the_strength():
    assert float(ramp(0.0, 1.0)) == 0.0
    assert float(ramp(1.0, 3.0)) == pytest.approx(3.0 * (2 / (1 + math.exp(-10)) - 1))
    assert float(ramp(0.5, 1.0)) == pytest.approx(0.98661, abs=1e-5)


def test_fit_sets_the_ramp_over_the_whole_fit():
    model = build()
    model.compile(optimizer="adam")
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)  # 9 steps
    layer = model.get_layer("hidden_reversal")
    assert (float(layer.step), float(layer.total_steps)) == (9.0, 9.0)
    assert layer.schedule == "constant" and float(layer.current_strength()) == 0.5


def test_the_trunk_gets_the_adversarys_gradient_reversed():
    """The adversarial loss's gradient at the shared representation is -strength times what
    the same head would send back without the reversal layer."""
    model = build([TASKS[0], TASKS[2]])
    x, y = data()
    trunk = keras.Model(model.inputs, model.shared_representation)
    reversal, head = model.get_layer("hidden_reversal"), keras.Sequential(
        [model.get_layer("hidden_head_dense_0"), model.get_layer("hidden")])
    z = tf.constant(trunk(x))
    loss_fn = TASKS[2].make_loss()
    grads = []
    for through_reversal in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(z)
            logits = head(reversal(z) if through_reversal else z)
            loss = loss_fn(y["hidden"], logits)
        grads.append(tape.gradient(loss, z).numpy())
    assert np.abs(grads[1]).max() > 1e-4
    np.testing.assert_allclose(grads[0], -0.5 * grads[1], rtol=1e-5, atol=1e-9)


def test_confusion_returns_the_stopped_logits_and_adds_a_loss_that_is_zero_going_forward():
    layer = Confusion("ramp", strength=2.0)
    rng = np.random.default_rng(0)
    stopped = tf.constant(rng.normal(size=(6, 4)).astype("float32") * 50)
    live = tf.identity(stopped)
    layer.build([stopped.shape, live.shape])
    out = layer([stopped, live], training=True)
    np.testing.assert_array_equal(out.numpy(), stopped.numpy())
    assert len(layer.losses) == 1 and float(layer.losses[0]) == 0.0 and float(layer.step) == 1.0
    layer([stopped, live], training=False)
    assert layer.losses == [] and float(layer.step) == 1.0  # inference neither adds nor advances
    # The cross-entropy from uniform, against log-softmax written out: log C at a uniform
    # prediction, and finite for logits far apart.
    z = np.array([[0.0, 0, 0, 0], [1e4, -1e4, 0, 3]], "float32")
    log_p = z - np.max(z, 1, keepdims=True) - np.log(np.exp(z - np.max(z, 1, keepdims=True)).sum(1, keepdims=True))
    assert float(uniform_cross_entropy(z)) == pytest.approx(float(np.mean(-log_p.mean(1))), rel=1e-6)
    assert float(uniform_cross_entropy(z[:1])) == pytest.approx(math.log(4), rel=1e-6)


def test_confusion_trains_the_head_on_the_labels_and_the_trunk_toward_uniform():
    """Through the model: the head's weights get exactly the task loss's gradient, and the shared
    representation gets exactly strength x the gradient of the head's cross-entropy from uniform
    (none of the task loss's)."""
    model = build([TASKS[0], CONFUSED])
    x, y = data(tasks=[TASKS[0], CONFUSED])
    trunk = keras.Model(model.inputs, model.shared_representation)
    heads = keras.Model(model.shared_representation, model.output["secret"])
    head_layers = [model.get_layer(n) for n in ("secret_head_dense_0", "secret_head_dense_1", "secret")]
    head = keras.Sequential(head_layers)
    z = tf.constant(trunk(x))
    loss_fn = CONFUSED.make_loss()
    head_weights = [w.value for layer in head_layers for w in layer.trainable_weights]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        logits = heads(z, training=True)
        total = loss_fn(y["secret"], logits) + sum(heads.losses)
        reference_task = loss_fn(y["secret"], head(z))
        p = tf.nn.log_softmax(head(z))
        reference_uniform = -tf.reduce_mean(p)
    assert float(total) == pytest.approx(float(reference_task), rel=1e-6)
    for got, want in zip(tape.gradient(total, head_weights), tape.gradient(reference_task, head_weights)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)
    want = 0.7 * tape.gradient(reference_uniform, z).numpy()
    assert np.abs(want).max() > 1e-5
    np.testing.assert_allclose(tape.gradient(total, z).numpy(), want, rtol=1e-4, atol=1e-8)


@pytest.mark.slow
def test_confusion_hides_a_label_that_reversal_and_the_plain_trunk_keep():
    """A label written plainly in one input feature: a probe trained afterwards on the frozen
    representation reads it from a trunk trained on the main task alone, still reads it well
    after gradient reversal (the trunk can fool the adversary it trains with), and is near
    chance (25 %) after confusion; the main task stays learnt throughout."""
    rng = np.random.default_rng(0)
    n = 1200
    features = rng.normal(size=(n, 8)).astype("float32")
    secret = rng.integers(0, 4, n)
    features[:, 6] += 4.0 * secret
    main = (features[:, :3].sum(axis=1) > 0).astype("int64")
    y = {"main": main[:800, None].astype("float32"), "secret": secret[:800]}
    probe_scores = {}
    for adversary in (None, "reversal", "confusion"):
        tasks = [Task("main", "binary")]
        if adversary:
            tasks.append(Task("secret", "classification", num_classes=4, role="adversarial", adversary=adversary,
                              reversal="constant", head_units=[32]))
        keras.utils.set_random_seed(0)
        model = mtlzoo.create_model("hard_sharing", tasks, {"x": {"shape": (8,), "dtype": "float32"}},
                                    shared_units=[16])
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        model.fit({"x": features[:800]}, {t.name: y[t.name] for t in tasks}, batch_size=64, epochs=30, verbose=0)
        main_logits = model.predict({"x": features[800:]}, verbose=0)["main"][:, 0]
        assert np.mean((main_logits > 0) == main[800:]) > 0.95, adversary
        representation = keras.Model(model.inputs, model.shared_representation).predict(features, verbose=0)
        keras.utils.set_random_seed(1)
        probe = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(4)])
        probe.compile(optimizer=keras.optimizers.Adam(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        probe.fit(representation[:800], secret[:800], batch_size=64, epochs=40, verbose=0)
        probe_scores[adversary] = probe.evaluate(representation[800:], secret[800:], verbose=0)[1]
    # Measured: 0.945, 0.635 and 0.308.
    assert probe_scores[None] > 0.85 and probe_scores["reversal"] > 0.5 and probe_scores["confusion"] < 0.4, \
        probe_scores


# --- Heads, saving, export ------------------------------------------------------------------


def test_create_model_attaches_the_adversaries_and_the_decoder_to_the_shared_representation():
    model = build(BOTH)
    assert model.output["image_rec"].shape[1:] == (8, 8, 1)
    assert model.output["hidden"].shape[1:] == (3,) and model.output["secret"].shape[1:] == (5,)
    assert isinstance(model.get_layer("hidden_reversal"), GradientReversal)
    assert isinstance(model.get_layer("secret_stop"), StopGradient)
    assert isinstance(model.get_layer("secret_confusion"), Confusion)
    assert [model.get_layer(f"secret_head_dense_{i}").units for i in (0, 1)] == [6, 5]
    assert model.get_layer("image_rec_decoder_dense_0").units == 256
    assert [t.name for t in model.main_tasks] == ["left"]
    with pytest.raises(ValueError, match="does not declare.*such as hard_sharing"):
        mtlzoo.create_model("cross_stitch", TASKS, INPUTS, filters=[4], units=[8])


def test_an_empty_head_units_makes_a_linear_head_not_the_default():
    tasks = [TASKS[0], Task("hidden", "classification", num_classes=3, role="adversarial", head_units=[]),
             Task("image_rec", "reconstruction", input="image", head_units=[])]
    model = build(tasks)
    hidden = [layer.name for layer in model.layers if layer.name.startswith(("hidden_head_dense_", "image_rec_decoder_dense_"))]
    assert hidden == []
    assert model.get_layer("image_rec_decoder_output").kernel.shape == (12, 64)
    assert [Task.from_config(t.get_config()).head_units for t in tasks[1:]] == [(), ()]


def test_roles_and_the_adversary_schedules_survive_a_keras_round_trip(tmp_path):
    model = build(BOTH)
    model.compile(optimizer="adam", weighting="gradient_similarity")
    x, y = data(tasks=BOTH)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.tasks == model.tasks and loaded.tasks[-1].adversary == "confusion"
    assert loaded.weighting.task_roles == ("main", "auxiliary", "adversarial", "auxiliary", "adversarial")
    assert float(loaded.get_layer("hidden_reversal").step) == float(loaded.get_layer("secret_confusion").step) == 3.0
    assert loaded.get_layer("secret_confusion").get_config()["strength"] == 0.7
    for name, value in model.predict(x, verbose=0).items():
        np.testing.assert_array_equal(loaded.predict(x, verbose=0)[name], value)


def test_export_serves_only_the_main_tasks_unless_asked(tmp_path):
    model = build(BOTH)
    x, _ = data(4)
    expected = model.predict(x, verbose=0)["left"]
    main = export_saved_model(model, tmp_path / "main", 1, warmup_inputs=x)
    every = export_saved_model(model, tmp_path / "all", 1, include_auxiliary=True)
    signature = tf.saved_model.load(str(main)).signatures["serving_default"]
    assert sorted(signature.structured_outputs) == ["left", "left_class_ids", "left_probabilities"]
    variables = [v.name for v in tf.saved_model.load(str(main)).variables]
    assert not any(n.startswith(("hidden", "right", "image_rec", "secret")) for n in variables)
    np.testing.assert_allclose(predict_exported(main, x)["left"], expected, rtol=1e-5, atol=1e-6)
    outputs = predict_exported(every, x)
    assert {"right_class_ids", "hidden_probabilities", "image_rec", "secret_probabilities"} <= set(outputs)
    np.testing.assert_allclose(outputs["secret"], model.predict(x, verbose=0)["secret"], rtol=1e-5, atol=1e-6)
    assert outputs["image_rec"].shape == (4, 8, 8, 1)


def test_drop_auxiliary_keeps_the_main_heads_and_their_weights():
    model = build(BOTH)
    main = drop_auxiliary(model)
    x, _ = data(6)
    assert [t.name for t in main.tasks] == ["left"] and sorted(main.output) == ["left"]
    np.testing.assert_array_equal(main.predict(x, verbose=0)["left"], model.predict(x, verbose=0)["left"])
    assert not any(isinstance(layer, (GradientReversal, Confusion, StopGradient)) for layer in main.layers)
    main.compile(optimizer="adam")
    main.fit(x, {"left": np.zeros(6, "int64")}, epochs=1, verbose=0)
    assert drop_auxiliary(main) is main


# --- Gradient-similarity gating -------------------------------------------------------------


def gating_reference(gradients, roles, present, variant):
    """Du et al.'s rule, computed on the gradients themselves."""
    g = np.asarray(gradients, "float64")
    main = sum(g[i] for i, r in enumerate(roles) if r == "main" and present[i])
    out = []
    for i, role in enumerate(roles):
        if not present[i]:
            out.append(0.0)
        elif role != "auxiliary":
            out.append(1.0)
        else:
            norm = np.linalg.norm(g[i]) * np.linalg.norm(main) if np.ndim(main) else 0.0
            cosine = float(g[i] @ main / norm) if norm > 0 else 0.0
            out.append(float(cosine > 0) if variant == "gate" else max(cosine, 0.0))
    return np.array(out)


@pytest.mark.parametrize("variant", ["gate", "weighted"])
def test_gating_matches_the_rule_on_badly_scaled_random_gradients(variant):
    rng = np.random.default_rng(1)
    roles = ("main", "main", "auxiliary", "auxiliary", "adversarial", "auxiliary")
    method = weighting.get({"name": "gradient_similarity", "variant": variant}).bind(
        [f"t{i}" for i in range(6)], roles)
    for trial in range(20):
        g = rng.normal(size=(6, 40)) * (10.0 ** rng.uniform(-6, 6, size=(6, 1)))
        present = (rng.random(6) < 0.8).astype("float32")
        gram = tf.constant(g @ g.T, "float32")
        got = method.gradient_weights(gram, tf.ones(6), tf.constant(present)).numpy()
        np.testing.assert_allclose(got, gating_reference(g, roles, present, variant), atol=2e-5, err_msg=str(trial))


def test_gating_drops_an_opposed_auxiliary_and_keeps_an_aligned_one():
    method = weighting.get("gradient_similarity").bind(["m", "good", "bad"], ["main", "auxiliary", "auxiliary"])
    g = np.array([[1.0, 0.0], [0.5, 3.0], [-0.1, 5.0]])
    np.testing.assert_array_equal(
        method.gradient_weights(tf.constant(g @ g.T, "float32"), tf.ones(3), tf.ones(3)).numpy(), [1, 1, 0])
    # No main task in the batch: nothing to compare with, the auxiliary tasks sit out.
    np.testing.assert_array_equal(
        method.gradient_weights(tf.constant(g @ g.T, "float32"), tf.ones(3), tf.constant([0.0, 1, 1])).numpy(),
        [0, 0, 0])


def test_gating_needs_an_auxiliary_task():
    model = build([TASKS[0], Task("other", "binary")])
    with pytest.raises(ValueError, match="none of the tasks has role 'auxiliary'"):
        model.compile(optimizer="adam", weighting="gradient_similarity")


@pytest.mark.parametrize("name", default_few(weighting.list_weightings(), keep=("unitary", "gradient_similarity")))
def test_every_weighting_method_trains_with_auxiliary_and_adversarial_tasks(name):
    model = build(BOTH)
    model.compile(optimizer="adam", weighting=name)
    x, y = data(32, tasks=BOTH)
    weights = {t: np.ones(32, "float32") for t in y}
    weights["right"][16:] = 0.0  # the second batch has no auxiliary label
    history = model.fit(x, y, sample_weight=weights, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    assert np.isfinite(history["loss"]).all() and float(model.get_layer("hidden_reversal").step) == 4.0
    assert float(model.get_layer("secret_confusion").step) == 4.0
    assert all(np.isfinite(np.asarray(v.numpy())).all() for v in model.weights)


@pytest.mark.parametrize("name", default_few(["unitary", "gradient_similarity", "pcgrad", "uncertainty"],
                                             keep=("gradient_similarity",)))
def test_two_replicas_train_auxiliary_and_adversarial_tasks_like_one_device(name):
    x, y = data(32, tasks=BOTH)
    weights = {t: np.ones(32, "float32") for t in y}
    weights["right"][8:] = 0.0  # the auxiliary labels of the second replica's halves are missing
    runs = []
    for strategy in (None, make_strategy("mirrored")):
        if strategy is None:
            model = build(BOTH)
            model.compile(optimizer=keras.optimizers.SGD(0.1), weighting=name)
        else:
            with strategy.scope():
                model = build(BOTH)
                model.compile(optimizer=keras.optimizers.SGD(0.1), weighting=name)
        history = model.fit(x, y, sample_weight=weights, batch_size=16, epochs=2, shuffle=False, verbose=0)
        runs.append((model, history.history))
    (one, h1), (two, h2) = runs
    for a, b in zip(one.weights, two.weights):
        np.testing.assert_allclose(np.asarray(b.numpy()), np.asarray(a.numpy()), atol=2e-5, err_msg=a.path)
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-5)
    assert float(two.get_layer("hidden_reversal").step.numpy()) == float(two.get_layer("secret_confusion").step.numpy()) == 4.0


@pytest.mark.slow
def test_jax_trains_reversal_confusion_reconstruction_and_gating_like_tensorflow(run_python, tmp_path):
    """One model file, two SGD steps on each backend, with missing labels and per-label loss
    means: the same weights after them."""
    model = build(BOTH)
    model.save(tmp_path / "start.keras")
    x, y = data(16, tasks=BOTH)
    missing = {f"w_{k}": (np.arange(16) % (3 if k == "right" else 1) == 0).astype("float32") for k in y}
    np.savez(tmp_path / "batch.npz", image=x["image"], **y, **missing)
    code = """
        import keras, numpy as np, mtlzoo
        model = keras.saving.load_model("start.keras")
        model.compile(optimizer=keras.optimizers.SGD(0.1), weighting="gradient_similarity",
                      loss_normalization="labelled")
        data = np.load("batch.npz")
        y = {k: data[k] for k in ("left", "right", "hidden", "image_rec", "secret")}
        w = {k: data["w_" + k] for k in y}
        model.fit({"image": data["image"]}, y, sample_weight=w, batch_size=16, epochs=2, shuffle=False, verbose=0)
        np.savez(keras.backend.backend() + ".npz", *[np.asarray(v.numpy()) for v in model.weights])
    """
    for backend in ("tensorflow", "jax"):
        run_python(code, backend=backend)
    with np.load(tmp_path / "tensorflow.npz") as tf_weights, np.load(tmp_path / "jax.npz") as jax_weights:
        assert len(tf_weights.files) == len(jax_weights.files) == len(model.weights)
        for key in tf_weights.files:
            np.testing.assert_allclose(jax_weights[key], tf_weights[key], atol=2e-5, err_msg=key)
        for path in ("hidden_reversal/step", "secret_confusion/step"):
            step = next(i for i, v in enumerate(model.weights) if v.path == path)
            assert float(jax_weights[f"arr_{step}"]) == 2.0


# --- Partial labels -------------------------------------------------------------------------


def test_nan_and_minus_one_mark_missing_labels():
    targets = {"r": np.array([[1.0], [np.nan], [3.0], [4.0]], "float32"),
               "c": np.array([2, -1, 0, 1]), "b": np.array([[1.0], [0.0], [np.nan], [1.0]], "float32")}
    weights = {k: np.ones(4, "float32") for k in targets}
    weights["c"][3] = 0.0
    data = MultiTaskArrays({"x": np.zeros((4, 2), "float32")}, targets, weights).checked(
        "fixture", {"r": "regression", "c": "classification", "b": "binary"})
    np.testing.assert_array_equal(data.weights["r"], [1, 0, 1, 1])
    np.testing.assert_array_equal(data.weights["c"], [1, 0, 1, 0])
    np.testing.assert_array_equal(data.weights["b"], [1, 1, 0, 1])
    np.testing.assert_array_equal(data.targets["c"], [2, 0, 0, 0])
    assert np.isfinite(data.targets["r"]).all() and np.isfinite(data.targets["b"]).all()
    # A negative regression value is a value, not a mark; an infinity is an error.
    assert not missing_labels(np.array([[-1]]), "regression").any()
    with pytest.raises(DataIntegrityError, match=r"target 'r' holds 1 non-finite value\(s\); the first is inf"):
        MultiTaskArrays({"x": np.zeros((1, 2))}, {"r": np.array([[np.inf]])}, {"r": np.ones(1)}).checked()


def test_missing_labels_take_no_part_in_losses_and_metrics():
    """A model fed NaN / -1 marks (through ``checked``) scores exactly as on the labelled rows alone."""
    model = build([TASKS[0], Task("size", "regression", role="auxiliary")])
    model.compile(optimizer="adam", loss_normalization="labelled")
    x, y = data(12)
    size = np.linspace(0, 1, 12, dtype="float32")[:, None]
    left = y["left"].copy()
    left[::3] = -1
    size_marked = size.copy()
    size_marked[1::2] = np.nan
    arrays = MultiTaskArrays(x, {"left": left, "size": size_marked}, {"left": np.ones(12), "size": np.ones(12)}).checked(
        "fixture", {"left": "classification", "size": "regression"})
    marked = model.evaluate(x, dict(arrays.targets), sample_weight=dict(arrays.weights), verbose=0, return_dict=True)
    keep_left, keep_size = left >= 0, ~np.isnan(size_marked[:, 0])
    only_left = model.evaluate({"image": x["image"][keep_left]}, {"left": left[keep_left], "size": size[keep_left]},
                               sample_weight={"left": np.ones(keep_left.sum()), "size": np.zeros(keep_left.sum())},
                               verbose=0, return_dict=True)
    pred = model.predict(x, verbose=0)["size"]
    assert marked["left_loss"] == pytest.approx(only_left["left_loss"], rel=1e-5)
    assert marked["left_accuracy"] == pytest.approx(only_left["left_accuracy"], rel=1e-6)
    assert marked["size_loss"] == pytest.approx(float(np.mean((pred[keep_size] - size[keep_size]) ** 2)), rel=1e-5)


@pytest.mark.parametrize("normalization, divisor", [("batch", 16), ("labelled", 4)])
def test_loss_normalization_divides_by_the_batch_or_the_labels(normalization, divisor):
    model = build([TASKS[0]])
    model.compile(optimizer="adam", loss_normalization=normalization)
    x, y = data(16)
    weights = np.zeros(16, "float32")
    weights[[1, 5, 6, 9]] = 1.0
    logits = model.predict(x, verbose=0)["left"]
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -log_p[np.arange(16), y["left"]][weights > 0].sum() / divisor
    loss, _ = model.test_on_batch(x, {"left": y["left"]}, sample_weight={"left": weights})
    assert loss == pytest.approx(expected, rel=1e-5)
    none = model.test_on_batch(x, {"left": y["left"]}, sample_weight={"left": np.zeros(16, "float32")})
    assert none[0] == 0.0  # no label in the batch: 0, not NaN


def test_keep_labels_keeps_a_seeded_fraction_of_the_labelled_examples():
    n = 1000
    weights = {"a": (np.arange(n) % 4 != 0).astype("float32"), "b": np.ones(n, "float32")}
    arrays = MultiTaskArrays({"x": np.zeros((n, 1))}, {"a": np.zeros(n), "b": np.zeros(n)}, weights)
    kept = arrays.keep_labels({"a": 0.02}, seed=3)
    assert kept.weights["a"].sum() == 15 and np.all(weights["a"][kept.weights["a"] > 0] == 1)
    np.testing.assert_array_equal(kept.weights["b"], weights["b"])
    np.testing.assert_array_equal(arrays.keep_labels({"a": 0.02}, seed=3).weights["a"], kept.weights["a"])
    assert not np.array_equal(arrays.keep_labels({"a": 0.02}, seed=4).weights["a"], kept.weights["a"])
    only = MultiTaskArrays({"x": np.arange(4)[:, None]}, {"a": np.zeros(4)}, {"a": np.array([0, 1, 0, 1.0])})
    np.testing.assert_array_equal(only.labelled_only().inputs["x"][:, 0], [1, 3])
    with pytest.raises(KeyError, match="names task 'c'"):
        arrays.keep_labels({"c": 0.5})


# --- Recipes, training, evaluation ----------------------------------------------------------


def fashion_recipe(**changes):
    raw = {
        "name": "aux",
        "architecture": {"name": "hard_sharing", "params": {"filters": [4], "shared_units": [16]}},
        "data": {"name": "multi_fashion", "max_examples": 200, "label_fraction": {"left": 0.1}, "label_seed": 1},
        "tasks": ["left", {"name": "right", "role": "auxiliary"},
                  {"name": "image_rec", "kind": "reconstruction", "input": "image", "loss": "cross_entropy"}],
        "training": {"epochs": 2, "batch_size": 64, "loss_normalization": "labelled",
                     "weighting": "gradient_similarity", "early_stopping": {"patience": 2}},
    }
    for key, value in changes.items():
        raw[key] = value
    return raw


@pytest.mark.parametrize("change, key, message", [
    ({"tasks": ["left", {"name": "r", "kind": "reconstruction", "input": "pixels"}]}, "tasks[1].input",
     "has inputs ['image'], not 'pixels'"),
    ({"tasks": ["left", {"name": "left", "kind": "reconstruction", "input": "image"}]}, "tasks[1].name", "already exists"),
    ({"tasks": [{"name": "left", "role": "auxiliary"}]}, "tasks", "at least one task must have role 'main'"),
    ({"tasks": [{"name": "left", "role": "side"}]}, "tasks[0]", "unknown role 'side'"),
    ({"data": {"name": "multi_fashion", "label_fraction": {"left": 0}}}, "data.label_fraction.left", "in (0, 1]"),
    ({"data": {"name": "multi_fashion", "label_fraction": {"middle": 0.5}}}, "data.label_fraction.middle",
     "not a task of this recipe"),
    ({"data": {"name": "multi_fashion", "label_seed": -1}}, "data.label_seed", "non-negative integer"),
    ({"tasks": ["left", "right"]}, "training.weighting", "none of the tasks has role 'auxiliary'"),
])
def test_recipe_errors_name_the_key(change, key, message):
    with pytest.raises(mtlzoo.ConfigError) as info:
        mtlzoo.recipe_from_dict(fashion_recipe(**change))
    assert info.value.key == key and message in str(info.value)


def test_a_recipe_with_auxiliary_tasks_trains_selects_evaluates_and_exports_its_main_task(tmp_path):
    recipe = mtlzoo.recipe_from_dict(fashion_recipe())
    assert mtlzoo.recipe_from_dict(recipe.to_dict()) == recipe
    train = recipe.load_split(recipe.make_dataset(), "train")
    assert train.weights["left"].sum() == 20 and len(train) == 200  # every example keeps its right label
    np.testing.assert_allclose(train.targets["image_rec"], train.inputs["image"] / np.float32(255), rtol=1e-6)
    model = mtlzoo.train(recipe, tmp_path / "run", verbose=0)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["mean_val_loss"] == history["val_left_loss"]  # the mean is over the main task
    assert history["mean_val_accuracy"] == history["val_left_accuracy"]
    results = mtlzoo.evaluate(model, recipe.make_dataset().load_tasks("test", model.tasks))
    main, auxiliary = mtlzoo.evaluation.by_role(results, model.tasks)
    assert list(main) == ["left"] and list(auxiliary) == ["right", "image_rec"]
    table = mtlzoo.evaluation.format_table(main, auxiliary)
    assert table.index("mean") < table.index("auxiliary and adversarial tasks") < table.index("image_rec")
    path = export_saved_model(model, tmp_path / "export", 1)
    assert sorted(tf.saved_model.load(str(path)).signatures["serving_default"].structured_outputs) == [
        "left", "left_class_ids", "left_probabilities"]


@mtlzoo.data.register_dataset("test_privileged")
class Privileged(mtlzoo.data.Dataset):
    """A `later` measurement exists in the training split only ("using the future")."""

    def tasks(self):
        return [Task("now", "regression"), Task("later", "regression", role="auxiliary")]

    def input_spec(self):
        return {"x": (3,)}

    def load(self, split):
        rng = np.random.default_rng(["train", "validation", "test"].index(split))
        x = rng.normal(size=(64, 3)).astype("float32")
        targets = {"now": x[:, :1] * 2}
        if split == "train":
            targets["later"] = x[:, 1:2] + x[:, :1]
        return MultiTaskArrays({"x": x}, targets, {k: np.ones(64, "float32") for k in targets})


def test_a_privileged_target_trains_but_is_not_needed_to_evaluate_or_serve(tmp_path):
    raw = {"name": "privileged", "architecture": {"name": "hard_sharing", "params": {"shared_units": [8]}},
           "data": {"name": "test_privileged"}, "tasks": "all",
           "training": {"epochs": 2, "batch_size": 16, "early_stopping": {"patience": 1}}}
    recipe = mtlzoo.recipe_from_dict(raw)
    model = mtlzoo.train(recipe, tmp_path / "run", verbose=0)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["later_loss"][-1] > 0 and history["val_later_loss"] == [0.0, 0.0]  # no validation labels
    test = recipe.make_dataset().load_tasks("test", model.tasks)
    assert sorted(test.targets) == ["now"]
    assert list(mtlzoo.evaluate(model, test)) == ["now"]
    path = export_saved_model(model, tmp_path / "export", 1)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert list(signature.structured_outputs) == ["now"] and "later" not in str(signature.structured_input_signature)


@pytest.mark.slow
def test_compare_scores_the_main_tasks_and_reports_the_others_apart(tmp_path):
    from mtlzoo.evaluation.compare import compare

    recipe = mtlzoo.recipe_from_dict(fashion_recipe(training={"epochs": 1, "batch_size": 64}))
    report = compare(recipe, tmp_path / "cmp", "unitary,gradient_similarity", seeds=2, single_task=True,
                     log=lambda *a, **k: None)
    assert list(report["tasks"]) == ["left"] and list(report["single_task"]["baselines"]) == ["left"]
    run = report["runs"]["gradient_similarity"]["seed0"]
    assert list(run["metrics"]) == ["left"] and sorted(run["auxiliary"]) == ["image_rec", "right"]
    assert run["mean"]["accuracy"] == run["metrics"]["left"]["accuracy"]
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## Auxiliary and adversarial tasks" in text and "| image_rec | crossentropy |" in text


@pytest.mark.parametrize("name", ["multifashion_auxiliary", "multimnist_adversarial"])
def test_the_shipped_recipes_export_exactly_their_main_task(name, tmp_path, data_dir):
    raw = yaml.safe_load((REPO / "zoo_configs" / f"{name}.yaml").read_text())
    raw["data"]["max_examples"] = 120
    raw["training"].update(epochs=1, batch_size=64)
    recipe = mtlzoo.recipe_from_dict(raw, source=name)
    assert [t.name for t in recipe.tasks if t.role == "main"] == ["left"] and len(recipe.tasks) == 2
    model = mtlzoo.train(recipe, tmp_path / "run", verbose=0)
    path = export_saved_model(model, tmp_path / "export", 1)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert sorted(signature.structured_outputs) == ["left", "left_class_ids", "left_probabilities"]
