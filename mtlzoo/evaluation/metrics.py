"""Per-task evaluation: each task scored with its own metrics, on its own labelled examples."""

from __future__ import annotations

import numpy as np

from mtlzoo import survival
from mtlzoo.data.base import MultiTaskArrays
from mtlzoo.tasks import main_tasks


# Whether a metric (or a log key naming one) is better higher or lower, by how its name ends:
# "val_task_00_auc", "binary_accuracy", "mean_absolute_error".
LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse", "msle", "mape", "crossentropy", "hinge", "divergence",
                   "kld", "poisson", "cosh")
HIGHER_IS_BETTER = ("accuracy", "acc", "auc", "precision", "recall", "f1", "score", "r2", "iou", "dice", "c_index")


def higher_is_better(metric: str) -> bool | None:
    """True when a larger ``metric`` is better (accuracy, AUC, ...), False for losses and
    errors, None when its name does not tell."""
    name = metric.lower()
    if name.endswith(LOWER_IS_BETTER):
        return False
    if name.endswith(HIGHER_IS_BETTER):
        return True
    return None


def evaluate(model, data: MultiTaskArrays, *, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """``{task: {metric: value, "examples": n}}`` for every task of ``model`` (an auxiliary
    task only where ``data`` has its targets; ``by_role`` splits the result).

    Examples whose weight for a task is 0 (not labelled for it) do not count for that task.
    A survival task also reports ``c_index_low`` and ``c_index_high``, the 95 % percentile
    bootstrap interval of its C-index (1000 resamples of the labelled examples).
    """
    predictions = model.predict(dict(data.inputs), batch_size=batch_size, verbose=0)
    results = {}
    for task in model.tasks:
        if task.role != "main" and task.name not in data.targets:
            continue  # a privileged target: there at training time only
        weight = np.asarray(data.weights[task.name], dtype="float32")
        scores = {}
        for metric in task.make_metrics():
            metric.update_state(data.targets[task.name], predictions[task.name], sample_weight=weight)
            scores[metric.name] = float(metric.result())
        if task.kind == "survival":
            labelled = weight.reshape(-1) != 0
            target = np.asarray(data.targets[task.name]).reshape(-1, 2)[labelled]
            risk = np.asarray(predictions[task.name]).reshape(-1)[labelled]
            _, scores["c_index_low"], scores["c_index_high"] = survival.concordance_interval(
                target[:, 0], target[:, 1], risk)
        scores["examples"] = int(np.count_nonzero(weight))
        results[task.name] = scores
    return results


def by_role(results: dict[str, dict[str, float]], tasks) -> tuple[dict, dict]:
    """``(main, others)``: ``results`` of the main tasks, and of the auxiliary and adversarial
    ones (reported apart: they are trained for the main tasks' sake, not served)."""
    main = {t.name for t in main_tasks(tasks)}
    return ({k: v for k, v in results.items() if k in main}, {k: v for k, v in results.items() if k not in main})


def mean_over_tasks(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over the tasks that report it."""
    metrics = sorted({m for scores in results.values() for m in scores if m != "examples"})
    return {m: float(np.mean([s[m] for s in results.values() if m in s])) for m in metrics}


def format_table(results: dict[str, dict[str, float]], auxiliary: dict[str, dict[str, float]] | None = None) -> str:
    """A fixed-width table: one row per task, one column per metric (in the order the tasks
    report them), and the mean; then the ``auxiliary`` (and adversarial) tasks' results, if
    any, in a block of their own that the mean leaves out."""
    every = {**results, **(auxiliary or {})}
    metrics = list(dict.fromkeys(m for scores in every.values() for m in scores if m != "examples"))
    width = max([len("task"), len("mean")] + [len(t) for t in every])
    header = f"{'task':<{width}}  " + "  ".join(f"{m:>10}" for m in metrics) + f"  {'examples':>8}"

    def rows(block):
        for task, scores in block.items():
            cells = "  ".join(f"{scores[m]:>10.4f}" if m in scores else f"{'':>10}" for m in metrics)
            yield f"{task:<{width}}  {cells}  {scores['examples']:>8d}"

    lines = [header, "-" * len(header), *rows(results)]
    mean = mean_over_tasks(results)
    lines.append("-" * len(header))
    lines.append(f"{'mean':<{width}}  " + "  ".join(f"{mean[m]:>10.4f}" if m in mean else f"{'':>10}" for m in metrics))
    if auxiliary:
        lines += ["", "auxiliary and adversarial tasks (trained for the tasks above; not in the mean, not served):",
                  *rows(auxiliary)]
    return "\n".join(lines)


def delta_m(results: dict[str, dict[str, float]], baselines: dict[str, dict[str, float]],
            metrics: dict[str, bool]) -> float:
    """The multi-task gain Δm (Maninis et al., CVPR 2019) in percent; positive is better.

    The mean, over the tasks of ``results`` and the metrics named in ``metrics`` (``{metric:
    higher_is_better}``), of the relative change from the single-task ``baselines``:
    ``(-1)^l * (M_multi - M_single) / M_single * 100`` with ``l = 1`` where lower is better.
    """
    changes = []
    for task, scores in results.items():
        if task not in baselines:
            raise KeyError(f"No single-task baseline for task {task!r}; baselines cover {sorted(baselines)}.")
        for metric, higher_is_better in metrics.items():
            if metric not in scores or metric not in baselines[task]:
                raise KeyError(f"Metric {metric!r} is missing for task {task!r}.")
            base = baselines[task][metric]
            if base == 0:
                raise ValueError(f"Task {task!r}: the baseline {metric} is 0, so a relative change is undefined.")
            sign = 1.0 if higher_is_better else -1.0
            changes.append(sign * (scores[metric] - base) / abs(base) * 100.0)
    if not changes:
        raise ValueError("delta_m needs at least one task and one metric.")
    return float(np.mean(changes))
