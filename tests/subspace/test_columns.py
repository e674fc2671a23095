"""Subspace columns: theta_t = theta_0 + P Q alpha_t exactly, only Q and alpha train, the
amortized count, freezing for export, and the save/load contract on TF and JAX."""

import keras
import numpy as np
import pytest

import mtlzoo
from harness import check_model_round_trip
from mtlzoo import subspace

TASKS = [mtlzoo.Task("digit", "classification", num_classes=3), mtlzoo.Task("ink", "regression"),
         mtlzoo.Task("odd", "binary")]
X = np.random.default_rng(0).normal(size=(48, 6)).astype("float32")
Y = {"digit": np.random.default_rng(1).integers(0, 3, 48), "ink": X[:, :1] * 2.0,
     "odd": (X[:, 1:2] > 0).astype("float32")}


def make(task_dim=4, expansion="kronecker", **params):
    keras.utils.set_random_seed(0)
    return mtlzoo.create_model("subspace", TASKS, {"x": (6,)}, units=(8,), intrinsic_dim=12,
                               task_dim=task_dim, expansion=expansion, **params)


def trained(model, epochs=3):
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.fit({"x": X}, Y, epochs=epochs, batch_size=16, verbose=0)
    return model


@pytest.mark.parametrize("task_dim", [4, None])
def test_each_task_runs_theta0_plus_p_q_alpha_and_only_q_and_alpha_train(task_dim):
    model = make(task_dim)
    layer = subspace.find_columns(model)
    theta0 = [keras.ops.convert_to_numpy(v).copy() for v in layer.theta0]
    assert [v.path for v in model.trainable_variables] == (
        ["subspace_columns/coordinates"] if task_dim is None
        else ["subspace_columns/shared_basis", "subspace_columns/coordinates"])
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    losses = model.fit({"x": X}, Y, epochs=4, batch_size=16, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    for before, variable in zip(theta0, layer.theta0):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), before)  # theta_0 stays
    coords = keras.ops.convert_to_numpy(layer.coordinates)
    vectors = coords.T if task_dim is None else keras.ops.convert_to_numpy(layer.shared_basis) @ coords.T
    delta = layer.expansion.matrix() @ vectors  # (D, T), the dense reference
    flat0 = np.concatenate([t.ravel() for t in theta0])
    for t, weights in enumerate(layer.task_weights()):
        got = np.concatenate([keras.ops.convert_to_numpy(w).ravel() for w in weights])
        np.testing.assert_allclose(got, flat0 + delta[:, t], atol=1e-5)
    # Every task moved off theta_0, each its own way.
    assert all(np.abs(vectors[:, t]).max() > 1e-3 for t in range(3))
    assert len({tuple(np.round(vectors[:, t], 6)) for t in range(3)}) == 3


