"""Recipe weighting and the regularisation options of ``training``: weight decay and early
stopping (with the task means it monitors), trained for real on tiny recipes."""

import json

import keras
import numpy as np
import pytest

from helpers import small_recipe
from mtlzoo.models import shared_variables
from mtlzoo.training import callbacks as mtl_callbacks
from mtlzoo.training import trainer
from mtlzoo.weighting.gradient_methods import PCGrad

TASKS = ("task_00", "task_01", "task_10", "task_20")


def read_json(path):
    return json.loads(path.read_text())


def shared_kernel_norm(model) -> float:
    flags = shared_variables(model)
    kernels = [np.asarray(v) for v, shared in zip(model.trainable_variables, flags)
               if shared and "kernel" in v.path]
    assert kernels, "the hard-sharing trunk should have shared kernels"
    return float(np.sqrt(sum(np.sum(k ** 2) for k in kernels)))


def test_a_pcgrad_recipe_trains_records_and_reloads_its_weighting(tmp_path):
    recipe = small_recipe(epochs=1, weighting="pcgrad")
    model = trainer.train(recipe, tmp_path / "run", verbose=0)
    assert isinstance(model.weighting, PCGrad)
    info = read_json(tmp_path / "run" / "run.json")
    assert info["weighting"] == "pcgrad"
    assert info["epochs_done"] == 1 and "early_stopping" not in info
    again, reloaded = trainer.load_run(tmp_path / "run")
    assert again.training.weighting == "pcgrad"
    assert isinstance(reloaded.weighting, PCGrad)


def test_weight_decay_reaches_the_optimizer_and_shrinks_the_shared_weights(tmp_path):
    plain = trainer.train(small_recipe(epochs=2, weight_decay=0.0), tmp_path / "plain", verbose=0)
    decayed = trainer.train(small_recipe(epochs=2, weight_decay=0.5), tmp_path / "decayed", verbose=0)
    assert plain.optimizer.weight_decay is None  # 0: exactly as without the option
    assert decayed.optimizer.weight_decay == pytest.approx(0.5)
    assert shared_kernel_norm(decayed) < 0.9 * shared_kernel_norm(plain)
    # adamw: 0 is no decay (not Keras's AdamW default of 0.004); a value is passed through.
    assert trainer.make_optimizer(small_recipe(optimizer="adamw").training).weight_decay == 0.0
    assert trainer.make_optimizer(small_recipe(optimizer="adamw", weight_decay=0.1).training).weight_decay == 0.1
    assert trainer.make_optimizer(small_recipe(optimizer="sgd", weight_decay=0.1).training).weight_decay == 0.1


def test_early_stopping_stops_restores_the_best_weights_and_logs_task_means(tmp_path):
    # No epoch after the first can improve by min_delta, so patience 1 stops after epoch 2.
    recipe = small_recipe(epochs=30, early_stopping={"patience": 1, "min_delta": 1e6})
    model = trainer.train(recipe, tmp_path / "run", verbose=0)
    history = read_json(tmp_path / "run" / "history.json")
    assert len(history["loss"]) == 2 < recipe.training.epochs
    for epoch in range(2):
        per_task = [history[f"val_{t}_loss"][epoch] for t in TASKS]
        assert abs(history["mean_val_loss"][epoch] - np.mean(per_task)) < 1e-6
        per_task_mae = [history[f"val_{t}_mae"][epoch] for t in TASKS]
        assert abs(history["mean_val_mae"][epoch] - np.mean(per_task_mae)) < 1e-6
    info = read_json(tmp_path / "run" / "run.json")
    assert info["epochs"] == 30 and info["epochs_done"] == 2
    assert info["early_stopping"]["stopped_epoch"] == 2 and info["early_stopping"]["best_epoch"] == 1
    # The model kept is the best (first) epoch's: its validation losses are that epoch's.
    val = recipe.make_dataset().load("validation").select(list(TASKS)).to_tf_dataset(32)
    logs = model.evaluate(val, verbose=0, return_dict=True)
    np.testing.assert_allclose(np.mean([logs[f"{t}_loss"] for t in TASKS]), history["mean_val_loss"][0], rtol=1e-5)


@pytest.mark.slow  # long for the default run; .ci/run runs the slow set
def test_a_resumed_run_stops_where_an_uninterrupted_one_does(tmp_path):
    # Only the first epoch counts as an improvement: the run stops after epoch 4 (patience 3).
    recipe = small_recipe(epochs=20, shuffle=False, early_stopping={"patience": 3, "min_delta": 1e6})
    straight = trainer.train(recipe, tmp_path / "straight", verbose=0)
    trainer.train(recipe, tmp_path / "split", epochs=2, verbose=0)
    state = read_json(tmp_path / "split" / "checkpoints" / "state.json")
    assert state["early_stopping"]["wait"] == 1
    assert (tmp_path / "split" / "checkpoints" / state["early_stopping"]["best_weights"]).is_file()
    resumed = trainer.train(recipe, tmp_path / "split", resume=True, verbose=0)
    history = read_json(tmp_path / "split" / "history.json")
    straight_history = read_json(tmp_path / "straight" / "history.json")
    assert len(history["loss"]) == len(straight_history["loss"]) == 4
    np.testing.assert_allclose(history["mean_val_loss"], straight_history["mean_val_loss"], rtol=1e-5)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # Resuming a run that stopped early trains no further.
    again = trainer.train(recipe, tmp_path / "split", resume=True, verbose=0)
    assert len(read_json(tmp_path / "split" / "history.json")["loss"]) == 4
    for a, b in zip(again.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_monitor_the_logs_lack_fails_after_the_first_epoch_naming_the_keys(tmp_path):
    recipe = small_recipe(epochs=3, early_stopping={"monitor": "val_mean_r2", "mode": "max"})
    with pytest.raises(ValueError, match=r"'val_mean_r2'.*no such key.*'mean_val_loss'"):
        trainer.train(recipe, tmp_path / "run", verbose=0)


def test_mean_task_logs_takes_only_metrics_every_task_has():
    logs = {"val_a_loss": 1.0, "val_a_b_loss": 3.0, "val_a_mae": 2.0, "val_a_b_auc": 0.5, "loss": 9.0}
    assert mtl_callbacks.mean_task_logs(logs, ["a", "a_b"]) == {"mean_val_loss": 2.0}
    callback = mtl_callbacks.MeanTaskMetric(["a", "a_b"])
    callback.on_epoch_end(0, logs)
    assert logs["mean_val_loss"] == 2.0
    # The progress bar's own task summary does not show the means twice.
    summary = mtl_callbacks.summarize_logs(logs, ["a", "a_b"], max_tasks=1)
    assert "mean_val_loss" not in summary and summary["val_mean_loss"] == 2.0


def test_early_stopping_modes_resolve_from_the_task_metrics():
    tasks = small_recipe().tasks
    assert mtl_callbacks.resolve_mode("mean_val_loss", "auto", tasks) == "min"
    assert mtl_callbacks.resolve_mode("val_task_00_rmse", "auto", tasks) == "min"
    assert mtl_callbacks.resolve_mode("val_task_00_rmse", "max", tasks) == "max"
    assert mtl_callbacks.resolve_mode("val_mean_accuracy", "auto", tasks) == "max"
    with pytest.raises(ValueError, match="set mode"):
        mtl_callbacks.resolve_mode("val_something", "auto", tasks)
    with pytest.raises(ValueError, match="'min' or 'max'"):
        mtl_callbacks.TaskEarlyStopping(mode="auto")
    assert keras.callbacks.EarlyStopping in type.mro(mtl_callbacks.TaskEarlyStopping)
