"""Callbacks for ``mtlzoo train``: a readable progress bar for many tasks, task means of the
validation metrics, early stopping on them, and run records (with what ``--resume`` needs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from mtlzoo import evaluation, io
from mtlzoo.errors import TrainingDiverged
from mtlzoo.tasks import main_tasks

DEFAULT_MONITOR = "mean_val_loss"
MONITOR_MODES = ("auto", "min", "max")
MEAN_PREFIX = "mean_val_"

# Metric names whose direction a metric object does not declare itself (plain functions).


def _summary_key(key: str, task_names: list[str]) -> str | None:
    """``val_task_03_rmse`` -> ``val_mean_rmse``; None for keys that are not per-task."""
    prefix = "val_" if key.startswith("val_") else ""
    rest = key[len(prefix):]
    for name in task_names:  # longest first, so "a_b" wins over "a" for "a_b_loss"
        if rest.startswith(name + "_"):
            return f"{prefix}mean_{rest[len(name) + 1:]}"
    return None


def summarize_logs(logs: dict, task_names, max_tasks: int = 4) -> dict:
    """Per-task log entries averaged over tasks when there are more than ``max_tasks`` tasks.

    Keras logs ``<task>_<metric>`` for every task and metric; thirty tasks make a progress
    bar nobody can read, so beyond a few tasks it shows ``mean_<metric>`` instead.
    """
    logs = dict(logs or {})
    if len(task_names) <= max_tasks:
        return logs
    names = sorted(task_names, key=len, reverse=True)
    summary, groups = {}, {}
    for key, value in logs.items():
        if key.startswith(MEAN_PREFIX):
            continue  # MeanTaskMetric's mean_val_<m> is the val_mean_<m> shown here
        group = _summary_key(key, names)
        if group is None:
            summary[key] = value
        else:
            groups.setdefault(group, []).append(float(value))
    summary.update({k: float(np.mean(v)) for k, v in groups.items()})
    return summary


class TaskProgbar(keras.callbacks.ProgbarLogger):
    """The Keras progress bar, showing task means instead of every task when there are many."""

    def __init__(self, task_names, max_tasks: int = 4):
        super().__init__()
        self.task_names = list(task_names)
        self.max_tasks = max_tasks

    def _summary(self, logs):
        return summarize_logs(logs, self.task_names, self.max_tasks)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._summary(logs))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self._summary(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._summary(logs))

    def on_test_end(self, logs=None):
        super().on_test_end(self._summary(logs))


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """TensorBoard scalars once per epoch (train and validation), at no cost per batch.

    Keras 3.15's ``TensorBoard`` with ``update_freq="epoch"`` still handles every batch: it
    turns each log value into a summary op that records nothing, and its batch hooks make ``fit``
    wait for every step's logs. With many tasks that costs more than the training step itself
    (about 37 ms a batch for the 30-task ``kang_muir`` recipe). Here the batch hooks are the base
    class's no-ops, so Keras dispatches them asynchronously; the model graph (written on the
    first batch) is not written.
    """

    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end
    on_test_batch_begin = keras.callbacks.Callback.on_test_batch_begin
    on_test_batch_end = keras.callbacks.Callback.on_test_batch_end

    def __init__(self, log_dir):
        super().__init__(log_dir=log_dir, update_freq="epoch", profile_batch=0, write_graph=False)


class RunRecorder(keras.callbacks.Callback):
    """After every epoch: the model (with optimizer state) and the history so far, atomically.

    ``checkpoints/last.keras`` plus ``checkpoints/state.json`` (epochs done, history) are what
    ``mtlzoo train --resume`` restarts from; ``history.json`` is the per-epoch log (every key
    of the epoch logs, the ``mean_val_*`` of ``MeanTaskMetric`` included when it runs first).
    With ``writes=False`` (multi-worker workers other than the chief) it only keeps the history.

    ``extra_state`` maps a state.json key to a callback with ``checkpoint_state(directory)``
    (called after it, so put the recorder after such callbacks), e.g. ``TaskEarlyStopping``.
    """

    def __init__(self, run_dir, history: dict | None = None, writes: bool = True, extra_state=None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.writes = writes
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.extra_state = dict(extra_state or {})

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.keras"

    @property
    def state_path(self) -> Path:
        return self.run_dir / "checkpoints" / "state.json"

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if not self.writes:
            return
        io.save_model(self.model, self.checkpoint_path)
        state = {"epochs_done": epoch + 1, "history": self.history, "random_state": random_state(self.model)}
        for key, callback in self.extra_state.items():
            state[key] = callback.checkpoint_state(self.state_path.parent)
        # The state names the checkpoint it belongs to only after that checkpoint is complete.
        io.write_json(self.state_path, state)
        io.write_json(self.run_dir / "history.json", self.history)


def _random_state_variables(model) -> list:
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights and v.name == "seed_generator_state"]


def random_state(model) -> list[list[int]]:
    """The states of the model's random generators (dropout's, a weighting's), in model order.

    They are not weights, so a ``.keras`` file does not keep them; a resumed run restores them
    from ``state.json`` to draw what an uninterrupted run would have drawn.
    """
    return [np.asarray(keras.ops.convert_to_numpy(v.value)).tolist() for v in _random_state_variables(model)]


def restore_random_state(model, state: Sequence[Sequence[int]]) -> None:
    """Set the generator states ``random_state`` returned (``ValueError`` if they do not fit)."""
    variables = _random_state_variables(model)
    shapes = [list(np.shape(s)) for s in state]
    if shapes != [list(v.shape) for v in variables]:
        raise ValueError(f"holds {len(state)} random generator states of shapes {shapes}; the model has "
                         f"{[list(v.shape) for v in variables]}")
    for variable, value in zip(variables, state):
        variable.assign(np.asarray(value, dtype=variable.dtype))




class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with ``TrainingDiverged`` when an epoch's loss or validation loss is not
    finite, before any later callback records or checkpoints that epoch."""

    def on_epoch_end(self, epoch, logs=None):
        bad = {k: float(v) for k, v in (logs or {}).items() if k in ("loss", "val_loss") and not np.isfinite(v)}
        if bad:
            shown = ", ".join(f"{k} {v}" for k, v in bad.items())
            raise TrainingDiverged(
                f"training diverged in epoch {epoch + 1} ({shown}); the last finite checkpoint is kept. "
                "Lower training.learning_rate, or check the data and the task weights."
            )