@pytest.mark.parametrize("weighting", ["mgda", "uncertainty"])
def test_weighting_methods_train_the_subspace(weighting):
    model = make()
    model.compile(optimizer=keras.optimizers.Adam(0.05), weighting=weighting)
    losses = model.fit({"x": X}, Y, epochs=4, batch_size=16, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_amortized_intrinsic_dimension_counts_shared_once():
    column_weights = 6 * 8 + 8 + 8 * 3 + 3  # the widest task has 3 outputs
    assert subspace.find_columns(make(4)).free_parameters() == {
        "shared": 48, "per_task": 4, "tasks": 3, "amortized": 48 / 3 + 4, "column_weights": column_weights}
    assert subspace.find_columns(make(None)).free_parameters()["amortized"] == 12


def test_frozen_columns_answer_the_same_with_no_expansion_and_export(tmp_path):
    from mtlzoo.serving.export import export_saved_model, predict_exported

    model = trained(make())
    frozen = subspace.freeze(model)
    assert not any(isinstance(l, subspace.SubspaceColumns) for l in frozen.layers)
    assert [t.name for t in frozen.tasks] == ["digit", "ink", "odd"]
    want = model.predict({"x": X}, verbose=0)
    for name, value in frozen.predict({"x": X}, verbose=0).items():
        np.testing.assert_allclose(value, want[name], atol=1e-6)
    path = export_saved_model(model, tmp_path / "subspace")
    assert predict_exported(path, {"x": X[:5]})["ink"].shape == (5, 1)
    np.testing.assert_allclose(predict_exported(path, {"x": X[:5]})["digit"], want["digit"][:5], atol=1e-5)


def test_hard_sharing_runs_one_network_whose_output_holds_every_task_side_by_side(tmp_path):
    from mtlzoo.serving.export import export_saved_model, predict_exported

    model = trained(make(task_dim=None, sharing="hard"))
    layer = subspace.find_columns(model)
    assert layer.column.outputs[0].shape[-1] == 3 + 1 + 1  # every task's outputs, not the widest
    assert tuple(layer.coordinates.shape) == (1, 12)
    assert layer.free_parameters() == {"shared": 12, "per_task": 0, "tasks": 3, "amortized": 4.0,
                                       "column_weights": 6 * 8 + 8 + 8 * 5 + 5}
    (weights,) = layer.task_weights()
    flat = np.concatenate([keras.ops.convert_to_numpy(w).ravel() for w in weights])
    flat0 = np.concatenate([keras.ops.convert_to_numpy(v).ravel() for v in layer.theta0])
    np.testing.assert_allclose(flat, flat0 + layer.expansion.matrix() @ keras.ops.convert_to_numpy(layer.coordinates)[0],
                               atol=1e-5)
    # One plain network with theta written in answers every task from its own slice of the output.
    plain = keras.models.clone_model(layer.column)
    plain.set_weights([keras.ops.convert_to_numpy(w) for w in weights])
    out = plain.predict(X, verbose=0)
    want = model.predict({"x": X}, verbose=0)
    for name, (start, stop) in {"digit": (0, 3), "ink": (3, 4), "odd": (4, 5)}.items():
        np.testing.assert_allclose(want[name], out[:, start:stop], atol=1e-5)
    frozen = subspace.freeze(model)
    assert sum(isinstance(l, keras.Model) for l in frozen.layers) == 1
    path = export_saved_model(model, tmp_path / "hard")
    np.testing.assert_allclose(predict_exported(path, {"x": X[:5]})["ink"], want["ink"][:5], atol=1e-5)
    model.save(tmp_path / "hard.keras")
    again = keras.saving.load_model(tmp_path / "hard.keras")
    np.testing.assert_array_equal(again.predict({"x": X[:8]}, verbose=0)["odd"], model.predict({"x": X[:8]}, verbose=0)["odd"])


def test_keras_files_reload_bit_identically_in_this_process(tmp_path):
    model = trained(make(expansion="sparse", levels=5), epochs=1)
    model.save(tmp_path / "subspace.keras")
    again = keras.saving.load_model(tmp_path / "subspace.keras")
    assert again.get_config() == model.get_config()
    want = model.predict({"x": X[:8]}, verbose=0)
    for name, value in again.predict({"x": X[:8]}, verbose=0).items():
        np.testing.assert_array_equal(value, want[name])


@pytest.mark.slow
@pytest.mark.parametrize("expansion", ["kronecker", "sparse"])
def test_keras_files_reload_bit_identically_on_tensorflow_and_jax(tmp_path, run_python, expansion):
    model = trained(make(expansion=expansion), epochs=1)
    check_model_round_trip(run_python, tmp_path, {"subspace": model}, {"subspace": {"x": X[:8]}})


def test_bad_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="intrinsic_dim=1000 exceeds the column's 83 weights"):
        mtlzoo.create_model("subspace", TASKS, {"x": (6,)}, units=(8,), intrinsic_dim=1000)
    with pytest.raises(ValueError, match="task_dim must be a positive integer, got 0"):
        make(task_dim=0)
    with pytest.raises(ValueError, match=r"sharing='hard' trains one network.*pass task_dim=None \(got task_dim=4\)"):
        make(task_dim=4, sharing="hard")
    with pytest.raises(ValueError, match="sharing must be 'columns' or 'hard', got 'soft'"):
        make(sharing="soft")
    with pytest.raises(ValueError, match="OutputSlice: start must be a non-negative integer, got -1"):
        subspace.OutputSlice(-1, 2)
    column = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"one tensor of 3 features \(the largest of output_sizes\), got \[\(None, 2\)\]"):
        subspace.SubspaceColumns(column, [3, 1], intrinsic_dim=4)
