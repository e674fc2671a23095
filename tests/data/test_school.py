"""The School benchmark: the verified .mat reader and the per-school splits."""

import shutil

import numpy as np
import pytest

import mtlzoo
from mtlzoo.data import school
from mtlzoo.data.files import DataIntegrityError


@pytest.fixture(scope="module")
def schools(data_dir):
    return school.read_school(data_dir / "school")


def test_reader_gives_139_schools_of_15362_students(schools):
    assert len(schools) == 139
    assert sum(len(y) for _, y in schools) == 15362
    x, y = schools[0]
    assert x.shape == (200, 28) and x.dtype == np.float32 and y.shape == (200,)
    assert np.all(x[:, -1] == 1)  # MALSAR's constant column
    scores = np.concatenate([y for _, y in schools])
    assert scores.min() == 1 and scores.max() == 70


def test_splits_partition_every_school_deterministically(data_dir):
    dataset = mtlzoo.data.load_dataset("school", data_dir=str(data_dir / "school"), seed=1)
    parts = {split: dataset.indices(split) for split in dataset.splits}
    for t in range(139):
        together = np.concatenate([parts[s][t] for s in dataset.splits])
        assert sorted(together) == list(range(len(together)))  # disjoint and complete
        assert len(parts["test"][t]) >= 1 and len(parts["validation"][t]) >= 1
    assert sum(len(i) for i in parts["train"]) == pytest.approx(0.6 * 15362, rel=0.02)
    again = mtlzoo.data.load_dataset("school", data_dir=str(data_dir / "school"), seed=1)
    other = mtlzoo.data.load_dataset("school", data_dir=str(data_dir / "school"), seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(parts["test"], again.indices("test")))
    assert not all(np.array_equal(a, b) for a, b in zip(parts["test"], other.indices("test")))


def test_load_gives_each_student_its_own_school_task(data_dir, schools):
    dataset = mtlzoo.data.load_dataset("school", data_dir=str(data_dir / "school"))
    test = dataset.load("test")
    assert [t.name for t in dataset.tasks()][:2] == ["school_000", "school_001"]
    assert np.all(sum(test.weights[name] for name in school.TASK_NAMES) == 1)
    first = test.weights["school_000"] == 1
    index = dataset.indices("test")[0]
    np.testing.assert_array_equal(test.inputs["features"][first], schools[0][0][index])
    np.testing.assert_array_equal(test.targets["school_000"][first, 0], schools[0][1][index])


def test_corrupt_or_missing_files_and_bad_options_are_clear_errors(tmp_path, data_dir):
    shutil.copy(data_dir / "school" / "school.mat", tmp_path / "school.mat")
    with open(tmp_path / "school.mat", "r+b") as f:
        f.seek(500)
        byte = f.read(1)
        f.seek(500)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DataIntegrityError, match="sha256 mismatch for .*school.mat"):
        school.read_school(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        school.read_school(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="validation_fraction must be a number between 0 and 1"):
        mtlzoo.data.load_dataset("school", validation_fraction=1.5)
    with pytest.raises(ValueError, match="must leave students to train on"):
        mtlzoo.data.load_dataset("school", validation_fraction=0.5, test_fraction=0.5)
