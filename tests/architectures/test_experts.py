"""Mixture-of-experts sharing: the MMoE and PLE layers, the "mmoe" and "ple" architectures."""

import json

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.architectures.experts import gate_weights
from mtlzoo.layers.experts import MixtureOfExperts, ProgressiveLayeredExtraction
from mtlzoo.tasks import Task

TASKS = [Task("digit", "classification", num_classes=4), Task("odd", "binary"), Task("size", "regression", units=2)]
X = np.random.default_rng(0).normal(size=(7, 5)).astype("float32")


def np_(tensor):
    return keras.ops.convert_to_numpy(tensor)


def labels(n, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "digit": rng.integers(0, 4, n),
        "odd": rng.integers(0, 2, (n, 1)).astype("float32"),
        "size": rng.normal(size=(n, 2)).astype("float32"),
    }


def set_gate(gate, bias):
    """A gate that ignores its input: zero kernel, so softmax(bias) for every example."""
    gate.kernel.assign(np.zeros(gate.kernel.shape, "float32"))
    gate.bias.assign(np.asarray(bias, "float32"))


# --- layers -------------------------------------------------------------------------------


def test_moe_gates_are_distributions_over_the_experts():
    keras.utils.set_random_seed(0)
    layer = MixtureOfExperts(num_tasks=3, num_experts=4, expert_units=[6, 5])
    outputs = layer(X)
    assert len(outputs) == 3 and all(tuple(o.shape) == (7, 5) for o in outputs)
    gates = np_(layer.gate_weights(X))
    assert gates.shape == (7, 3, 4)
    assert (gates >= 0).all()
    np.testing.assert_allclose(gates.sum(axis=-1), 1.0, atol=1e-6)
    assert [len(layer.expert(e)) for e in range(4)] == [2, 2, 2, 2]
    assert len(layer.weights) == 4 * 2 * 2 + 3 * 2


def test_moe_mixture_is_the_gate_weighted_sum_of_the_experts():
    keras.utils.set_random_seed(0)
    layer = MixtureOfExperts(num_tasks=3, num_experts=3, expert_units=[4])
    layer.build(X.shape)
    set_gate(layer.gates[0], [0.0, 60.0, 0.0])  # all weight on expert 1
    set_gate(layer.gates[1], [60.0, 0.0, 0.0])  # all weight on expert 0
    set_gate(layer.gates[2], np.log([0.2, 0.3, 0.5]))  # softmax(log p) = p
    # Each expert's output, computed from its own dense layer.
    experts = [np_(layer.expert(e)[0](X)) for e in range(3)]
    mixtures = [np_(m) for m in layer(X)]
    np.testing.assert_allclose(mixtures[0], experts[1], atol=1e-6)
    np.testing.assert_allclose(mixtures[1], experts[0], atol=1e-6)
    np.testing.assert_allclose(mixtures[2], 0.2 * experts[0] + 0.3 * experts[1] + 0.5 * experts[2], atol=1e-5)
    np.testing.assert_allclose(np_(layer.gate_weights(X))[:, 2], np.tile([0.2, 0.3, 0.5], (7, 1)), atol=1e-6)


def test_ple_task_gates_see_only_their_own_and_the_shared_experts():
    keras.utils.set_random_seed(0)
    two_levels = ProgressiveLayeredExtraction(num_tasks=3, num_task_experts=2, num_shared_experts=1, expert_units=[6, 4])
    outputs = two_levels(X)
    assert len(outputs) == 3 and all(tuple(o.shape) == (7, 4) for o in outputs)
    levels = [{k: np_(v) for k, v in level.items()} for level in two_levels.gate_weights(X)]
    assert [sorted(level) for level in levels] == [["shared", "tasks"], ["tasks"]]
    assert levels[0]["tasks"].shape == levels[1]["tasks"].shape == (7, 3, 2 + 1)
    assert levels[0]["shared"].shape == (7, 3 * 2 + 1)  # the shared gate mixes every expert
    for gate in (levels[0]["tasks"], levels[0]["shared"], levels[1]["tasks"]):
        np.testing.assert_allclose(gate.sum(axis=-1), 1.0, atol=1e-6)
    assert two_levels.task_gate(1, 2).units == 3 and two_levels.shared_gate(0).units == 7
    with pytest.raises(IndexError, match="last level"):
        two_levels.shared_gate(1)

    # One level: task t's output depends on its own and the shared experts only.
    one_level = ProgressiveLayeredExtraction(num_tasks=3, num_task_experts=2, num_shared_experts=1, expert_units=[4])
    before = [np_(o) for o in one_level(X)]
    for expert in one_level.task_experts(0, 1):
        expert.kernel.assign(expert.kernel + 1.0)
    after = [np_(o) for o in one_level(X)]
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[2], before[2])
    assert not np.allclose(after[1], before[1])
    shared = one_level.shared_experts(0)[0]
    shared.kernel.assign(shared.kernel + 1.0)
    changed = [np_(o) for o in one_level(X)]
    assert not any(np.allclose(c, a) for c, a in zip(changed, after))

    # Two levels: the shared gate carries task 1's level-0 experts to every task's level 1.
    before = [np_(o) for o in two_levels(X)]
    for expert in two_levels.task_experts(0, 1):
        expert.kernel.assign(expert.kernel + 1.0)
    assert not np.allclose(np_(two_levels(X)[0]), before[0])


