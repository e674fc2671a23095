"""Evaluation: per-task metrics and the multi-task gain Δm (``metrics``); ``compare``, which
trains one recipe with several weighting methods over several seeds, and its ``report``
(tables, markdown, plot)."""

from mtlzoo.evaluation.metrics import (
    HIGHER_IS_BETTER, LOWER_IS_BETTER, by_role, delta_m, evaluate, format_table, higher_is_better, mean_over_tasks,
)

__all__ = [
    "HIGHER_IS_BETTER", "LOWER_IS_BETTER", "by_role", "delta_m", "evaluate", "format_table", "higher_is_better",
    "mean_over_tasks",
]
