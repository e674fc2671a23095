"""MUiR: block layouts, the hypermodule bank, and components of several domains sharing it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo import muir
from mtlzoo.muir import HypermoduleBank
from mtlzoo.tasks import Task

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(8, 12), (3, 3, 8, 12), (5, 8, 12)], ids=["dense", "conv2d", "conv1d"])
def test_blocks_are_the_out_by_in_matrix_cut_into_m_by_n(shape):
    kernel = RNG.normal(size=shape).astype("float32")
    m, n = 4, 2
    blocks = muir.split(kernel, (m, n))
    assert blocks.shape == (muir.block_count(shape, (m, n)), m, n) == (np.prod(shape[:-2], dtype=int) * 3 * 4, m, n)
    # Block (position, o, i) is rows o*m.. and columns i*n.. of the position's (out x in) matrix.
    matrices = kernel.reshape(-1, 8, 12).transpose(0, 2, 1)
    want = np.stack([matrices[p, o * m:(o + 1) * m, i * n:(i + 1) * n]
                     for p in range(len(matrices)) for o in range(3) for i in range(4)])
    np.testing.assert_array_equal(blocks, want)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(muir.assemble(blocks, shape)), kernel)
    assert muir.block_count((8, 10), (4, 2)) is None and muir.block_count((7, 12), (4, 2)) is None


def test_bank_generates_each_block_from_its_hypermodule_and_context():
    bank = HypermoduleBank(5, (2, 3), context_size=4, num_hypermodules=2, num_candidates=3)
    bank.build()
    assignment = RNG.integers(0, 2, (5, 3)).astype("int32")
    bank.assignment.assign(assignment)
    bank.mix_logits.assign(RNG.normal(size=(5, 3)).astype("float32"))
    h, z = (keras.ops.convert_to_numpy(v) for v in (bank.hypermodules, bank.contexts))
    logits = keras.ops.convert_to_numpy(bank.mix_logits)
    mix = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    want = np.stack([sum(mix[l, k] * (z[l] @ h[assignment[l, k]]) for k in range(3)) for l in range(5)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bank.call()), want.reshape(5, 2, 3), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bank.incumbents(), assignment[:, 0])
    single = HypermoduleBank(5, (2, 3), context_size=4)
    single.build()
    assert single.num_hypermodules == 5 and list(single.incumbents()) == [0, 1, 2, 3, 4]  # nothing shared yet
    with pytest.raises(ValueError, match=r"context_scales must give one finite number per block \(5\)"):
        HypermoduleBank(5, context_scales=[1.0, 2.0])
    with pytest.raises(ValueError, match="block_shape must be a positive integer"):
        HypermoduleBank(5, block_shape=(0, 3))


def test_generated_weights_are_he_initialised():
    keras.utils.set_random_seed(0)
    wide = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256)])
    model = muir.reparameterize({"wide": wide}, block_shape=(16, 16), context_size=4)
    (kernel,) = (keras.ops.convert_to_numpy(k) for k in model.generated_kernels().values())
    assert kernel.shape == (256, 256)
    assert kernel.std() == pytest.approx(np.sqrt(2 / 256), rel=0.05)


def domains():
    """Three components from different domains: vectors, images, sequences."""
    keras.utils.set_random_seed(0)
    x = keras.Input((8,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="school_hidden")(x)
    mlp = keras.Model(x, keras.layers.Dense(1, name="school_out")(hidden))
    image = keras.Input((6, 6, 4), name="image")
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="digits_conv")(image)
    cnn = keras.Model(image, keras.layers.Dense(3, name="digits_out")(keras.layers.Flatten()(conv)))
    sequence = keras.Input((5, 4), name="sequence")
    lstm = keras.layers.LSTM(4, name="dna_lstm")(sequence)
    rnn = keras.Model(sequence, keras.layers.Dense(1, name="dna_out")(lstm))
    return {"school": mlp, "digits": cnn, "dna": rnn}


def domain_data(n=32):
    x = {"school": RNG.normal(size=(n, 8)), "digits": RNG.normal(size=(n, 6, 6, 4)), "dna": RNG.normal(size=(n, 5, 4))}
    y = {"school": RNG.normal(size=(n, 1)), "digits": RNG.integers(0, 3, n), "dna": RNG.normal(size=(n, 1))}
    return {k: v.astype("float32") for k, v in x.items()}, y


LOSSES = {"school": "mse", "digits": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "dna": "mse"}


def test_components_of_three_domains_share_one_bank_and_freeze_exactly(tmp_path):
    model = muir.reparameterize(domains(), block_shape=(4, 4), context_size=2)
    assert [(s.component, s.path, s.count) for s in model.slots] == [
        ("digits", "digits_conv/kernel", 9), ("dna", "dna_lstm/lstm_cell/kernel", 4),
        ("dna", "dna_lstm/lstm_cell/recurrent_kernel", 4), ("school", "school_hidden/kernel", 4),
    ]
    assert sorted(model.skipped) == ["digits:digits_out/kernel", "dna:dna_out/kernel", "school:school_out/kernel"]
    assert model.bank.num_blocks == 21
    # The bank trains the reparameterized kernels; the components' own copies do not train.
    trainable = {id(v) for v in model.trainable_weights}
    assert id(model.bank.hypermodules) in trainable and id(model.bank.contexts) in trainable
    placeholders = [model.components[s.component].get_layer(s.path.split("/")[0]) for s in model.slots]
    assert not any(id(w) in trainable for layer in placeholders for w in layer.weights if w.name.endswith("kernel"))

    x, y = domain_data()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=LOSSES)
    bank_before = keras.ops.convert_to_numpy(model.bank.hypermodules).copy()
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < history[0]
    assert not np.allclose(keras.ops.convert_to_numpy(model.bank.hypermodules), bank_before)
    answers = model.predict(x, verbose=0)
    frozen = model.freeze()
    for name, component in frozen.items():
        np.testing.assert_array_equal(component.predict(x[name], verbose=0), answers[name])
        kernels = model.generated_kernels()
        for slot in (s for s in model.slots if s.component == name):
            layer = component.get_layer(slot.path.split("/")[0])
            weight = next(w for w in layer.weights if w.path == slot.path)
            np.testing.assert_array_equal(weight.numpy(), keras.ops.convert_to_numpy(kernels[f"{name}:{slot.path}"]))


def test_frozen_multitask_components_export_for_serving(tmp_path):
    keras.utils.set_random_seed(0)
    tasks = [Task("kind", "classification", num_classes=4), Task("score", "regression")]
    component = mtlzoo.create_model("hard_sharing", tasks, {"features": (8,)}, shared_units=[8, 8])
    model = muir.reparameterize({"tabular": component}, block_shape=(4, 4), context_size=2)
    x = RNG.normal(size=(6, 8)).astype("float32")
    answers = model.predict({"tabular": {"features": x}}, verbose=0)
    assert sorted(answers) == ["kind", "score"]
    frozen = model.freeze()["tabular"]
    assert isinstance(frozen, mtlzoo.MultiTaskModel)
    path = mtlzoo.export_saved_model(frozen, tmp_path / "muir")
    served = tf.saved_model.load(str(path)).signatures["serving_default"](features=tf.constant(x))
    for task in ("kind", "score"):
        np.testing.assert_allclose(served[task].numpy(), answers[task], atol=1e-5)


@pytest.mark.slow
def test_keras_file_reloads_identically_and_moves_from_jax(tmp_path, run_python):
    x, y = domain_data()
    model = muir.reparameterize(domains(), block_shape=(4, 4), context_size=2)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=LOSSES)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "tf.keras")
    np.savez(tmp_path / "x.npz", **x)
    np.savez(tmp_path / "tf_answers.npz", **model.predict(x, verbose=0))
    check = """
        import keras, numpy as np
        import mtlzoo
        from mtlzoo import muir
        x = dict(np.load("x.npz"))
        model = keras.saving.load_model("tf.keras")
        assert type(model) is muir.MuirModel
        want = np.load("tf_answers.npz")
        for name, value in model.predict(x, verbose=0).items():
            assert np.allclose(value, want[name], rtol=0, atol=TOLERANCE), name
        """
    run_python(check.replace("TOLERANCE", "0"))  # TensorFlow, a fresh process: bit-identical
    run_python(
        check.replace("TOLERANCE", "1e-5") + """
        # Train on JAX and save for the TensorFlow side.
        jax_model = keras.saving.load_model("tf.keras", compile=False)
        jax_model.compile(optimizer="adam", loss={"school": "mse", "dna": "mse",
            "digits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
        y = {"school": np.zeros((32, 1)), "digits": np.zeros(32, "int64"), "dna": np.ones((32, 1))}
        jax_model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        jax_model.save("jax.keras")
        np.savez("jax_answers.npz", **jax_model.predict(x, verbose=0))
        """,
        backend="jax",
    )
    reloaded = keras.saving.load_model(tmp_path / "jax.keras")
    want = np.load(tmp_path / "jax_answers.npz")
    for name, value in reloaded.predict(x, verbose=0).items():
        np.testing.assert_allclose(value, want[name], atol=1e-5)


def test_bad_components_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"non-empty dict \{name: keras.Model\}"):
        muir.reparameterize({})
    with pytest.raises(ValueError, match="Component 'layer' must be a built keras.Model, got Dense"):
        muir.reparameterize({"layer": keras.layers.Dense(4)})
    with pytest.raises(ValueError, match=r"block_shape must be two positive integers \(m, n\), got \(0, 4\)"):
        muir.reparameterize(domains(), block_shape=(0, 4))
    odd = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"No kernel of the components divides into \(4, 4\) blocks"):
        muir.reparameterize({"odd": odd}, block_shape=(4, 4))
    model = muir.reparameterize(domains(), block_shape=(4, 4), context_size=2)
    x, _ = domain_data(4)
    with pytest.raises(ValueError, match=r"keyed by component; missing \['dna'\]"):
        model({"school": x["school"], "digits": x["digits"]})


def _tiny_searchable(num_candidates=3, **options):
    keras.utils.set_random_seed(0)
    x = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(6, use_bias=False, name="hidden")(x)
    base = keras.Model({"x": x}, keras.layers.Dense(1, name="out")(hidden))
    return muir.reparameterize({"net": base}, block_shape=(2, 2), context_size=2,
                               num_candidates=num_candidates, **options)


def test_a_generation_gives_challengers_in_proportion_to_usage():
    model = _tiny_searchable()
    bank = model.bank
    assert bank.num_blocks == 6 and list(bank.incumbents()) == [0, 1, 2, 3, 4, 5]
    bank.assignment.assign(np.repeat(np.array([[0], [0], [0], [0], [0], [5]]), 3, axis=1).astype("int32"))
    search = muir.AlignmentSearch(challenger_share=0.5, location_fraction=1.0, fresh_probability=0.0, seed=3)
    search.set_model(model)
    search.start_generation()
    assignment = keras.ops.convert_to_numpy(bank.assignment)
    # Incumbents stay in slot 0; challengers are other hypermodules in use (never an unused one).
    np.testing.assert_array_equal(assignment[:, 0], [0, 0, 0, 0, 0, 5])
    np.testing.assert_array_equal(assignment[:5, 1:], 5)
    np.testing.assert_array_equal(assignment[5, 1:], 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bank.mix_weights()), [[0.5, 0.25, 0.25]] * 6, atol=1e-6)
    assert int(keras.ops.convert_to_numpy(bank.generation)) == 1
    # The same seed and generation draw the same challengers.
    again = _tiny_searchable()
    again.bank.assignment.assign(np.repeat(np.array([[0], [1], [1], [2], [2], [2]]), 3, axis=1).astype("int32"))
    model.bank.assignment.assign(keras.ops.convert_to_numpy(again.bank.assignment))
    model.bank.generation.assign(7)
    again.bank.generation.assign(7)
    for m in (model, again):
        s = muir.AlignmentSearch(location_fraction=0.5, fresh_probability=0.0, seed=3)
        s.set_model(m)
        s.start_generation()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.bank.assignment),
                                  keras.ops.convert_to_numpy(again.bank.assignment))


def test_each_location_keeps_the_hypermodule_with_the_most_weight():
    model = _tiny_searchable()
    bank = model.bank
    bank.assignment.assign(np.array([[0, 1, 1], [1, 2, 3], [2, 2, 2], [3, 0, 5], [4, 4, 0], [5, 1, 2]], "int32"))
    weights = np.array([[0.4, 0.3, 0.3], [0.2, 0.5, 0.3], [0.2, 0.5, 0.3], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4],
                        [0.9, 0.05, 0.05]])
    bank.set_mix_logits(np.log(weights))
    search = muir.AlignmentSearch()
    search.set_model(model)
    search.keep_winners()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bank.assignment),
                                  np.repeat(np.array([[1], [2], [2], [3], [4], [5]]), 3, axis=1))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bank.mix_weights()), 1 / 3, atol=1e-6)


def test_search_runs_in_fit_keeps_the_best_generation_and_resumes(tmp_path):
    model = _tiny_searchable(mix_lr_multiplier=10.0)
    x = RNG.normal(size=(16, 4)).astype("float32")
    y = x @ RNG.normal(size=(4, 1)).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    data = ({"net": {"x": x}}, y)
    search = muir.AlignmentSearch(location_fraction=1.0)
    answers = {}  # after each generation's winners are kept
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: answers.update({epoch + 1: model.predict(data[0], verbose=0)}))
    model.fit(*data, epochs=4, batch_size=8, validation_data=data, callbacks=[search, record], verbose=0)
    assert [h["generation"] for h in search.history] == [1, 2, 3, 4]
    best = min(search.history, key=lambda h: h["val_loss"])
    assignment = keras.ops.convert_to_numpy(model.bank.assignment)
    assert (assignment == assignment[:, :1]).all()  # one hypermodule per block after training
    assert int(keras.ops.convert_to_numpy(model.bank.generation)) == 4  # generations run, kept on restoring
    assert search.best_generation == best["generation"]
    np.testing.assert_array_equal(model.predict(data[0], verbose=0)["net"], answers[best["generation"]]["net"])
    model.save(tmp_path / "search.keras")
    resumed = keras.saving.load_model(tmp_path / "search.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(resumed.bank.assignment), assignment)
    assert resumed.bank.mix_lr_multiplier == 10.0
    more = muir.AlignmentSearch(location_fraction=1.0, monitor=None)
    resumed.fit(*data, epochs=2, batch_size=8, callbacks=[more], verbose=0)
    assert [h["generation"] for h in more.history] == [5, 6]
    with pytest.raises(ValueError, match="monitors 'val_loss', which fit did not report"):
        resumed.fit(*data, epochs=1, batch_size=8, callbacks=[muir.AlignmentSearch()], verbose=0)
    with pytest.raises(ValueError, match="needs challengers"):
        single = _tiny_searchable(num_candidates=1)
        single.compile(optimizer="adam", loss="mse")
        single.fit(*data, epochs=1, callbacks=[muir.AlignmentSearch(monitor=None)], verbose=0)
