"""The survival tables from scikit-survival: tasks, encoding, cross-validation folds, options."""

import sys

import numpy as np
import pytest

import mtlzoo
from mtlzoo.data import survival_tables

# name: (patients, features after encoding, {task: events})
EXPECTED = {
    "actg320": (1151, 16, {"aids": 96, "death": 26}),
    "gbsg2": (686, 9, {"recurrence": 299}),
    "whas500": (500, 14, {"death": 215}),
    "flchain": (7874, 24, {"death": 2169}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_splits_have_the_shapes_dtypes_and_events_of_the_table(name):
    patients, features, events = EXPECTED[name]
    dataset = mtlzoo.data.load_dataset(name)
    assert [t.name for t in dataset.tasks()] == list(events)
    assert all(t.kind == "survival" for t in dataset.tasks())
    assert dataset.input_spec() == {"features": (features,)}
    parts = [dataset.load(split) for split in dataset.splits]
    assert sum(len(p) for p in parts) == patients
    for part in parts:
        x = part.inputs["features"]
        assert x.dtype == np.float32 and x.shape == (len(part), features) and np.isfinite(x).all()
        for task in events:
            target, weight = part.targets[task], part.weights[task]
            assert target.dtype == np.float32 and target.shape == (len(part), 2)
            assert np.all(target[:, 0] > 0) and np.isfinite(target).all()
            assert set(np.unique(target[:, 1])) <= {0.0, 1.0}
            assert weight.dtype == np.float32 and np.all(weight == 1)
        assert part.targets[next(iter(events))][:, 1].sum() > 0  # stratified: events in every split
    for task, count in events.items():
        assert sum(p.targets[task][:, 1].sum() for p in parts) == count


def test_actg320_tasks_follow_both_sksurv_endpoints_for_the_same_patients():
    from sksurv.datasets import load_aids

    dataset = mtlzoo.data.load_dataset("actg320", fold=3)
    x_aids, y_aids = load_aids(endpoint="aids")
    x_death, y_death = load_aids(endpoint="death")
    assert x_aids.equals(x_death)
    assert y_aids["censor"].sum() == 96 and y_death["censor_d"].sum() == 26
    rows = dataset.indices("test")
    test = dataset.load("test")
    np.testing.assert_array_equal(test.targets["aids"], np.stack([y_aids["time"], y_aids["censor"]], 1)[rows])
    np.testing.assert_array_equal(test.targets["death"], np.stack([y_death["time_d"], y_death["censor_d"]], 1)[rows])
    np.testing.assert_array_equal(test.inputs["features"][:, dataset.feature_names().index("tx=1")],
                                  (x_aids["tx"] == "1").to_numpy()[rows])
    assert "txgrp" not in dataset.read_table()[0].columns  # collinear with tx


@pytest.mark.parametrize("name", ["actg320", "whas500"])
def test_folds_partition_the_patients_and_splits_are_disjoint(name):
    tested = []
    for fold in range(4):
        dataset = mtlzoo.data.load_dataset(name, folds=4, fold=fold, seed=3)
        parts = [dataset.indices(split) for split in dataset.splits]
        together = np.concatenate(parts)
        assert sorted(together) == list(range(EXPECTED[name][0]))  # disjoint and complete
        assert len(parts[1]) == pytest.approx(0.15 * 0.75 * len(together), abs=2)
        tested.append(parts[2])
    tested = np.concatenate(tested)
    assert sorted(tested) == list(range(EXPECTED[name][0]))  # each patient is tested exactly once


def test_splits_are_deterministic_and_follow_the_seed():
    first = mtlzoo.data.load_dataset("gbsg2", seed=1, fold=2)
    again = mtlzoo.data.load_dataset("gbsg2", seed=1, fold=2)
    other = mtlzoo.data.load_dataset("gbsg2", seed=2, fold=2)
    for split in first.splits:
        a, b = first.load(split), again.load(split)
        np.testing.assert_array_equal(a.inputs["features"], b.inputs["features"])
        np.testing.assert_array_equal(a.targets["recurrence"], b.targets["recurrence"])
    assert not np.array_equal(first.indices("test"), other.indices("test"))


def test_standardisation_and_imputation_use_the_training_split_only():
    dataset = mtlzoo.data.load_dataset("flchain", fold=1)
    numeric = dataset.numeric_features()
    assert numeric == ["age", "creatinine", "kappa", "lambda"]
    train, _ = dataset.frame("train")
    test, _ = dataset.frame("test")
    np.testing.assert_allclose(train[numeric].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(train[numeric].std(ddof=0), 1, atol=1e-5)
    assert np.abs(test[numeric].mean()).max() > 1e-3 and np.abs(test[numeric].std(ddof=0) - 1).max() > 1e-3
    # chapter (cause of death) leaks the label; creatinine is missing for 1350 people.
    covariates, _ = dataset.read_table()
    assert "chapter" not in covariates.columns and "creatinine_missing" in dataset.feature_names()
    train_rows = covariates.iloc[dataset.indices("train")]["creatinine"]
    median = train_rows.median()
    standardised = (median - train_rows.fillna(median).mean()) / train_rows.fillna(median).std(ddof=0)
    missing = test["creatinine_missing"] == 1
    assert missing.sum() == covariates.iloc[dataset.indices("test")]["creatinine"].isna().sum() > 0
    np.testing.assert_allclose(test.loc[missing, "creatinine"], standardised, rtol=1e-5)


def test_flchain_time_zero_becomes_half_a_day():
    from sksurv.datasets import load_flchain

    _, y = load_flchain()
    dataset = mtlzoo.data.load_dataset("flchain")
    time, event = dataset.read_table()[1]["death"]
    zero = y["futime"] == 0
    assert zero.sum() == 3 and np.all(time[zero] == 0.5) and np.all(event[zero])
    np.testing.assert_array_equal(time[~zero], y["futime"][~zero])


def test_frame_matches_load_and_fits_sksurv_cox():
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    dataset = mtlzoo.data.load_dataset("whas500", fold=4)
    x, ys = dataset.frame("train")
    train = dataset.load("train")
    assert list(x.columns) == dataset.feature_names()
    np.testing.assert_array_equal(x.to_numpy(), train.inputs["features"])
    np.testing.assert_array_equal(ys["death"]["time"], train.targets["death"][:, 0])
    model = CoxPHSurvivalAnalysis(alpha=1e-4).fit(x, ys["death"])
    x_test, ys_test = dataset.frame("test")
    assert model.score(x_test, ys_test["death"]) > 0.7


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match=r"actg320: option fold must be in 0\.\.4 \(folds=5\), got 5"):
        mtlzoo.data.load_dataset("actg320", fold=5)
    with pytest.raises(ValueError, match="option folds must be an integer >= 2"):
        mtlzoo.data.load_dataset("gbsg2", folds=1)
    for fraction in (0, 0.5, -0.1, True):
        with pytest.raises(ValueError, match="validation_fraction must be a number strictly between 0 and 0.5"):
            mtlzoo.data.load_dataset("whas500", validation_fraction=fraction)
    with pytest.raises(ValueError, match=r"folds \(100\) exceeds the 96 events of task 'aids'"):
        mtlzoo.data.load_dataset("actg320", folds=100).load("test")
    with pytest.raises(ValueError, match="does not take option"):
        mtlzoo.data.load_dataset("flchain", test_fraction=0.2)


def test_load_dataset_with_a_fold_and_a_missing_sksurv(monkeypatch):
    dataset = mtlzoo.data.load_dataset("actg320", fold=1)
    assert len(dataset.load("test")) == len(dataset.indices("test")) > 200
    monkeypatch.setitem(sys.modules, "sksurv", None)
    with pytest.raises(ImportError, match=r'pip install "mtlzoo\[survival\]"'):
        survival_tables._sksurv_datasets()
