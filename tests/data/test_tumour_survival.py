"""The generated PET/CT tumour segmentation and survival dataset."""

import numpy as np
import pytest

import mtlzoo
from mtlzoo.survival import concordance_index

SMALL = {"size": 32, "num_train": 64, "num_validation": 16, "num_test": 300}


def test_two_dimensional_shapes_dtypes_and_tasks():
    dataset = mtlzoo.data.load_dataset("tumour_survival", **SMALL)
    assert [(t.name, t.kind) for t in dataset.tasks()] == [("tumour", "segmentation"), ("survival", "survival")]
    assert dataset.input_spec() == {"pet": (32, 32, 1), "ct": (32, 32, 1)}
    data = dataset.load("train")
    assert len(data) == 64
    for name in ("pet", "ct"):
        image = data.inputs[name]
        assert image.shape == (64, 32, 32, 1) and image.dtype == np.float32
        assert np.isfinite(image).all() and 0.2 < image.std() < 3 and abs(image.mean()) < 1  # roughly standardised
    assert data.targets["tumour"].shape == (64, 32, 32, 1) and data.targets["tumour"].dtype == np.float32
    assert data.targets["survival"].shape == (64, 2) and data.targets["survival"].dtype == np.float32
    for name in ("tumour", "survival"):
        assert data.weights[name].dtype == np.float32
        np.testing.assert_array_equal(data.weights[name], np.ones(64))
    time, event = data.targets["survival"].T
    assert (time > 0).all() and set(np.unique(event)) <= {0.0, 1.0}
    np.testing.assert_allclose(time, np.round(time, 1), atol=1e-4)
    # The dataset passes the contract's checks.
    dataset.load_tasks("validation", ["tumour", "survival"])


def test_three_dimensional_volumes():
    dataset = mtlzoo.data.load_dataset("tumour_survival", dims=3, size=24, num_train=8)
    assert dataset.input_spec()["ct"] == (24, 24, 24, 1)
    data = dataset.load("train")
    assert data.inputs["pet"].shape == data.inputs["ct"].shape == data.targets["tumour"].shape == (8, 24, 24, 24, 1)
    assert data.targets["survival"].shape == (8, 2)
    assert (data.targets["tumour"].reshape(8, -1).sum(axis=1) > 0).all()


def test_generation_is_deterministic_per_seed_and_split():
    options = {"size": 16, "num_validation": 20, "num_test": 20}
    a = mtlzoo.data.load_dataset("tumour_survival", seed=3, **options)
    b = mtlzoo.data.load_dataset("tumour_survival", seed=3, **options)
    first, again = a.load("test"), b.load("test")
    for group in ("inputs", "targets"):
        for name, array in getattr(first, group).items():
            np.testing.assert_array_equal(array, getattr(again, group)[name])
    np.testing.assert_array_equal(a.oracle_risk("test"), b.oracle_risk("test"))
    other_seed = mtlzoo.data.load_dataset("tumour_survival", seed=4, **options).load("test")
    other_split = a.load("validation")
    for other in (other_seed, other_split):
        assert not np.array_equal(first.inputs["pet"], other.inputs["pet"])
        assert not np.array_equal(first.targets["survival"], other.targets["survival"])
    assert not np.array_equal(a.features("test")["radius"], a.features("validation")["radius"])


def test_every_example_has_one_binary_tumour_of_varying_size_where_the_pet_is_bright():
    dataset = mtlzoo.data.load_dataset("tumour_survival", **SMALL)
    data = dataset.load("train")
    mask = data.targets["tumour"]
    assert set(np.unique(mask)) == {0.0, 1.0}
    area = mask.reshape(len(mask), -1).sum(axis=1)
    assert area.min() > 0 and area.max() > 3 * area.min()
    # Areas follow the latent radius (area ~ radius^2, up to shape and boundary wobble).
    assert np.corrcoef(area, dataset.features("train")["radius"] ** 2)[0, 1] > 0.9
    # The tumour is the PET's bright spot; the CT shows it only faintly.
    tumour, background = mask[..., 0] > 0, mask[..., 0] == 0
    pet, ct = data.inputs["pet"][..., 0], data.inputs["ct"][..., 0]
    assert pet[tumour].mean() - pet[background].mean() > 5 * pet[background].std()
    assert 0 < ct[tumour].mean() - ct[background].mean() < ct[background].std()


@pytest.mark.parametrize("censoring", [0.0, 0.3, 0.6])
def test_censoring_fraction_matches_the_option(censoring):
    dataset = mtlzoo.data.load_dataset("tumour_survival", censoring=censoring, **SMALL)
    event = dataset.load("test").targets["survival"][:, 1]
    assert abs((1 - event.mean()) - censoring) < 0.1


def test_the_oracle_and_the_tumour_area_predict_survival():
    dataset = mtlzoo.data.load_dataset("tumour_survival", **SMALL)
    data = dataset.load("test")
    time, event = data.targets["survival"].T
    features = dataset.features("test")
    eta = 0.8 * features["z_radius"] + 0.5 * features["z_uptake"] + 0.5 * features["z_heterogeneity"]
    np.testing.assert_allclose(dataset.oracle_risk("test"), eta)
    assert concordance_index(time, event, dataset.oracle_risk("test")) > 0.65
    area = data.targets["tumour"].reshape(len(time), -1).sum(axis=1)
    assert concordance_index(time, event, area) > 0.55
    assert len(np.unique(time)) < len(time)  # rounded times tie


@pytest.mark.parametrize("option, value, message", [
    ("size", 8, "size must be an integer >= 16"),
    ("dims", 4, r"dims must be 2 \(images\) or 3 \(volumes\), got 4"),
    ("num_train", -1, "num_train must be an integer >= 2"),
    ("num_test", 1.5, "num_test must be an integer >= 2"),
    ("censoring", 1.0, r"censoring must be a number in \[0, 1\), got 1.0"),
    ("censoring", -0.1, r"censoring must be a number in \[0, 1\)"),
    ("seed", -1, "seed must be an integer >= 0"),
])
def test_bad_options(option, value, message):
    with pytest.raises(ValueError, match=message):
        mtlzoo.data.load_dataset("tumour_survival", **{option: value})


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="no split 'dev'"):
        mtlzoo.data.load_dataset("tumour_survival", size=16).oracle_risk("dev")