# ---------------------------------------------------------------------------------------------
# Task means and early stopping


def _metric_name(metric) -> str:
    return getattr(metric, "name", None) or getattr(metric, "__name__", None) or str(metric)


def name_mode(name: str) -> str | None:
    """``min`` / ``max`` for a metric or log key by its name (``val_task_00_auc``: ``max``); None
    when the name does not tell."""
    up = evaluation.higher_is_better(name)
    return None if up is None else ("max" if up else "min")


def predicted_log_keys(tasks) -> dict[str, str | None]:
    """The epoch log keys training these tasks produces, each with its direction (``min``,
    ``max`` or None when unknown): ``loss``, ``<task>_<metric>``, their ``val_`` versions and
    the ``mean_val_<metric>`` that ``MeanTaskMetric`` adds for metrics every main task reports."""
    per_task: dict[str, dict[str, str | None]] = {}
    for task in tasks:
        metrics: dict[str, str | None] = {"loss": "min"}
        try:
            made = task.make_metrics()
        except (ValueError, TypeError):
            made = []
        for metric in made:
            metrics[_metric_name(metric)] = name_mode(_metric_name(metric))
        per_task[task.name] = metrics
    main = [t.name for t in main_tasks(tasks)]  # the means are over the main tasks
    common = set.intersection(*(set(per_task[t]) for t in main)) if main else {"loss"}
    keys: dict[str, str | None] = {}
    for metric in sorted(common, key=lambda m: (m != "loss", m)):
        modes = {per_task[t][metric] for t in main} or {"min"}
        keys[MEAN_PREFIX + metric] = modes.pop() if len(modes) == 1 else None
    keys.update(loss="min", val_loss="min")
    for name, metrics in per_task.items():
        for metric, mode in metrics.items():
            keys[f"{name}_{metric}"] = mode
            keys[f"val_{name}_{metric}"] = mode
    return keys


def resolve_mode(monitor: str, mode: str, tasks) -> str:
    """``mode`` itself if ``min`` or ``max``; for ``auto``, the monitored key's direction."""
    if mode in ("min", "max"):
        return mode
    resolved = predicted_log_keys(tasks).get(monitor) or name_mode(monitor)
    if resolved is None:
        raise ValueError(f"Cannot tell whether {monitor!r} should go down or up; set mode to 'min' or 'max'.")
    return resolved


def mean_task_logs(logs: Mapping[str, Any], task_names: Sequence[str], prefix: str = "val_") -> dict[str, float]:
    """``mean_val_<metric>``: the mean over tasks of ``val_<task>_<metric>``, for every metric
    that every task logs (``loss`` included: the unweighted mean of the task losses)."""
    names = list(task_names)
    if not names:
        return {}
    first = f"{prefix}{names[0]}_"
    if len(names) == 1 and not any(k.startswith(first) for k in logs):
        # A model with one output: Keras logs val_<metric> without the task's name.
        return {f"mean_{k}": float(v) for k, v in logs.items()
                if k.startswith(prefix) and not k.startswith(f"{prefix}mean_")}
    candidates = sorted(k[len(first):] for k in logs if k.startswith(first))
    means = {}
    for metric in candidates:
        keys = [f"{prefix}{name}_{metric}" for name in names]
        if all(k in logs for k in keys):
            means[f"mean_{prefix}{metric}"] = float(np.mean([float(logs[k]) for k in keys]))
    return means


