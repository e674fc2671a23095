"""Per-task evaluation helpers: the multi-task gain Δm."""

import pytest

from mtlzoo.evaluation import delta_m, higher_is_better


def test_delta_m_averages_relative_changes_with_the_metric_direction():
    single = {"left": {"accuracy": 0.80, "rmse": 2.0}, "right": {"accuracy": 0.50, "rmse": 1.0}}
    multi = {"left": {"accuracy": 0.88, "rmse": 1.5}, "right": {"accuracy": 0.45, "rmse": 1.5}}
    # accuracy: +10 % and -10 %; rmse (lower is better): +25 % and -50 %.
    assert delta_m(multi, single, {"accuracy": True}) == pytest.approx(0.0)
    assert delta_m(multi, single, {"rmse": False}) == pytest.approx(-12.5)
    assert delta_m(multi, single, {"accuracy": True, "rmse": False}) == pytest.approx(-6.25)
    assert delta_m(single, single, {"accuracy": True}) == 0.0


def test_delta_m_names_what_is_missing():
    single = {"left": {"accuracy": 0.8}}
    with pytest.raises(KeyError, match="No single-task baseline for task 'right'"):
        delta_m({"right": {"accuracy": 0.9}}, single, {"accuracy": True})
    with pytest.raises(KeyError, match="Metric 'auc' is missing for task 'left'"):
        delta_m({"left": {"accuracy": 0.9}}, single, {"auc": True})
    with pytest.raises(ValueError, match="baseline accuracy is 0"):
        delta_m({"left": {"accuracy": 0.9}}, {"left": {"accuracy": 0.0}}, {"accuracy": True})


@pytest.mark.parametrize("metric, expected", [
    ("accuracy", True), ("binary_accuracy", True), ("val_task_00_auc", True), ("r2_score", True),
    ("loss", False), ("val_rmse", False), ("mean_absolute_error", False), ("kl_divergence", False),
    ("examples", None), ("wobble", None),
])
def test_metric_direction_is_read_from_the_name(metric, expected):
    assert higher_is_better(metric) is expected
