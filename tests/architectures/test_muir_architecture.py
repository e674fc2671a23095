"""MUiR inside one functional model: Reparameterized layers, the `muir` architecture, recipes."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import mtlzoo
from mtlzoo import muir
from mtlzoo.recipes.config import ConfigError, recipe_from_dict
from mtlzoo.muir import HypermoduleBank, Reparameterized
from mtlzoo.tasks import Task
from mtlzoo.training import trainer

from helpers import REPO

RNG = np.random.default_rng(0)
TASKS = [Task("kind", "classification", num_classes=4), Task("score", "regression")]


def four_layer_kinds() -> keras.Model:
    """Conv1D and LSTM on a sequence, Conv2D on an image, Dense on both: 4 x 4 blocks."""
    sequence = keras.Input((6, 4), name="sequence")
    image = keras.Input((5, 5, 4), name="image")
    layers = [keras.layers.Conv1D(8, 3, name="conv1d"), keras.layers.LSTM(4, name="lstm"),
              keras.layers.Conv2D(4, 3, name="conv2d"), keras.layers.Dense(8, name="dense")]
    counts = [3 * 2 * 1, 4 * 2 + 4 * 1, 9 * 1 * 1, 2 * 2]
    bank = HypermoduleBank(sum(counts), (4, 4), context_size=2, name="bank")
    blocks = bank(sequence)
    offsets = np.cumsum([0] + counts)
    wrapped = [Reparameterized(layer, int(offset), (4, 4), group=layer.name) for layer, offset in zip(layers, offsets)]
    h = wrapped[1]([wrapped[0]([sequence, blocks]), blocks])
    g = keras.layers.GlobalAveragePooling2D()(wrapped[2]([image, blocks]))
    out = wrapped[3]([keras.layers.Concatenate()([h, g]), blocks])
    return keras.Model({"sequence": sequence, "image": image}, keras.layers.Dense(1, name="out")(out))


def four_kinds_data(n=16):
    return {"sequence": RNG.normal(size=(n, 6, 4)).astype("float32"),
            "image": RNG.normal(size=(n, 5, 5, 4)).astype("float32")}, RNG.normal(size=(n, 1)).astype("float32")


def test_dense_conv_and_lstm_kernels_come_from_the_bank_and_train_it(tmp_path, run_python):
    keras.utils.set_random_seed(0)
    model = four_layer_kinds()
    bank = muir.find_bank(model)
    slots = {s.path: s.count for s in muir.block_slots(model)}
    assert slots == {"conv1d/kernel": 6, "lstm/lstm_cell/kernel": 8, "lstm/lstm_cell/recurrent_kernel": 4,
                     "conv2d/kernel": 9, "dense/kernel": 4}
    # Each kernel is its blocks of the bank, assembled; the layers' own kernels do not train.
    blocks = keras.ops.convert_to_numpy(bank.call())
    generated = [pair for l in model.layers if isinstance(l, Reparameterized) for pair in l.generated(blocks)]
    for slot, (variable, value) in zip(muir.block_slots(model), generated, strict=True):
        assert not variable.trainable
        np.testing.assert_array_equal(muir.split(keras.ops.convert_to_numpy(value), (4, 4)),
                                      blocks[slot.offset:slot.offset + slot.count])
    x, y = four_kinds_data()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    before = keras.ops.convert_to_numpy(bank.hypermodules).copy()
    placeholder = model.get_layer("reparameterized_1").layer.cell.kernel.numpy().copy()
    losses = model.fit(x, y, epochs=4, batch_size=8, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    assert not np.allclose(keras.ops.convert_to_numpy(bank.hypermodules), before)
    np.testing.assert_array_equal(model.get_layer("reparameterized_1").layer.cell.kernel.numpy(), placeholder)

    # Frozen: ordinary layers with the generated kernels, no bank, the same answers.
    frozen = muir.freeze(model)
    assert not any(isinstance(l, (HypermoduleBank, Reparameterized)) for l in frozen.layers)
    assert sorted(type(l).__name__ for l in frozen.layers if l.weights) == ["Conv1D", "Conv2D", "Dense", "Dense", "LSTM"]
    np.testing.assert_array_equal(frozen.predict(x, verbose=0), model.predict(x, verbose=0))



@pytest.mark.slow
def test_the_four_kinds_move_to_jax_and_train_there(tmp_path, run_python):
    keras.utils.set_random_seed(0)
    model = four_layer_kinds()
    x, y = four_kinds_data()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    # The .keras file moves to JAX and answers the same there; JAX trains it.
    model.save(tmp_path / "tf.keras")
    np.savez(tmp_path / "x.npz", **x, y=y)
    np.save(tmp_path / "want.npy", model.predict(x, verbose=0))
    run_python("""
        import keras, numpy as np
        import mtlzoo
        from mtlzoo import muir
        data = dict(np.load("x.npz")); y = data.pop("y")
        model = keras.saving.load_model("tf.keras")
        assert np.allclose(model.predict(data, verbose=0), np.load("want.npy"), atol=1e-5)
        before = keras.ops.convert_to_numpy(muir.find_bank(model).contexts).copy()
        model.fit(data, y, epochs=2, batch_size=8, verbose=0)
        assert not np.allclose(keras.ops.convert_to_numpy(muir.find_bank(model).contexts), before)
        """, backend="jax")


def test_reparameterized_layer_errors_say_what_was_expected():
    x = keras.Input((6,))
    blocks = HypermoduleBank(4, (4, 4), name="bank")(x)
    with pytest.raises(ValueError, match=r"kernels \[\(6, 8\)\] of 'd' do not divide into \(4, 4\) blocks"):
        Reparameterized(keras.layers.Dense(8, name="d"), block_shape=(4, 4))([x, blocks])
    y = keras.Input((8,))
    with pytest.raises(ValueError, match="blocks 2..5 are beyond the bank's 4"):
        Reparameterized(keras.layers.Dense(8), offset=2, block_shape=(4, 4))([y, blocks])
    with pytest.raises(ValueError, match=r"must be the bank's blocks, shape \(L, 2, 2\)"):
        Reparameterized(keras.layers.Dense(8), block_shape=(2, 2))([y, blocks])
    with pytest.raises(ValueError, match="offset must be an integer >= 0"):
        Reparameterized(keras.layers.Dense(8), offset=-1)


def test_muir_architecture_gives_each_task_a_column_generated_by_one_bank(tmp_path):
    keras.utils.set_random_seed(0)
    model = mtlzoo.create_model("muir", TASKS, {"features": (8,)}, units=[8, 8], block_shape=[4, 4],
                                context_size=2)
    bank = muir.find_bank(model)
    # Per task: dense_0 (8x8), dense_1 (8x8) = 4 + 4 blocks; the kind head (8x4) 2 blocks; the
    # score head (8x1) does not divide and stays an ordinary Dense.
    groups = {}
    for slot in muir.block_slots(model):
        groups.setdefault(slot.component, []).append((slot.path, slot.count))
    assert groups == {
        "kind": [("kind_dense_0/kernel", 4), ("kind_dense_1/kernel", 4), ("kind/kernel", 2)],
        "score": [("score_dense_0/kernel", 4), ("score_dense_1/kernel", 4)],
    }
    assert bank.num_blocks == 18 and bank.num_hypermodules == 18  # the pessimistic start
    assert muir.sharing_summary(model)["shared_hypermodules"] == 0
    # Hand the first block of both tasks' dense_1 to one hypermodule: the summary shows it.
    psi = bank.incumbents().copy()
    kind_dense_1 = next(s.offset for s in muir.block_slots(model) if s.path == "kind_dense_1/kernel")
    score_dense_1 = next(s.offset for s in muir.block_slots(model) if s.path == "score_dense_1/kernel")
    psi[score_dense_1] = psi[kind_dense_1]
    bank.assignment.assign(np.repeat(psi[:, None], bank.num_candidates, axis=1))
    summary = muir.sharing_summary(model)
    assert summary["cross_component"] == {int(psi[kind_dense_1]): ["kind", "score"]}
    assert summary["kernel_pairs"] == {"kind:kind_dense_1/kernel | score:score_dense_1/kernel": 1}

    # Exported, the SavedModel holds ordinary kernels only and answers as the model does.
    x = RNG.normal(size=(5, 8)).astype("float32")
    path = mtlzoo.export_saved_model(model, tmp_path / "muir")
    loaded = tf.saved_model.load(str(path))
    names = [v.name for v in loaded.variables]
    assert not any("hypermodules" in n or "contexts" in n or "assignment" in n for n in names), names
    served = loaded.signatures["serving_default"](features=tf.constant(x))
    for task, value in model.predict({"features": x}, verbose=0).items():
        np.testing.assert_allclose(served[task].numpy(), value, atol=1e-5)
    with pytest.raises(mtlzoo.serving.export.ExportError, match="export each one from model.freeze()"):
        component = mtlzoo.create_model("hard_sharing", TASKS, {"features": (8,)}, shared_units=[8])
        mtlzoo.export_saved_model(muir.reparameterize({"a": component}, block_shape=(4, 4)), tmp_path / "x")


def muir_recipe(**training) -> dict:
    raw = yaml.safe_load((REPO / "zoo_configs" / "kang_muir.yaml").read_text())
    raw["tasks"] = ["task_00", "task_01", "task_10", "task_20"]
    raw["training"].update({"epochs": 3, "steps_per_epoch": 5, **training})
    raw["training"]["alignment_search"]["generations"] = 2
    return raw


def test_recipe_searches_for_its_generations_then_trains_the_best_and_resumes(tmp_path):
    recipe = recipe_from_dict(muir_recipe(), source="test")
    model = trainer.train(recipe, tmp_path / "run", verbose=0)
    bank = muir.find_bank(model)
    assignment = keras.ops.convert_to_numpy(bank.assignment)
    assert (assignment == assignment[:, :1]).all()  # no challengers once the search is over
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == 3
    # Epoch 3 trained the best generation's alignment; the checkpoint keeps it, and the count
    # of generations run, so the resumed run does not search again.
    saved = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "last.keras")
    assert int(keras.ops.convert_to_numpy(muir.find_bank(saved).generation)) == 2
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(muir.find_bank(saved).assignment), assignment)
    resumed = trainer.train(recipe, tmp_path / "run", resume=True, epochs=4, verbose=0)
    assert int(keras.ops.convert_to_numpy(muir.find_bank(resumed).generation)) == 2
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(muir.find_bank(resumed).assignment), assignment)
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())["loss"]) == 4


def test_recipe_early_stopping_scores_only_the_epochs_after_the_search(tmp_path):
    # No epoch can improve by min_delta: the first epoch after the two generations is the best,
    # the next one stops the run. Scored from epoch 1, it would have stopped during the search.
    raw = muir_recipe(epochs=8)
    raw["training"]["early_stopping"].update(patience=1, min_delta=1e6, start_from_epoch=2)
    recipe = recipe_from_dict(raw, source="test")
    model = trainer.train(recipe, tmp_path / "run", verbose=0)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["epochs_done"] == 4
    assert (info["early_stopping"]["best_epoch"], info["early_stopping"]["stopped_epoch"]) == (3, 4)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert info["early_stopping"]["best"] == pytest.approx(history["val_loss"][2])
    # The model kept is epoch 3's, with the search's alignment and no intercepts in the heads
    # (the recipe's output_bias: false).
    assert int(keras.ops.convert_to_numpy(muir.find_bank(model).generation)) == 2
    assert not [v.path for v in model.weights if v.path.endswith("bias")]
    val = recipe.load_split(recipe.make_dataset(), "validation").to_tf_dataset(300)
    logs = model.evaluate(val, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(history["val_loss"][2], rel=1e-5)


@pytest.mark.parametrize("change, message", [
    ({"alignment_search": {"lambda": 2}}, r"training.alignment_search.lambda: unknown key"),
    ({"alignment_search": {"location_fraction": 2}}, "location_fraction must be between 0 and 1"),
    ({"alignment_search": {"generations": 0}}, "generations must be None or a positive integer"),
    ({"alignment_search": [1]}, "expected a mapping of AlignmentSearch options"),
    ({"steps_per_epoch": 0}, "steps_per_epoch: expected a positive integer or null"),
])
def test_bad_search_settings_are_config_errors(change, message):
    raw = muir_recipe()
    raw["training"].update(change)
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict(raw, source="test")
