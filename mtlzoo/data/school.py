"""The School (ILEA) benchmark: exam scores of 15362 students in 139 schools, one task each.

Each student is described by 28 features (school year, gender, ethnicity and exam-year
indicators, the school's percentage of free-meal pupils and of VR band-1 pupils, and a
constant 1), and the target is the exam score. Every school is a regression task; an example
belongs to its school's task only (weight 0 for the others). ``school.mat`` is MALSAR's copy
(cell arrays ``X{1,139}`` of n_t x 28 and ``Y{1,139}`` of n_t x 1), verified by its sha256.
"""

from __future__ import annotations

import os

import numpy as np

from mtlzoo.data.base import Dataset, MultiTaskArrays, check_int_option, register_dataset, resolve_data_dir
from mtlzoo.data.files import DataIntegrityError, verify_file
from mtlzoo.tasks import Task

SUBDIR = "school"
FILENAME = "school.mat"
SHA256 = "57fb3238fdd03a9aa17276e2ce18d9bbb5d128c3261e794fe6233b58b6909068"
NUM_TASKS = 139
NUM_FEATURES = 28
TASK_NAMES = tuple(f"school_{i:03d}" for i in range(NUM_TASKS))


def read_school(data_dir: str | os.PathLike | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(features float32 (n_t, 28), scores float32 (n_t,)), ...]`` for the 139 schools.

    ``data_dir`` holds ``school.mat``; default ``$MTLZOO_DATA_DIR/school``. The file's sha256 is
    checked first.
    """
    from scipy.io import loadmat

    directory = resolve_data_dir(data_dir, SUBDIR)
    path = os.path.join(directory, FILENAME)
    verify_file(path, SHA256, "sha256")
    try:
        mat = loadmat(path)
        cells_x, cells_y = mat["X"].ravel(), mat["Y"].ravel()
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise DataIntegrityError(f"Cannot read {path!r} as the School .mat file (X and Y cell arrays): {err}",
                                 path=path) from err
    if len(cells_x) != NUM_TASKS or len(cells_y) != NUM_TASKS:
        raise DataIntegrityError(f"{path!r}: expected {NUM_TASKS} schools, found {len(cells_x)}.", path=path)
    schools = []
    for i, (x, y) in enumerate(zip(cells_x, cells_y)):
        if x.ndim != 2 or x.shape[1] != NUM_FEATURES or y.size != len(x):
            raise DataIntegrityError(
                f"{path!r}: school {i} has features {x.shape} and scores {y.shape}; expected (n, {NUM_FEATURES}) "
                "and (n, 1).", path=path,
            )
        schools.append((x.astype(np.float32), y.reshape(-1).astype(np.float32)))
    return schools


@register_dataset("school")
class School(Dataset):
    """139 exam-score regression tasks, one per school; every student belongs to one task.

    Args:
        data_dir: folder of ``school.mat`` (default ``$MTLZOO_DATA_DIR/school``).
        seed: seed of the per-school split of students.
        validation_fraction, test_fraction: the shares of each school's students held out for
            validation and test (at least one student each); the rest train.
    """

    def __init__(self, *, data_dir: str | None = None, seed: int = 0, validation_fraction: float = 0.2,
                 test_fraction: float = 0.2):
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise ValueError(f"school: option data_dir must be a path or None, got {data_dir!r}.")
        check_int_option("school", "seed", seed, minimum=0)
        for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"school: option {name} must be a number between 0 and 1, got {value!r}.")
        if validation_fraction + test_fraction >= 1:
            raise ValueError("school: validation_fraction + test_fraction must leave students to train on (< 1).")
        self.data_dir = data_dir
        self.seed = int(seed)
        self.validation_fraction = float(validation_fraction)
        self.test_fraction = float(test_fraction)
        self._schools: list[tuple[np.ndarray, np.ndarray]] | None = None

    def tasks(self) -> list[Task]:
        return [Task(name=name, kind="regression") for name in TASK_NAMES]

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        return {"features": (NUM_FEATURES,)}

    def indices(self, split: str) -> list[np.ndarray]:
        """Per school, the sorted indices of its students in ``split``."""
        self.check_split(split)
        chosen = []
        for t, (_, scores) in enumerate(self._load()):
            n = len(scores)
            order = np.random.default_rng([self.seed, t]).permutation(n)
            num_test = max(1, round(self.test_fraction * n))
            num_validation = max(1, round(self.validation_fraction * n))
            parts = {"test": order[:num_test], "validation": order[num_test:num_test + num_validation],
                     "train": order[num_test + num_validation:]}
            chosen.append(np.sort(parts[split]))
        return chosen

    def load(self, split: str) -> MultiTaskArrays:
        schools = self._load()
        picked = self.indices(split)
        features = np.concatenate([schools[t][0][i] for t, i in enumerate(picked)])
        scores = np.concatenate([schools[t][1][i] for t, i in enumerate(picked)])
        task_id = np.concatenate([np.full(len(i), t) for t, i in enumerate(picked)])
        return MultiTaskArrays.one_task_per_example({"features": features}, scores, task_id, TASK_NAMES)

    def _load(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._schools is None:
            self._schools = read_school(self.data_dir)
        return self._schools