class MeanTaskMetric(keras.callbacks.Callback):
    """Adds ``mean_val_<metric>`` (see ``mean_task_logs``) to the epoch logs.

    Put it before the callbacks that should see the means (early stopping, ``RunRecorder``,
    TensorBoard): Keras hands one logs dict to every callback in turn. ``task_names``
    defaults to the model's main tasks (auxiliary and adversarial ones only help those).
    """

    def __init__(self, task_names: Sequence[str] | None = None):
        super().__init__()
        self.task_names = list(task_names) if task_names is not None else None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        names = self.task_names
        if names is None:
            names = [t.name for t in main_tasks(getattr(self.model, "tasks", ()))]
        logs.update(mean_task_logs(logs, names))


class TaskEarlyStopping(keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` for runs: a clear error for a monitor that is not
    logged, and a state that ``RunRecorder`` checkpoints so a resumed run stops (and restores
    the best weights) exactly as an uninterrupted one would.

    ``mode`` must be ``min`` or ``max`` (``resolve_mode`` turns ``auto`` into one). With
    ``restore_best_weights`` the model ends with the best epoch's weights whether or not
    training stopped early.
    """

    def __init__(self, monitor: str = DEFAULT_MONITOR, patience: int = 5, min_delta: float = 0.0,
                 restore_best_weights: bool = True, mode: str = "min", start_from_epoch: int = 0,
                 verbose: int = 0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}; resolve 'auto' with resolve_mode().")
        super().__init__(monitor=monitor, patience=patience, min_delta=min_delta, mode=mode,
                         restore_best_weights=restore_best_weights, start_from_epoch=start_from_epoch,
                         verbose=verbose)
        self._restored: dict | None = None
        self._written: tuple[int, str] | None = None  # (best epoch, file) last checkpointed

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch > 0

    @property
    def already_stopped(self) -> bool:
        """Whether the state given to ``restore_state`` is that of a run that stopped early."""
        return bool(self._restored and int(self._restored.get("stopped_epoch", 0)) > 0)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._restored is not None:
            state = self._restored
            self.wait = int(state["wait"])
            self.best = None if state["best"] is None else float(state["best"])
            self.best_epoch = int(state["best_epoch"])
            self.stopped_epoch = int(state["stopped_epoch"])
            self.best_weights = state.get("weights")

    def get_monitor_value(self, logs):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"Early stopping monitors {self.monitor!r}, but the epoch logs have no such key; "
                f"they have {sorted(logs)}. Set training.early_stopping.monitor to one of them."
            )
        return float(logs[self.monitor])

    # --- checkpointing (RunRecorder calls these) ---

    def checkpoint_state(self, directory: Path) -> dict[str, Any]:
        """The state after this epoch, as JSON; writes the best weights beside it when they changed."""
        directory = Path(directory)
        weights_file = None
        if self.restore_best_weights and self.best_weights is not None:
            if self._written is None or self._written[0] != self.best_epoch:
                name = f"best-{self.best_epoch + 1:04d}.npz"
                with io.atomic_path(directory / name, suffix=".npz") as tmp:
                    np.savez(tmp, *[np.asarray(w) for w in self.best_weights])
                previous = self._written[1] if self._written else None
                # Keep the file the state on disk still names until the new state replaces it.
                for old in directory.glob("best-*.npz"):
                    if old.name not in (name, previous):
                        old.unlink(missing_ok=True)
                self._written = (self.best_epoch, name)
            weights_file = self._written[1]
        return {
            "monitor": self.monitor,
            "wait": int(self.wait),
            "best": None if self.best is None else float(self.best),
            "best_epoch": int(self.best_epoch),
            "stopped_epoch": int(self.stopped_epoch),
            "best_weights": weights_file,
        }

    def restore_state(self, state: Mapping[str, Any] | None, directory: Path) -> None:
        """Continue from a ``checkpoint_state`` (applied when training begins)."""
        if not state:
            return
        state = dict(state)
        if state.get("best_weights"):
            with np.load(Path(directory) / state["best_weights"]) as saved:
                state["weights"] = [saved[f"arr_{i}"] for i in range(len(saved.files))]
            self._written = (int(state["best_epoch"]), state["best_weights"])
        self._restored = state

    def summary(self) -> dict[str, Any]:
        """For run.json: where it stopped (None if it did not) and the best epoch (1-based)."""
        return {
            "monitor": self.monitor,
            "stopped_epoch": self.stopped_epoch + 1 if self.stopped else None,
            "best_epoch": self.best_epoch + 1 if self.best is not None else None,
            "best": None if self.best is None else float(self.best),
            "restored_best_weights": bool(self.restore_best_weights and self.best_weights is not None),
        }
