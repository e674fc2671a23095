"""Weighting methods inside training: the interface, the vectorised train steps against a
per-task reference, tf.distribute (2 replicas == 1), JAX == TensorFlow, and saving."""

import contextlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo import weighting
from mtlzoo.models import shared_variables
from helpers import default_few

TASKS = ("a", "b", "c")
ALL = weighting.list_weightings()
GRADIENT = weighting.list_weightings(gradients=True)


def tiny_model(architecture="hard_sharing", **params):
    keras.utils.set_random_seed(0)
    # c is auxiliary, so that gradient-similarity gating has a task to gate; every other method
    # treats the roles alike.
    tasks = [mtlzoo.Task(name, "regression", role="auxiliary" if name == "c" else "main") for name in TASKS]
    params = {"shared_units": (8,), **params} if architecture == "hard_sharing" else params
    return mtlzoo.create_model(architecture, tasks, {"x": {"shape": (6,)}}, **params)


def batch(n=32, seed=0, sample_weights=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    # Conflicting tasks: b is roughly -a, so gradient methods have something to do.
    w = rng.normal(size=(6, 1))
    y = {"a": x @ w, "b": -x @ w + 0.5, "c": np.sin(x[:, :1]) * 3}
    y = {k: v.astype("float32") for k, v in y.items()}
    if not sample_weights:
        return {"x": x}, y
    return {"x": x}, y, {k: (rng.random(n) < 0.7).astype("float32") for k in TASKS}


def partially_labelled(n=48):
    """Three batches of 16 where task c has labels on 70 % of the first, on one example of the
    second (in the first replica's half under 2 replicas) and on none of the third; a and b
    have 70 % everywhere."""
    x, y, weights = batch(n, sample_weights=True)
    weights["c"][16:] = 0.0
    weights["c"][19] = 1.0
    return x, y, weights


def test_registry_lists_every_method_of_the_issue():
    assert set(ALL) == {
        "unitary", "static", "uncertainty", "dwa", "rlw", "famo", "gradnorm", "pcgrad", "mgda", "mgda_ub",
        "cagrad", "imtl_g", "aligned_mtl", "nash_mtl", "upgrad", "gradient_similarity",
    }
    assert set(GRADIENT) == {"gradnorm", "pcgrad", "mgda", "mgda_ub", "cagrad", "imtl_g", "aligned_mtl",
                             "nash_mtl", "upgrad", "gradient_similarity"}


@pytest.mark.parametrize("spec, error, message", [
    ("pcgard", ValueError, r"Unknown weighting 'pcgard' \(did you mean 'pcgrad'\?\)"),
    ({"gradients": "features"}, ValueError, "needs a 'name' key"),
    ({"name": "cagrad", "radius": 1}, TypeError, "Weighting .cagrad. takes no option.*radius.*it accepts.*'c'"),
    ({"name": "mgda", "gradients": "activations"}, ValueError, r"gradients must be one of \['parameters', 'features'\]"),
    (["pcgrad", "uncertainty"], ValueError, "at most one gradient method, and it must come last"),
    ({"name": "dwa", "temperature": 0}, ValueError, "temperature must be a number > 0"),
    (3, TypeError, "A weighting is a name"),
])
def test_bad_specs_are_clear_errors(spec, error, message):
    with pytest.raises(error, match=message):
        weighting.get(spec)


def test_compile_errors_name_what_was_expected():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"static weights name unknown task\(s\) \['z'\]"):
        model.compile(weighting={"name": "static", "weights": {"z": 2.0}})
    with pytest.raises(ValueError, match="one shared representation"):
        tiny_model("cross_stitch").compile(weighting="mgda_ub")
    with mtlzoo.training.trainer.precision("mixed_float16"):
        model = tiny_model()
    with pytest.raises(ValueError, match="loss scaling would distort"):
        model.compile(weighting="pcgrad")


def test_the_graph_tells_shared_from_task_specific_variables():
    model = tiny_model()
    flags = dict(zip((v.path for v in model.trainable_variables), shared_variables(model)))
    assert all(flag == path.startswith("shared") for path, flag in flags.items()), flags
    assert model.shared_representation is model.get_layer("shared_dense_0").output
    assert [l.name for l in model.trunk_layers] == ["shared_dense_0"]
    # Cross-stitch columns are mixed by the stitch units, so every column feeds every task.
    stitched = tiny_model("cross_stitch")
    flags = dict(zip((v.path for v in stitched.trainable_variables), shared_variables(stitched)))
    assert flags == {path: path.split("/")[0] not in TASKS for path in flags}
    assert sum(flags.values()) == 3