def test_ple_with_gates_on_the_shared_expert_gives_every_task_its_output():
    keras.utils.set_random_seed(0)
    layer = ProgressiveLayeredExtraction(num_tasks=2, num_task_experts=1, num_shared_experts=2, expert_units=[4])
    layer.build(X.shape)
    for t in range(2):
        set_gate(layer.task_gate(0, t), [0.0, 0.0, 60.0])  # own expert, shared 0, shared 1
    shared = np_(layer.shared_experts(0)[1](X))
    for mixture in layer(X):
        np.testing.assert_allclose(np_(mixture), shared, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [lambda: MixtureOfExperts(2, 3, [8, 4], activation="tanh", name="moe"),
     lambda: ProgressiveLayeredExtraction(2, 1, 3, (8, 4), name="ple")],
    ids=["mmoe", "ple"],
)
def test_layer_config_round_trips(make):
    layer = make()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    assert config["expert_units"] == [8, 4] and json.dumps(config)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MixtureOfExperts(0, 2, [4]), r"MixtureOfExperts: num_tasks must be a positive integer, got 0"),
        (lambda: MixtureOfExperts(2, True, [4]), r"num_experts must be a positive integer, got True"),
        (lambda: MixtureOfExperts(2, 2, "32"), r"expert_units must be a non-empty list of positive integers"),
        (lambda: ProgressiveLayeredExtraction(2, 1, 1, [4, -1]), r"expert_units must contain only positive"),
        (lambda: ProgressiveLayeredExtraction(2, 1.5, 1, [4]), r"num_task_experts must be a positive integer"),
    ],
)
def test_layers_reject_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- architectures --------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["mmoe", "ple"])
@pytest.mark.parametrize(
    "inputs, params, expert_fan_in",
    [({"features": (5,)}, {}, 5),
     ({"image": (12, 12, 1)}, {"filters": [4], "kernel_size": 5}, 6 * 6 * 4),
     ({"a": (3,), "b": (2,)}, {"stem_units": [6]}, 6)],
    ids=["vector", "image", "two_vectors"],
)
def test_architectures_build_train_and_report_gates(architecture, inputs, params, expert_fan_in):
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model(architecture, TASKS, inputs, expert_units=[8], **params)
    assert isinstance(model, mtlzoo.MultiTaskModel) and list(model.output) == ["digit", "odd", "size"]
    layer_name = {"mmoe": "mixture_of_experts", "ple": "progressive_layered_extraction"}[architecture]
    layer = model.get_layer(layer_name)
    # Vector inputs reach the experts as they are (or through the stem's dense layers); images
    # through the shared convolutional stem.
    first_expert = layer.expert(0)[0] if architecture == "mmoe" else layer.shared_experts(0)[0]
    assert first_expert.kernel.shape == (expert_fan_in, 8)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [(c.name, c.kernel_size) for c in convs] == ([("stem_conv_0", (5, 5))] if "image" in inputs else [])
    # Mixture t feeds task t's head: gate_weights() names the gates by this order.
    assert all(model.get_layer(t.name).input is mixture for t, mixture in zip(TASKS, layer.output))

    rng = np.random.default_rng(1)
    x = {name: rng.normal(size=(32, *shape)).astype("float32") for name, shape in inputs.items()}
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(x, labels(32), epochs=2, batch_size=16, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    out = model.predict(x, verbose=0)
    assert {k: v.shape for k, v in out.items()} == {"digit": (32, 4), "odd": (32, 1), "size": (32, 2)}

    gates = gate_weights(model, x)
    assert list(gates) == ["digit", "odd", "size"]
    expected = (32, 4) if architecture == "mmoe" else (32, 1, 2 + 2)  # defaults: 4 experts; 2 own + 2 shared
    for value in gates.values():
        assert isinstance(value, np.ndarray) and value.shape == expected
        np.testing.assert_allclose(value.sum(axis=-1), 1.0, atol=1e-5)
    # The helper reports the layer's own gates for the features the model feeds it.
    features = keras.Model(model.input, layer.input).predict(x, verbose=0)
    raw = layer.gate_weights(features)
    raw = np_(raw) if architecture == "mmoe" else np_(raw[0]["tasks"])
    np.testing.assert_allclose(gates["odd"].reshape(32, -1), raw[:, 1], atol=1e-6)


def test_ple_levels_and_expert_counts_are_parameters():
    model = mtlzoo.create_model(
        "ple", TASKS, {"features": (5,)}, num_task_experts=1, num_shared_experts=3, expert_units=[8, 6, 4], head_units=[3]
    )
    layer = model.get_layer("progressive_layered_extraction")
    assert layer.num_levels == 3 and len(layer.shared_gate_layers) == 2
    assert [layer.task_experts(l, 0)[0].units for l in range(3)] == [8, 6, 4]
    assert model.get_layer("digit_head_dense_0").kernel.shape == (4, 3)
    gates = gate_weights(model, {"features": X})
    assert gates["size"].shape == (7, 3, 1 + 3)


@pytest.mark.parametrize(
    "architecture, params, message",
    [
        ("mmoe", {"num_experts": 0}, r"num_experts must be a positive integer, got 0"),
        ("mmoe", {"expert_units": []}, r"expert_units must be a non-empty list of positive integers"),
        ("ple", {"num_shared_experts": 0}, r"num_shared_experts must be a positive integer, got 0"),
        ("ple", {"expert_units": 32}, r"expert_units must be a non-empty list"),
        ("mmoe", {"bogus": 1}, r"'mmoe' does not take parameter\(s\) \['bogus'\].*num_experts"),
        ("ple", {"num_experts": 4}, r"'ple' does not take parameter\(s\) \['num_experts'\].*num_shared_experts"),
    ],
)
def test_bad_parameters_are_clear_errors(architecture, params, message):
    with pytest.raises(ValueError, match=message):
        mtlzoo.create_model(architecture, TASKS, {"features": (5,)}, **params)


def test_inputs_that_cannot_be_joined_are_rejected():
    with pytest.raises(ValueError, match=r"mmoe takes one input, or several vector inputs"):
        mtlzoo.create_model("mmoe", TASKS, {"a": (3,), "img": (8, 8, 1)})


def test_gate_weights_needs_an_expert_layer():
    plain = mtlzoo.create_model("hard_sharing", TASKS, {"features": (5,)}, shared_units=[4])
    with pytest.raises(ValueError, match="has no MixtureOfExperts or ProgressiveLayeredExtraction layer"):
        gate_weights(plain, {"features": X})
    moe = mtlzoo.create_model("mmoe", TASKS, {"features": (5,)}, expert_units=[4])
    with pytest.raises(ValueError, match=r"no MixtureOfExperts .* named 'gates'; it has \['mixture_of_experts'\]"):
        gate_weights(moe, {"features": X}, layer="gates")


# --- saving and backends ------------------------------------------------------------------

SAVED = {
    "mmoe": ({"features": (6,)}, {"stem_units": [8], "num_experts": 3, "expert_units": [8, 4], "head_units": [4]}),
    "ple": ({"image": (10, 10, 1)}, {"filters": [4], "expert_units": [8, 4]}),
}


@pytest.fixture(scope="module")
def trained():
    """An mmoe model on vectors and a ple model on images, each fitted for a few steps in TF."""
    models = {}
    for architecture, (inputs, params) in SAVED.items():
        (name, shape), = inputs.items()
        x = {name: np.random.default_rng(0).normal(size=(32, *shape)).astype("float32")}
        keras.utils.set_random_seed(1)
        model = mtlzoo.create_model(architecture, TASKS, inputs, **params)
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        model.fit(x, labels(32), epochs=2, batch_size=16, verbose=0)
        models[architecture] = model, x
    return models


@pytest.mark.slow  # by default tests/layers round-trips the two layers in process; fresh processes here
def test_keras_files_reload_bit_identically_in_a_fresh_process(tmp_path, run_python, trained):
    for architecture, (model, x) in trained.items():
        model.save(tmp_path / f"{architecture}.keras")
        np.savez(tmp_path / f"{architecture}_x.npz", **x)
        np.savez(tmp_path / f"{architecture}_pred.npz", **model.predict(x, verbose=0))
        np.savez(tmp_path / f"{architecture}_gates.npz", **gate_weights(model, x))
    proc = run_python(
        """
        import json, keras, numpy as np
        import mtlzoo
        from mtlzoo.architectures.experts import gate_weights
        result = {}
        for arch in ("mmoe", "ple"):
            model = keras.saving.load_model(f"{arch}.keras")
            x = dict(np.load(f"{arch}_x.npz"))
            preds, want = model.predict(x, verbose=0), np.load(f"{arch}_pred.npz")
            gates, want_gates = gate_weights(model, x), np.load(f"{arch}_gates.npz")
            result[arch] = {
                "predictions": {t: bool(np.array_equal(p, want[t])) for t, p in preds.items()},
                "gates": {t: bool(np.array_equal(g, want_gates[t])) for t, g in gates.items()},
                "iterations": int(model.optimizer.iterations.numpy()),
                "layers": sorted(type(l).__name__ for l in model.layers if "Experts" in type(l).__name__
                                 or "Extraction" in type(l).__name__),
            }
        print(json.dumps(result))
        """
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    same = {"digit": True, "odd": True, "size": True}
    assert result["mmoe"] == {"predictions": same, "gates": same, "iterations": 4, "layers": ["MixtureOfExperts"]}
    assert result["ple"] == {
        "predictions": same, "gates": same, "iterations": 4, "layers": ["ProgressiveLayeredExtraction"]
    }


@pytest.mark.slow
def test_models_move_between_tensorflow_and_jax(tmp_path, run_python, trained):
    for architecture, (model, x) in trained.items():
        model.save(tmp_path / f"tf_{architecture}.keras")
        np.savez(tmp_path / f"{architecture}_x.npz", **x)
    np.savez(tmp_path / "y.npz", **labels(32))
    # In JAX: load the TF-written files, and build and train models of its own.
    proc = run_python(
        f"""
        import json, keras, numpy as np
        import mtlzoo
        assert keras.backend.backend() == "jax"
        saved = {SAVED!r}
        y, losses = dict(np.load("y.npz")), {{}}
        for arch, (inputs, params) in saved.items():
            x = dict(np.load(f"{{arch}}_x.npz"))
            np.savez(f"jax_loaded_{{arch}}.npz", **keras.saving.load_model(f"tf_{{arch}}.keras").predict(x, verbose=0))
            keras.utils.set_random_seed(2)
            model = mtlzoo.create_model(arch, {[t.get_config() for t in TASKS]!r}, inputs, **params)
            model.compile(optimizer=keras.optimizers.Adam(0.01))
            losses[arch] = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history["loss"]
            model.save(f"jax_{{arch}}.keras")
            np.savez(f"jax_{{arch}}.npz", **model.predict(x, verbose=0))
        print(json.dumps(losses))
        """,
        backend="jax",
    )
    losses = json.loads(proc.stdout.strip().splitlines()[-1])
    for architecture, (model, x) in trained.items():
        assert losses[architecture][-1] < losses[architecture][0], architecture
        tf_preds = model.predict(x, verbose=0)
        jax_loaded = np.load(tmp_path / f"jax_loaded_{architecture}.npz")
        from_jax = keras.saving.load_model(tmp_path / f"jax_{architecture}.keras")
        assert isinstance(from_jax, mtlzoo.MultiTaskModel)
        jax_preds = np.load(tmp_path / f"jax_{architecture}.npz")
        for task, value in from_jax.predict(x, verbose=0).items():
            np.testing.assert_allclose(jax_loaded[task], tf_preds[task], atol=1e-5)
            np.testing.assert_allclose(value, jax_preds[task], atol=1e-5)
