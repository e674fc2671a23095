import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from helpers import small_recipe, small_recipe_dict
from mtlzoo.recipes.config import recipe_from_dict
from mtlzoo.training import trainer
from mtlzoo.training.strategies import make_strategy


def weights_of(model):
    return [np.asarray(w) for w in model.get_weights()]


def max_abs_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


class SeesEachEpochEnd(keras.callbacks.Callback):
    """What a user's callback finds at the end of each epoch: the checkpoint and the logs."""

    def __init__(self, state_path):
        super().__init__()
        self.state_path, self.seen = state_path, []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append((epoch, json.loads(self.state_path.read_text())["epochs_done"], sorted(logs)))


def test_train_writes_a_complete_run_directory_and_learns(tmp_path):
    recipe = small_recipe(epochs=4)
    run = tmp_path / "run"
    user = SeesEachEpochEnd(run / "checkpoints" / "state.json")
    model = trainer.train(recipe, run, verbose=0, callbacks=[user])
    for name in ("recipe.yaml", "model.keras", "history.json", "run.json", "checkpoints/last.keras"):
        assert (run / name).is_file(), name
    assert list((run / "logs" / "train").glob("events.out.tfevents.*")), "no TensorBoard events"
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 4 and len(history["val_loss"]) == 4
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert set(history) >= {"task_00_rmse", "val_task_20_mae"}
    info = json.loads((run / "run.json").read_text())
    assert info["replicas"] == 1 and info["parameters"] == model.count_params()
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epochs_done"] == 4
    assert [t.name for t in model.tasks] == ["task_00", "task_01", "task_10", "task_20"]
    # The user's callback runs after the zoo's: that epoch is checkpointed, its task means logged.
    assert [(epoch, done) for epoch, done, _ in user.seen] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert all({"loss", "val_loss", "task_00_rmse", "mean_val_loss"} <= set(keys) for _, _, keys in user.seen)


def test_a_callback_that_is_not_a_keras_callback_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match="keras.callbacks.Callback instances, got <function"):
        trainer.train(small_recipe(), tmp_path / "run", verbose=0, callbacks=[lambda epoch, logs: None])
    assert not (tmp_path / "run").exists()


def test_tensorboard_logs_hold_one_scalar_per_epoch_and_no_batch_scalars(tmp_path):
    trainer.train(small_recipe(epochs=3), tmp_path / "run", verbose=0)
    for split in ("train", "validation"):
        tags = {}
        for path in (tmp_path / "run" / "logs" / split).glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    tags.setdefault(value.tag, []).append(event.step)
        assert tags["epoch_loss"] == [0, 1, 2], split
        assert tags["epoch_task_00_loss"] == [0, 1, 2], split
        assert not [tag for tag in tags if tag.startswith("batch_")], split


def test_a_non_empty_run_directory_is_not_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(trainer.RunDirError, match="not empty"):
        trainer.train(small_recipe(), tmp_path / "run", verbose=0)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    with pytest.raises(trainer.RunDirError, match="does not look like a run directory"):
        trainer.train(small_recipe(), tmp_path / "run", overwrite=True, verbose=0)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    with pytest.raises(trainer.RunDirError, match="Nothing to resume"):
        trainer.train(small_recipe(), tmp_path / "empty", resume=True, verbose=0)


def test_resume_continues_with_the_optimizer_state(tmp_path):
    # Shuffling off: the resumed run then sees exactly the batches of an uninterrupted one.
    recipe = small_recipe(epochs=4, shuffle=False)
    straight = trainer.train(recipe, tmp_path / "straight", verbose=0)
    trainer.train(recipe, tmp_path / "split", epochs=2, verbose=0)
    shutil.copy(tmp_path / "split" / "checkpoints" / "last.keras", tmp_path / "epoch2.keras")
    resumed = trainer.train(recipe, tmp_path / "split", resume=True, verbose=0)
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations)
    assert max_abs_diff(weights_of(resumed), weights_of(straight)) < 1e-6
    history = json.loads((tmp_path / "split" / "history.json").read_text())
    straight_history = json.loads((tmp_path / "straight" / "history.json").read_text())
    np.testing.assert_allclose(history["loss"], straight_history["loss"], rtol=1e-5)
    # Continuing the same weights with a fresh optimizer (Adam moments reset) lands measurably
    # elsewhere: the comparison above would catch a resume that lost the optimizer state.
    restarted = keras.saving.load_model(tmp_path / "epoch2.keras")
    restarted.compile(optimizer=trainer.make_optimizer(recipe.training))
    train = recipe.make_dataset().load("train").select([t.name for t in recipe.tasks])
    restarted.fit(train.to_tf_dataset(recipe.training.batch_size), epochs=2, verbose=0, shuffle=False)
    assert max_abs_diff(weights_of(restarted), weights_of(straight)) > 1e-3