def reference_update(model, method, x, y, features, sample_weight=None):
    """The update a gradient method makes, one task at a time (the slow, obvious way). Tasks
    without a labelled example are left out of the method's problem: ``method`` is bound to
    the present tasks only, and the absent ones get no shared gradient."""
    tasks = model.tasks
    weights = sample_weight or {}
    present = [t for t in tasks if t.name not in weights or np.any(weights[t.name] != 0)]
    variables = model.trainable_variables
    shared = [v for v, flag in zip(variables, shared_variables(model)) if flag]
    if features:
        trunk = keras.Model(model.inputs, model.shared_representation)
        heads = keras.Model(model.shared_representation, model.output)
    with tf.GradientTape(persistent=True) as tape:
        if features:
            z = trunk(x, training=True)
            pred = heads(z, training=True)
        else:
            pred = model(x, training=True)
        losses = [t.make_loss()(y[t.name], pred[t.name], weights.get(t.name)) for t in present]
        total = tf.add_n(losses)
    wrt = [z] if features else shared
    per_task = [np.concatenate([np.ravel(g) for g in tape.gradient(loss, wrt)]) for loss in losses]
    gram = np.stack(per_task) @ np.stack(per_task).T
    coefficients = method.gradient_weights(
        tf.constant(gram, "float32"), tf.stack(losses), tf.ones(len(present))).numpy()
    task_grads = [tape.gradient(loss, shared) for loss in losses]
    shared_grads = [sum(c * g[i] for c, g in zip(coefficients, task_grads)) for i in range(len(shared))]
    plain = _zeros_for_none(tape.gradient(total, variables), variables)
    by_id = {id(v): g for v, g in zip(shared, shared_grads)}
    return [by_id.get(id(v), g) for v, g in zip(variables, plain)]


def _zeros_for_none(grads, variables):
    return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]


@pytest.mark.parametrize("name", ["pcgrad", "mgda", "upgrad", "cagrad", "imtl_g", "mgda_ub", "gradnorm"])
def test_vectorised_step_equals_the_per_task_reference(name):
    x, y = batch()
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(1.0), weighting=name)
    reference = weighting.get(name).bind(TASKS)  # same seed, so PCGrad draws the same orders
    before = [v.numpy() for v in model.trainable_variables]
    grads = reference_update(model, reference, x, y, features=reference.gradients == "features")
    model.train_on_batch(x, y)
    for b, g, v in zip(before, grads, model.trainable_variables):
        np.testing.assert_allclose(v.numpy(), b - g.numpy(), atol=2e-6, err_msg=v.path)


@pytest.mark.parametrize("name", GRADIENT)
def test_a_batch_without_labels_for_a_task_updates_like_the_other_tasks_alone(name):
    """A task with no labelled example in the batch (all its sample weights 0) takes no part:
    the shared update is the method's update for the present tasks alone, never zero or NaN."""
    x, y, weights = batch(sample_weights=True)
    weights["c"][:] = 0.0
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(1.0), weighting=name)
    reference = weighting.get(name).bind(["a", "b"])
    before = [v.numpy() for v in model.trainable_variables]
    grads = reference_update(model, reference, x, y, reference.gradients == "features", weights)
    model.train_on_batch(x, y, sample_weight=weights)
    shared = shared_variables(model)
    moved = 0.0
    for b, g, v, flag in zip(before, grads, model.trainable_variables, shared):
        np.testing.assert_allclose(v.numpy(), b - g.numpy(), atol=2e-6, err_msg=v.path)
        moved = max(moved, float(np.abs(v.numpy() - b).max())) if flag else moved
    assert moved > 1e-3  # the shared trunk trained on a and b


@pytest.mark.parametrize("name", ALL)
def test_a_batch_without_any_label_changes_nothing_and_stays_finite(name):
    """A global batch where no task has a labelled example (the last partial batch of a dataset
    whose tasks each have their own examples can be one): every loss and gradient is zero."""
    x, y, weights = batch(sample_weights=True)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=name)
    model.train_on_batch(x, y, sample_weight=weights)
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.train_on_batch(x, y, sample_weight={k: np.zeros_like(v) for k, v in weights.items()})
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    for v in model.weighting.weights:
        assert np.all(np.isfinite(v.numpy())), v.path
    model.train_on_batch(x, y, sample_weight=weights)
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)


