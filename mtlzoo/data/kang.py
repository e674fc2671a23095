"""The synthetic multi-task regression benchmark of Kang, Grauman & Sha (ICML 2011).

30 linear regression tasks without intercept on 20-d inputs, in 3 groups of 10 tasks
(tasks 0-9, 10-19, 20-29).  Within a group every task's weight vector is a positive multiple
of one shared direction, so the tasks are related in groups but not across them.  Each task
has 15 training and 50 test examples; the MUiR convention (Meyerson & Miikkulainen, NeurIPS
2019) holds 5 of the 15 training examples out for validation.

The data the papers used is read from ``kang_synthetic.npz`` (``read_kang_synthetic``); a
generator with the same structure and scales (``generate_kang_synthetic``) needs no files.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from mtlzoo.data.base import Dataset, MultiTaskArrays, check_int_option, register_dataset, resolve_data_dir
from mtlzoo.data.files import DataIntegrityError, verify_checksums
from mtlzoo.tasks import Task

NUM_TASKS = 30
NUM_GROUPS = 3
NUM_FEATURES = 20
NUM_TRAIN = 15
NUM_TEST = 50
TASK_NAMES = tuple(f"task_{i:02d}" for i in range(NUM_TASKS))
SUBDIR = "kang_synthetic"
FILENAME = "kang_synthetic.npz"
SUMS_FILENAME = "SHA256SUMS"
KEYS = ("train_X", "train_Y", "test_X", "test_Y", "noisy_train_Y", "noisy_test_Y")

# Scales measured on kang_synthetic.npz (see generate_kang_synthetic): X is uniform on
# [-1, 1]; the norms of the 30 weight vectors fit |N(0, s^2)| * ||N(0, I_20)|| with
# s * sqrt(20) = 3.57 (their RMS); noisy minus clean targets have std 0.313 ~ sqrt(0.1).
SCALE_STD = 0.8
NOISE_STD = float(np.sqrt(0.1))

SOURCES = ("generated", "files")


def read_kang_synthetic(data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The benchmark's arrays from ``kang_synthetic.npz``, after verifying ``SHA256SUMS``.

    ``data_dir`` is the folder holding both files; when None, ``$MTLZOO_DATA_DIR/kang_synthetic``.
    Returns the arrays under ``KEYS``: ``train_X`` (30, n, 20), ``train_Y`` (30, n), ``test_X``
    (30, m, 20), ``test_Y`` (30, m) and the noisy targets of the same shapes.
    """
    directory = resolve_data_dir(data_dir, SUBDIR)
    verified = verify_checksums(directory, SUMS_FILENAME, "sha256", allow_gzip=False)
    path = os.path.join(directory, FILENAME)
    if FILENAME not in verified:
        raise DataIntegrityError(f"{SUMS_FILENAME} in {directory!r} does not list {FILENAME}.", path=path)
    try:
        # A file object rather than a path: np.load then never unpickles or memory-maps.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataIntegrityError(f"Cannot read {path!r} as an .npz archive: {err}", path=path) from err
    _check_arrays(arrays, path)
    return {k: arrays[k] for k in KEYS}


