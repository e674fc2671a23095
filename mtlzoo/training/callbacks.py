"""Callbacks for ``mtlzoo train``: a readable progress bar for many tasks, and run records."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from mtlzoo import io


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

    def _update_progbar(self, batch, logs=None):
        super()._update_progbar(batch, summarize_logs(logs, self.task_names, self.max_tasks))

    def _finalize_progbar(self, logs):
        super()._finalize_progbar(summarize_logs(logs, self.task_names, self.max_tasks))


class RunRecorder(keras.callbacks.Callback):
    """After every epoch: the model (with optimizer state) and the history so far, atomically.

    ``checkpoints/last.keras`` plus ``checkpoints/state.json`` (epochs done, history) are what
    ``mtlzoo train --resume`` restarts from; ``history.json`` is the per-epoch log. With
    ``writes=False`` (multi-worker workers other than the chief) it only keeps the history.
    """

    def __init__(self, run_dir, history: dict | None = None, writes: bool = True):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.writes = writes
        self.history = {k: list(v) for k, v in (history or {}).items()}

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
        # The state names the checkpoint it belongs to only after that checkpoint is complete.
        io.write_json(self.state_path, {"epochs_done": epoch + 1, "history": self.history})
        io.write_json(self.run_dir / "history.json", self.history)