def test_stateful_methods_leave_an_absent_tasks_state_alone():
    x, y, weights = batch(sample_weights=True)
    absent = {k: v.copy() for k, v in weights.items()}
    absent["c"][:] = 0.0
    states = {}
    for name in ("famo", "gradnorm", "dwa", "uncertainty"):
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=name)
        model.train_on_batch(x, y, sample_weight=weights)
        model.train_on_batch(x, y, sample_weight=weights)
        before = {v.path: v.numpy().copy() for v in model.weighting.weights}
        model.train_on_batch(x, y, sample_weight=absent)
        after = {v.path: v.numpy() for v in model.weighting.weights}
        for path in before:
            assert np.all(np.isfinite(after[path])), path
            if np.ndim(before[path]) == 1:  # per-task state: task c's entry is unchanged
                assert after[path][2] == before[path][2], (name, path)
        states[name] = (before, after)
    # FAMO and GradNorm still move the present tasks; GradNorm's weights keep summing to T.
    famo_before, famo_after = states["famo"]
    assert not np.array_equal(famo_after["famo/logits"][:2], famo_before["famo/logits"][:2])
    assert states["gradnorm"][1]["gradnorm/task_weights"].sum() == pytest.approx(3.0, rel=1e-6)
    dwa_after = states["dwa"][1]
    np.testing.assert_array_equal(dwa_after["dwa/running_count"], [3.0, 3.0, 2.0])


def test_famos_first_update_is_a_first_adam_step():
    """The first call has no previous losses and takes no step, so the second call's update of
    FAMO's logits is Adam's first step (-lr * sign(grad)), as in the official code."""
    famo = weighting.get("famo").bind(TASKS)
    present = tf.ones(3)
    famo.loss_weights(tf.constant([1.0, 2.0, 3.0]), present)
    np.testing.assert_array_equal(famo.logits.numpy(), 0.0)
    famo.loss_weights(tf.constant([0.5, 2.0, 3.3]), present)
    delta = np.log([1.0, 2.0, 3.0]) - np.log([0.5, 2.0, 3.3])
    grad = delta / 3 - np.mean(delta) / 3  # z = 1/3 each at the start
    np.testing.assert_allclose(famo.logits.numpy(), -0.025 * np.sign(grad), rtol=1e-4)


def train(name, strategy=None, epochs=3, sample_weights=True):
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=name)
    data = tf.data.Dataset.from_tensor_slices(partially_labelled() if sample_weights else batch()).batch(16)
    history = model.fit(data, epochs=epochs, verbose=0)
    return model, history.history


@pytest.fixture(scope="module")
def mirrored():
    # Reductions through one device rather than collectives: collective strategies created one
    # after another in a process (other test modules make theirs) can hand out clashing keys.
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())


# Four kinds run by default (the baseline, a gradient solver, learned loss weights, a stateful
# method); CI runs every method.
@pytest.mark.parametrize("name", default_few(ALL, keep=("unitary", "mgda", "uncertainty", "famo")))
def test_two_replicas_equal_one_device_on_the_same_global_batches(name, mirrored):
    one, one_history = train(name)
    two, two_history = train(name, mirrored)
    assert [v.path for v in one.weights] == [v.path for v in two.weights]
    for a, b in zip(one.weights, two.weights):
        np.testing.assert_allclose(np.asarray(b.numpy()), np.asarray(a.numpy()), atol=1e-5, err_msg=a.path)
    for key in ("loss", "a_loss"):
        np.testing.assert_allclose(two_history[key], one_history[key], rtol=1e-5)
    # Every method trained through the batches where task c is absent (or labelled on one
    # replica only): finite weights, and a lower loss.
    assert all(np.isfinite(v.numpy()).all() for v in one.weights)
    assert one_history["loss"][-1] < one_history["loss"][0]


@pytest.mark.parametrize("name", default_few(["uncertainty", "mgda"], keep=("uncertainty",)))
def test_two_replicas_add_a_regularizer_once_like_one_device(name, mirrored):
    """A weight regularizer is computed on every replica: each adds its share (a strong trace
    norm, so that adding it twice moves the weights)."""
    runs = []
    for strategy in (None, mirrored):
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = tiny_model("soft_sharing", units=(4,), regularizer="trace_norm", strength=0.5)
            model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=name)
        model.fit(tf.data.Dataset.from_tensor_slices(batch()).batch(16), epochs=2, verbose=0)
        runs.append(model)
    assert sum(float(keras.ops.sum(loss)) for loss in runs[0].losses) > 0.1
    for a, b in zip(*(model.weights for model in runs)):
        np.testing.assert_allclose(np.asarray(b.numpy()), np.asarray(a.numpy()), atol=1e-5, err_msg=a.path)