def generate_kang_synthetic(
    seed: int = 0, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST
) -> dict[str, np.ndarray]:
    """Arrays with the structure of ``kang_synthetic.npz``, deterministic in ``seed``.

    Generative process (structure and scales measured on the published file):

    - group directions ``u_g ~ N(0, I_20)`` for g = 0, 1, 2;
    - task scales ``c_t = |z_t|`` with ``z_t ~ N(0, 0.8^2)``; task ``t`` belongs to group
      ``t // 10`` and has weights ``w_t = c_t * u_g`` (no intercept);
    - inputs ``x ~ Uniform[-1, 1]^20``, independently for every example;
    - clean targets ``y = w_t . x``; noisy targets ``y + e`` with ``e ~ N(0, 0.1)``.

    Returns the keys of ``KEYS`` as float64 arrays: ``train_X`` (30, num_train, 20), ``train_Y``
    (30, num_train), ``test_X`` (30, num_test, 20), ``test_Y`` (30, num_test), ``noisy_*_Y``.
    """
    check_int_option("kang_synthetic", "seed", seed, minimum=0)
    check_int_option("kang_synthetic", "num_train", num_train, minimum=1)
    check_int_option("kang_synthetic", "num_test", num_test, minimum=1)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((NUM_GROUPS, NUM_FEATURES))
    scales = np.abs(rng.normal(0.0, SCALE_STD, NUM_TASKS))
    weights = scales[:, None] * directions[np.arange(NUM_TASKS) // (NUM_TASKS // NUM_GROUPS)]
    data = {}
    for split, n in (("train", num_train), ("test", num_test)):
        x = rng.uniform(-1.0, 1.0, (NUM_TASKS, n, NUM_FEATURES))
        y = np.einsum("tnf,tf->tn", x, weights)
        data[f"{split}_X"], data[f"{split}_Y"] = x, y
        data[f"noisy_{split}_Y"] = y + rng.normal(0.0, NOISE_STD, y.shape)
    return {k: data[k] for k in KEYS}


@register_dataset("kang_synthetic")
class KangSynthetic(Dataset):
    """Kang et al.'s 30 grouped linear regression tasks; each example belongs to one task.

    Args:
        source: ``"generated"`` (``generate_kang_synthetic(seed)``, no files) or ``"files"``
            (``read_kang_synthetic(data_dir)``, the data of the published results).
        noisy: use the noisy targets (the clean ones otherwise).
        seed: generator seed, and seed of the per-task validation hold-out.
        data_dir: folder of ``kang_synthetic.npz`` for ``source="files"``; default
            ``$MTLZOO_DATA_DIR/kang_synthetic``.
        validation_per_task: training examples per task held out as the validation split.
    """

    def __init__(self, *, source: str = "generated", noisy: bool = False, seed: int = 0,
                 data_dir: str | None = None, validation_per_task: int = 5):
        if source not in SOURCES:
            raise ValueError(f"kang_synthetic: option source={source!r} is invalid; expected one of {list(SOURCES)}.")
        if not isinstance(noisy, bool):
            raise ValueError(f"kang_synthetic: option noisy must be a bool, got {noisy!r}.")
        check_int_option("kang_synthetic", "seed", seed, minimum=0)
        check_int_option("kang_synthetic", "validation_per_task", validation_per_task, minimum=0)
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise ValueError(f"kang_synthetic: option data_dir must be a path or None, got {data_dir!r}.")
        if data_dir is not None and source != "files":
            raise ValueError("kang_synthetic: option data_dir applies only to source='files'.")
        self.source = source
        self.noisy = noisy
        self.seed = seed
        self.data_dir = data_dir
        self.validation_per_task = validation_per_task
        self._arrays: dict[str, np.ndarray] | None = None

    def tasks(self) -> list[Task]:
        return [Task(name=name, kind="regression") for name in TASK_NAMES]

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        return {"features": (NUM_FEATURES,)}

    def examples(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(features float32 (N, 20), target float32 (N,), task_id int64 (N,))``, task-major.

        Within a task, examples keep their order in the source arrays.
        """
        self.check_split(split)
        arrays = self._load_arrays()
        prefix = "noisy_" if self.noisy else ""
        if split == "test":
            x, y = arrays["test_X"], arrays[f"{prefix}test_Y"]
            index = np.broadcast_to(np.arange(x.shape[1]), x.shape[:2])
        else:
            x, y = arrays["train_X"], arrays[f"{prefix}train_Y"]
            index = self._holdout_index(x.shape[1], validation=split == "validation")
        rows = np.arange(NUM_TASKS)[:, None]
        features = x[rows, index].reshape(-1, NUM_FEATURES).astype(np.float32)
        target = y[rows, index].reshape(-1).astype(np.float32)
        task_id = np.repeat(np.arange(NUM_TASKS, dtype=np.int64), index.shape[1])
        return features, target, task_id

    def task_ids(self, split: str) -> np.ndarray:
        """The task index (into ``TASK_NAMES``) of every example of ``split``."""
        return self.examples(split)[2]

    def load(self, split: str) -> MultiTaskArrays:
        features, target, task_id = self.examples(split)
        return MultiTaskArrays.one_task_per_example({"features": features}, target, task_id, TASK_NAMES)

    def _load_arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            if self.source == "files":
                self._arrays = read_kang_synthetic(self.data_dir)
            else:
                self._arrays = generate_kang_synthetic(self.seed)
        return self._arrays

    def _holdout_index(self, num_train: int, *, validation: bool) -> np.ndarray:
        """(30, k) indices into each task's training examples, sorted within a task."""
        if self.validation_per_task >= num_train:
            raise ValueError(
                f"kang_synthetic: validation_per_task={self.validation_per_task} leaves no training "
                f"examples; each task has {num_train}."
            )
        # A stream of its own, so that the hold-out does not reuse the generator's draws.
        rng = np.random.default_rng([self.seed, 1])
        perms = np.stack([rng.permutation(num_train) for _ in range(NUM_TASKS)])
        chosen = perms[:, : self.validation_per_task] if validation else perms[:, self.validation_per_task:]
        return np.sort(chosen, axis=1)


def to_multitask(tf_dataset, task_names=None):
    """Map TFDS ``kang_synthetic`` examples to ``(inputs, targets, weights)``.

    The result has the structure of ``MultiTaskArrays.to_tf_dataset``: ``({"features": x},
    {task: target (..., 1)}, {task: weight (...)})`` with weight 1 for the example's own task and
    target 0 elsewhere.  Works on batched or unbatched datasets of dicts with ``features``,
    ``target`` and ``task`` (the ClassLabel index).  ``task_names`` (default: all 30) selects
    the tasks to emit; examples of other tasks get weight 0 for all of them.
    """
    import tensorflow as tf

    names = list(TASK_NAMES if task_names is None else task_names)
    unknown = [n for n in names if n not in TASK_NAMES]
    if unknown:
        raise ValueError(
            f"to_multitask: unknown task(s) {unknown}; expected names among {TASK_NAMES[0]}..{TASK_NAMES[-1]}."
        )
    spec = tf_dataset.element_spec
    missing = sorted({"features", "target", "task"} - set(spec if isinstance(spec, dict) else ()))
    if missing:
        raise ValueError(
            f"to_multitask: dataset elements must be dicts with 'features', 'target' and 'task'; missing {missing}."
        )

    def convert(example):
        target = tf.cast(example["target"], tf.float32)[..., None]
        targets, weights = {}, {}
        for name in names:
            mine = tf.equal(example["task"], tf.cast(TASK_NAMES.index(name), example["task"].dtype))
            targets[name] = tf.where(mine[..., None], target, tf.zeros_like(target))
            weights[name] = tf.cast(mine, tf.float32)
        return {"features": tf.cast(example["features"], tf.float32)}, targets, weights

    return tf_dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _check_arrays(arrays: dict[str, np.ndarray], path: str) -> None:
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise DataIntegrityError(f"{path!r} lacks array(s) {missing}; expected {list(KEYS)}.", path=path)
    for split in ("train", "test"):
        x = arrays[f"{split}_X"]
        if x.ndim != 3 or x.shape[0] != NUM_TASKS or x.shape[2] != NUM_FEATURES:
            raise DataIntegrityError(
                f"{path!r}: {split}_X has shape {x.shape}; expected ({NUM_TASKS}, n, {NUM_FEATURES}).", path=path
            )
        for key in (f"{split}_Y", f"noisy_{split}_Y"):
            if arrays[key].shape != x.shape[:2]:
                raise DataIntegrityError(
                    f"{path!r}: {key} has shape {arrays[key].shape}; expected {x.shape[:2]}.", path=path
                )