def test_overwrite_replaces_an_earlier_run(tmp_path):
    trainer.train(small_recipe(epochs=2), tmp_path / "run", verbose=0)
    trainer.train(small_recipe(epochs=1), tmp_path / "run", overwrite=True, verbose=0)
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())["loss"]) == 1


def test_resume_refuses_a_different_recipe(tmp_path):
    trainer.train(small_recipe(epochs=1), tmp_path / "run", verbose=0)
    with pytest.raises(trainer.RunDirError, match="recipe differs"):
        trainer.train(small_recipe(epochs=2, learning_rate=0.5), tmp_path / "run", resume=True, verbose=0)


def test_mirrored_on_two_cpu_devices_matches_one_device(tmp_path):
    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    recipe = small_recipe(epochs=3, shuffle=False)
    one = trainer.train(recipe, tmp_path / "one", strategy="one_device", verbose=0)
    two = trainer.train(recipe, tmp_path / "two", strategy="mirrored", verbose=0)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["replicas"] == 2
    # The variables really live on both devices (one copy per replica).
    kernel = two.get_layer("shared_dense_0").kernel.value
    assert isinstance(kernel, tf.distribute.DistributedValues)
    devices = sorted(v.device.split("/")[-1] for v in kernel.values)
    assert devices == ["device:CPU:0", "device:CPU:1"]
    # Same global batches: each replica computes half of each batch, gradients are summed, so
    # the result equals one-device training up to float32 summation order.
    assert max_abs_diff(weights_of(one), weights_of(two)) < 1e-5
    assert int(one.optimizer.iterations.numpy()) == int(two.optimizer.iterations.numpy())


@pytest.mark.slow  # two mirrored runs (15 s); .ci/run runs the slow set
def test_models_of_different_shapes_train_one_after_another_under_mirrored(tmp_path):
    # A fresh MirroredStrategy per run reused the first one's collective keys, and the second
    # model's all-reduce failed ("Shape mismatch in the collective instance").
    first = small_recipe_dict(epochs=1)
    first["architecture"]["params"].update(shared_units=[16], dropout=0.3)
    trainer.train(recipe_from_dict(first), tmp_path / "first", strategy="mirrored", verbose=0)
    second = trainer.train(small_recipe(epochs=1), tmp_path / "second", strategy="mirrored", verbose=0)
    assert json.loads((tmp_path / "second" / "run.json").read_text())["replicas"] == 2
    assert all(np.isfinite(w).all() for w in second.get_weights())


@pytest.mark.slow
def test_jax_data_parallel_on_two_devices_matches_one_device(tmp_path, run_python):
    run_python("""
        import json, keras, numpy as np
        from helpers import small_recipe
        from mtlzoo.training import trainer
        recipe = small_recipe(epochs=3, shuffle=False)
        two = trainer.train(recipe, "two", strategy="auto", verbose=0)
        one = trainer.train(recipe, "one", strategy="one_device", verbose=0)
        assert json.load(open("two/run.json"))["replicas"] == 2
        assert json.load(open("one/run.json"))["replicas"] == 1
        kernel = two.get_layer("shared_dense_0").kernel.value
        assert len(kernel.sharding.device_set) == 2  # replicated on both devices
        diff = max(float(np.abs(a - b).max()) for a, b in zip(two.get_weights(), one.get_weights()))
        assert diff < 1e-5, diff
        np.save("answer.npy", two.predict({"features": np.ones((4, 20), "float32")}, verbose=0)["task_00"])
        """, backend="jax", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                                 "PYTHONPATH": f"{REPO / 'tests'}"})
    # The weights move to TensorFlow: the same run directory loads and answers alike there.
    _, model = trainer.load_run(tmp_path / "two")
    answer = model.predict({"features": np.ones((4, 20), "float32")}, verbose=0)["task_00"]
    np.testing.assert_allclose(answer, np.load(tmp_path / "answer.npy"), atol=1e-5)