def test_dwa_weighs_by_the_ratio_of_the_last_two_epoch_losses():
    model, history = train("dwa", epochs=3, sample_weights=False)
    dwa = model.weighting
    for i, task in enumerate(TASKS):
        assert float(dwa.last[i]) == pytest.approx(history[f"{task}_loss"][2], rel=1e-5)
        assert float(dwa.before_last[i]) == pytest.approx(history[f"{task}_loss"][1], rel=1e-5)
    ratios = np.array([history[f"{t}_loss"][2] / history[f"{t}_loss"][1] for t in TASKS])
    expected = 3 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    weights, _ = dwa.loss_weights(tf.ones(3), tf.ones(3))
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-5)


def test_uncertainty_weights_are_learnt_and_saved_with_the_model(tmp_path):
    model, _ = train("uncertainty", epochs=3)
    log_variance = model.weighting.log_variance.numpy()
    assert np.abs(log_variance).max() > 1e-3
    weights, penalty = model.weighting.loss_weights(tf.ones(3), tf.ones(3))
    np.testing.assert_allclose(weights.numpy(), 0.5 * np.exp(-log_variance), rtol=1e-6)
    assert float(penalty) == pytest.approx(0.5 * log_variance.sum(), rel=1e-6)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.weighting).__name__ == "Uncertainty"
    np.testing.assert_array_equal(loaded.weighting.log_variance.numpy(), log_variance)


def test_a_chain_reloads_and_keeps_training(tmp_path):
    model = tiny_model()
    model.compile(optimizer="adam", weighting=weighting.chain("uncertainty", {"name": "pcgrad", "seed": 3}))
    x, y = batch()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    methods = loaded.weighting.methods
    assert [m.method_name for m in methods] == ["uncertainty", "pcgrad"] and methods[1].seed == 3
    np.testing.assert_array_equal(methods[0].log_variance.numpy(), model.weighting.methods[0].log_variance.numpy())
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)


def test_unitary_stays_on_the_plain_keras_step():
    x, y = batch()
    plain = tiny_model()
    plain.compile(optimizer=keras.optimizers.SGD(0.1))
    weighted = tiny_model()
    weighted.compile(optimizer=keras.optimizers.SGD(0.1), weighting="static")
    plain.fit(x, y, epochs=2, batch_size=16, verbose=0)
    weighted.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert plain.get_compile_config().get("weighting") is None
    for a, b in zip(plain.trainable_variables, weighted.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


JAX_STEP = """
    import json, sys
    import numpy as np
    import keras, mtlzoo
    data = np.load("batch.npz")
    out = {}
    for name in json.loads(sys.argv[1]):
        model = keras.saving.load_model(f"{name}.keras")
        for step in range(3):
            weights = {t: data[f"w{step}_{t}"] for t in ("a", "b", "c")}
            model.train_on_batch({"x": data["x"]}, {t: data[t] for t in ("a", "b", "c")}, sample_weight=weights)
        out[name] = [np.asarray(v.numpy()).tolist() for v in model.weights]
    json.dump(out, open("jax.json", "w"))
"""


@pytest.mark.slow
def test_jax_takes_the_same_steps_as_tensorflow(tmp_path, run_python):
    """Three steps on both backends from one .keras file; task c has no labels in the second."""
    names = ["uncertainty", "famo", "mgda", "mgda_ub", "upgrad", "nash_mtl", "aligned_mtl", "gradnorm",
             "gradient_similarity"]
    x, y, weights = batch(sample_weights=True)
    steps = [dict(weights), {**weights, "c": np.zeros_like(weights["c"])}, dict(weights)]
    np.savez(tmp_path / "batch.npz", x=x["x"], **y,
             **{f"w{i}_{t}": w[t] for i, w in enumerate(steps) for t in TASKS})
    expected = {}
    for name in names:
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=name)
        model.save(tmp_path / f"{name}.keras")
        for step in steps:
            model.train_on_batch(x, y, sample_weight=step)
        expected[name] = [np.asarray(v.numpy()) for v in model.weights]
    run_python(JAX_STEP.replace('sys.argv[1]', repr(json.dumps(names))), backend="jax")
    got = json.loads((tmp_path / "jax.json").read_text())
    for name in names:
        assert len(got[name]) == len(expected[name]), name
        for a, b in zip(expected[name], got[name]):
            np.testing.assert_allclose(np.asarray(b), a, atol=2e-5, err_msg=name)
