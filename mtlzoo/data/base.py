"""The dataset contract every mtlzoo benchmark keeps.

A dataset names its tasks and its inputs and loads a split as ``MultiTaskArrays``: named
input arrays, one target array per task and one per-example weight per task.

Partial labels: an example may lack the label of a task. A weight of 0 says so, and so do two
marks in the targets, which ``MultiTaskArrays.checked`` (so every split training and evaluation
read) turns into weight 0: a NaN anywhere in a float target, and a negative class in the
integer target of a classification, binary or multilabel task (``-1``). Losses, metrics and
every weighting method then ignore the example for that task (a task without a label in a
batch is absent from that step). ``keep_labels`` keeps a seeded fraction of a task's labels,
which a recipe asks for as ``data.label_fraction``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import numbers
import os
import zlib
from typing import Callable, Mapping, Sequence

import numpy as np

from mtlzoo.data.files import DataIntegrityError
from mtlzoo.tasks import Task

DATA_DIR_ENV = "MTLZOO_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class MultiTaskArrays:
    """One split of a multi-task dataset, held in memory.

    Attributes:
        inputs: ``{input_name: array (N, ...)}``.
        targets: ``{task_name: array (N, ...)}``; any value where the weight is 0.
        weights: ``{task_name: float32 array (N,)}``: 1 where the example is labelled for the task.
    """

    inputs: Mapping[str, np.ndarray]
    targets: Mapping[str, np.ndarray]
    weights: Mapping[str, np.ndarray]

    def __post_init__(self):
        sizes = {len(a) for a in (*self.inputs.values(), *self.targets.values(), *self.weights.values())}
        if len(sizes) != 1:
            raise ValueError(f"All arrays of a split must have the same length; got lengths {sorted(sizes)}.")
        if set(self.targets) != set(self.weights):
            raise ValueError("targets and weights must have the same task names.")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @classmethod
    def one_task_per_example(cls, inputs, target: np.ndarray, task_id: np.ndarray, task_names) -> "MultiTaskArrays":
        """Examples that each belong to one task: ``target[i]`` labels task ``task_names[task_id[i]]``
        only (weight 1 there, 0 for every other task)."""
        targets, weights = {}, {}
        for i, name in enumerate(task_names):
            mine = task_id == i
            targets[name] = np.where(mine, target, 0.0).astype(np.float32)[:, None]
            weights[name] = mine.astype(np.float32)
        return cls(dict(inputs), targets, weights)

    def select(self, task_names) -> "MultiTaskArrays":
        """The same examples with only the given tasks' targets and weights."""
        missing = [n for n in task_names if n not in self.targets]
        if missing:
            raise KeyError(f"Tasks {missing} are not in this dataset; it has {sorted(self.targets)}.")
        return MultiTaskArrays(
            dict(self.inputs),
            {n: self.targets[n] for n in task_names},
            {n: self.weights[n] for n in task_names},
        )

    def checked(self, split: str = "", kinds: Mapping[str, str] | None = None) -> "MultiTaskArrays":
        """These arrays with missing labels marked by weight 0 and their targets set to 0.

        A NaN in an example's target marks its label missing; so does a negative integer
        target for tasks whose ``kinds`` entry is a class kind. Raises ``DataIntegrityError``
        naming the split, the array and the first non-finite value in an input, a weight, or a
        target that is not missing (an infinity). An unlabelled target may hold anything; it is
        replaced by 0, since a loss weighted by 0 would still turn NaN.
        """
        where = f"split {split!r}: " if split else ""
        for group, arrays in (("input", self.inputs), ("weight", self.weights)):
            for name, array in arrays.items():
                _raise_if_not_finite(array, f"{where}{group} {name!r}")
        targets, weights = {}, {}
        for name, target in self.targets.items():
            target = np.asarray(target)
            weight = np.asarray(self.weights[name], dtype=np.float32)
            missing = missing_labels(target, (kinds or {}).get(name))
            if missing.any():
                weight = np.where(missing, 0.0, weight).astype(np.float32)
            labelled = (weight != 0).reshape((-1,) + (1,) * (target.ndim - 1))
            if not labelled.all() and (missing.any() or (target.dtype.kind in "fc" and not np.isfinite(target).all())):
                target = np.where(labelled, target, 0).astype(target.dtype)
            _raise_if_not_finite(target, f"{where}target {name!r}")
            targets[name], weights[name] = target, weight
        return MultiTaskArrays(dict(self.inputs), targets, weights)

    def keep_labels(self, fractions: Mapping[str, float], seed: int = 0) -> "MultiTaskArrays":
        """The same examples with only ``round(fraction * labelled)`` of each named task's labels
        kept (the rest get weight 0), chosen by ``seed`` and the task's name alone."""
        weights = dict(self.weights)
        for name, fraction in fractions.items():
            if name not in weights:
                raise KeyError(f"label_fraction names task {name!r}, which this data lacks; it has {sorted(weights)}.")
            labelled = np.flatnonzero(np.asarray(weights[name]) != 0)
            keep = int(round(float(fraction) * len(labelled)))
            rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
            chosen = np.zeros(len(self), bool)
            chosen[rng.choice(labelled, size=keep, replace=False)] = True
            weights[name] = np.where(chosen, weights[name], 0.0).astype(np.float32)
        return MultiTaskArrays(dict(self.inputs), dict(self.targets), weights)

    def labelled_only(self) -> "MultiTaskArrays":
        """The examples labelled for at least one task (training skips the others)."""
        keep = np.zeros(len(self), bool)
        for weight in self.weights.values():
            keep |= np.asarray(weight) != 0
        if keep.all():
            return self
        take = lambda arrays: {k: np.asarray(v)[keep] for k, v in arrays.items()}  # noqa: E731
        return MultiTaskArrays(take(self.inputs), take(self.targets), take(self.weights))

    def with_reconstruction(self, tasks: Sequence[Task], input_spec: Mapping) -> "MultiTaskArrays":
        """These arrays plus the targets of ``tasks``' reconstruction tasks: the named input as
        the model sees it (raw inputs times their ``scale``), labelled on every example."""
        targets, weights = dict(self.targets), dict(self.weights)
        for task in tasks:
            if task.kind != "reconstruction":
                continue
            if task.input not in self.inputs:
                raise KeyError(f"Reconstruction task {task.name!r} decodes input {task.input!r}; the data has "
                               f"inputs {sorted(self.inputs)}.")
            spec = input_spec.get(task.input)
            scale = spec.get("scale") if isinstance(spec, Mapping) else None
            value = np.asarray(self.inputs[task.input], dtype=np.float32)
            targets[task.name] = value * np.float32(scale) if scale is not None else value
            weights[task.name] = np.ones(len(self), np.float32)
        return MultiTaskArrays(dict(self.inputs), targets, weights)

    def with_absent(self, like: "MultiTaskArrays") -> "MultiTaskArrays":
        """These arrays plus, for every task of ``like`` they lack, zero targets of its shape
        with weight 0 (a privileged auxiliary target that a validation split does not have)."""
        targets, weights = dict(self.targets), dict(self.weights)
        for name, target in like.targets.items():
            if name not in targets:
                target = np.asarray(target)
                targets[name] = np.zeros((len(self), *target.shape[1:]), target.dtype)
                weights[name] = np.zeros(len(self), np.float32)
        return MultiTaskArrays(dict(self.inputs), targets, weights)

    def to_tf_dataset(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, repeat: bool = False,
                      first_batch: int = 0):
        """``tf.data`` of ``(inputs, targets, sample_weights)`` batches, as ``Model.fit`` takes.

        With ``shuffle``, pass ``p`` over the data takes the order drawn from ``(seed, p)``
        alone, so the stream is a pure function of its arguments: ``first_batch=k`` starts it
        exactly where an uninterrupted one is after ``k`` batches (how a resumed run continues).
        ``repeat`` makes it endless.
        """
        import tensorflow as tf

        size = len(self)
        first_pass, skip = divmod(first_batch, max(1, -(-size // batch_size)))
        tensors = tf.nest.map_structure(tf.constant, (dict(self.inputs), dict(self.targets), dict(self.weights)))

        def order(p):
            indices = tf.range(size, dtype=tf.int64)
            if shuffle:
                indices = tf.random.experimental.stateless_shuffle(indices, seed=tf.stack([tf.cast(seed, tf.int64), p]))
            return tf.data.Dataset.from_tensor_slices(indices).batch(batch_size)

        if repeat:
            batches = tf.data.Dataset.counter(first_pass).flat_map(order).skip(skip)
        else:  # one pass, built directly so that Keras knows its length
            batches = order(tf.constant(0, tf.int64)).skip(first_batch)
        gather = lambda indices: tf.nest.map_structure(lambda t: tf.gather(t, indices), tensors)  # noqa: E731
        return batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


CLASS_KINDS = ("classification", "binary", "multilabel")


def missing_labels(target, kind: str | None = None) -> np.ndarray:
    """Per example, whether ``target`` marks its label missing: a NaN anywhere in it, or, for a
    task of a class kind with integer targets, a negative value (``-1``)."""
    target = np.asarray(target)
    flat = target.reshape(len(target), -1)
    if target.dtype.kind in "fc":
        return np.isnan(flat).any(axis=1)
    if target.dtype.kind in "iu" and kind in CLASS_KINDS:
        return (flat < 0).any(axis=1)
    return np.zeros(len(target), bool)


def _raise_if_not_finite(array, what: str) -> None:
    array = np.asarray(array)
    if array.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataIntegrityError(
            f"{what} holds {int(bad.sum())} non-finite value(s); the first is {array[index]} at index "
            f"{list(index)} (example {index[0]}). Expected finite numbers."
        )


class Dataset:
    """Base class of registered datasets.

    Subclasses take their options as keyword arguments in ``__init__`` (validated by
    ``load_dataset``), and implement ``tasks``, ``input_spec`` and ``load``.
    """

    name: str = ""
    splits: tuple[str, ...] = ("train", "validation", "test")

    def tasks(self) -> list[Task]:
        raise NotImplementedError

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        """``{input_name: shape without the batch dimension}``."""
        raise NotImplementedError

    def load(self, split: str) -> MultiTaskArrays:
        raise NotImplementedError

    def load_tasks(self, split: str, tasks) -> MultiTaskArrays:
        """``load(split)`` cut to ``tasks`` (``Task`` objects or names of this dataset's tasks),
        with missing labels marked and non-finite values refused (``MultiTaskArrays.checked``),
        and reconstruction targets made from the inputs: what training, evaluation and export
        read. An auxiliary task whose targets this split lacks (a privileged target, present
        at training time only) is left out."""
        own = {t.name: t for t in self.tasks()}
        tasks = [own.get(t, t) if isinstance(t, str) else t for t in tasks]
        data = self.load(split)
        names, kinds = [], {}
        for task in tasks:
            if isinstance(task, str):  # not a task of this dataset: select() names what it has
                names.append(task)
            elif task.kind != "reconstruction" and (task.name in data.targets or task.role == "main"):
                names.append(task.name)
                kinds[task.name] = task.kind
        checked = data.select(names).checked(f"{self.name}/{split}", kinds)
        return checked.with_reconstruction([t for t in tasks if isinstance(t, Task)], self.input_spec())

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"Dataset {self.name!r} has no split {split!r}; expected one of {list(self.splits)}.")


_DATASETS: dict[str, type[Dataset]] = {}


def register_dataset(name: str) -> Callable[[type[Dataset]], type[Dataset]]:
    """Class decorator registering a ``Dataset`` subclass under ``name``."""

    def decorator(cls):
        if name in _DATASETS and _DATASETS[name] is not cls:
            raise ValueError(f"Dataset {name!r} is already registered.")
        cls.name = name
        _DATASETS[name] = cls
        return cls

    return decorator


def list_datasets(pattern: str | None = None) -> list[str]:
    names = sorted(_DATASETS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def dataset_class(name: str) -> type[Dataset]:
    try:
        return _DATASETS[name]
    except KeyError:
        raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(sorted(_DATASETS))}.") from None


def dataset_options(name: str) -> dict[str, inspect.Parameter]:
    """The keyword options a dataset accepts, for validating configs."""
    params = inspect.signature(dataset_class(name).__init__).parameters
    return {k: p for k, p in params.items() if k != "self" and p.kind == p.KEYWORD_ONLY}


def load_dataset(name: str, **options) -> Dataset:
    """Instantiate a registered dataset, rejecting options it does not take."""
    accepted = dataset_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"Dataset {name!r} does not take option(s) {unknown}; it accepts {sorted(accepted)}."
        )
    return dataset_class(name)(**options)


def check_int_option(dataset: str, option: str, value, *, minimum: int, or_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= ``minimum`` (or None, if allowed)."""
    if or_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        also = " or None" if or_none else ""
        raise ValueError(f"{dataset}: option {option} must be an integer >= {minimum}{also}, got {value!r}.")


def resolve_data_dir(data_dir: str | os.PathLike | None, subdir: str) -> str:
    """The directory holding a dataset's files: the argument, else ``$MTLZOO_DATA_DIR/subdir``."""
    if data_dir is None:
        root = os.environ.get(DATA_DIR_ENV)
        if not root:
            raise FileNotFoundError(
                f"No data directory given: pass data_dir or set {DATA_DIR_ENV} to the folder that "
                f"holds {subdir}/."
            )
        data_dir = os.path.join(root, subdir)
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"Data directory {data_dir!r} does not exist (expected the {subdir} files there).")
    return data_dir
