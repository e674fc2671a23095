"""Permuted MNIST task sets: T tasks, each MNIST under its own fixed random permutation.

==========================  ===================================================================
dataset                     task t sees
==========================  ===================================================================
``permuted_mnist``          the 784 pixels of each image in task t's fixed random order
``label_permuted_mnist``    the images as they are, labels renamed by task t's permutation
==========================  ===================================================================

``permuted_mnist`` with ``pixel_swaps=s`` gives the milder "shuffled pixels" tasks of Amit & Meir
(ICML 2018): each task's order is the identity after s swaps of random pixel pairs, so at most 2s
pixels move and the tasks keep most pixels where they were. A full permutation (the default)
leaves the tasks nothing in common at the input, the hardest case for sharing.

Every task has its own examples (``examples_per_task`` training images, disjoint across tasks,
and as many validation and test images, ``heldout_per_task``), so an example is labelled for
one task only; few examples per task is the regime where sharing between tasks matters and
generalisation bounds are hardest (Zakerinia, Ghobadi & Lampert, 2025). Images are flat
uint8 vectors of 784 pixels (scaled to [0, 1] inside the model).

Training and validation images come from the official training set after MultiMNIST's fixed
hold-out (``multi_mnist.holdout_indices``), test images from the official test set; which images
each task gets and the permutations are drawn from ``seed``.
"""

from __future__ import annotations

import os

import numpy as np

from mtlzoo.data.base import Dataset, MultiTaskArrays, check_int_option, register_dataset
from mtlzoo.data.multi_mnist import IMAGE_SIZE, NUM_CLASSES, SOURCES, collection_dir, holdout_indices, read_images
from mtlzoo.tasks import Task

PIXELS = IMAGE_SIZE * IMAGE_SIZE
_STREAMS = {"permutations": 0, "train": 1, "validation": 2, "test": 3}


class PermutedMnist(Dataset):
    """T tasks on MNIST, each under its own fixed permutation; subclasses say of what.

    Args:
        num_tasks: T (default 10).
        examples_per_task: training images per task (default 1000).
        heldout_per_task: validation and test images per task (default 1000).
        source: ``"files"`` (idx files with checksums under ``data_dir``) or ``"keras"``.
        data_dir: the folder holding ``mnist/``, for ``source="files"``; default ``$MTLZOO_DATA_DIR``.
        seed: seed of the permutations and of which images each task gets.
        pixel_swaps: ``permuted_mnist`` only. None (default): each task a uniformly random
            permutation of the 784 pixels. An integer s: the identity order with s random pixel
            pairs swapped in turn (a pair may repeat, or be one pixel twice).
    """

    permute = ""  # "pixels" or "labels"

    def __init__(self, *, num_tasks: int = 10, examples_per_task: int = 1000, heldout_per_task: int = 1000,
                 source: str = "files", data_dir: str | os.PathLike | None = None, seed: int = 0,
                 pixel_swaps: int | None = None):
        check_int_option(self.name, "num_tasks", num_tasks, minimum=1)
        check_int_option(self.name, "examples_per_task", examples_per_task, minimum=1)
        check_int_option(self.name, "heldout_per_task", heldout_per_task, minimum=1)
        check_int_option(self.name, "seed", seed, minimum=0)
        check_int_option(self.name, "pixel_swaps", pixel_swaps, minimum=0, or_none=True)
        if pixel_swaps is not None and self.permute != "pixels":
            raise ValueError(f"{self.name}: option pixel_swaps applies only to permuted_mnist, whose tasks permute pixels.")
        if source not in SOURCES:
            raise ValueError(f"{self.name}: option source={source!r} is invalid; expected one of {list(SOURCES)}.")
        if data_dir is not None and source != "files":
            raise ValueError(f"{self.name}: option data_dir applies only to source='files'.")
        self.num_tasks, self.seed, self.source, self.data_dir = num_tasks, seed, source, data_dir
        self.pixel_swaps = pixel_swaps
        self.per_task = {"train": examples_per_task, "validation": heldout_per_task, "test": heldout_per_task}
        self._images: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def task_names(self) -> list[str]:
        return [f"task_{t:02d}" for t in range(self.num_tasks)]

    def tasks(self) -> list[Task]:
        return [Task(name=name, kind="classification", num_classes=NUM_CLASSES) for name in self.task_names()]

    def input_spec(self) -> dict[str, dict]:
        return {"image": {"shape": (PIXELS,), "dtype": "uint8", "scale": 1 / 255}}

    def permutations(self) -> np.ndarray:
        """(T, 784) pixel orders or (T, 10) label maps: task t's image is ``flat[perm[t]]``, its
        label ``perm[t][label]``."""
        rng = np.random.default_rng([self.seed, _STREAMS["permutations"]])
        if self.pixel_swaps is None:
            size = PIXELS if self.permute == "pixels" else NUM_CLASSES
            return np.stack([rng.permutation(size) for _ in range(self.num_tasks)])
        orders = np.tile(np.arange(PIXELS), (self.num_tasks, 1))
        for order in orders:
            # One pair at a time, so that a pixel drawn twice moves on again.
            for i, j in rng.integers(PIXELS, size=(self.pixel_swaps, 2)):
                order[i], order[j] = order[j], order[i]
        return orders

    def indices(self, split: str) -> np.ndarray:
        """(T, n): the images (into the official train or test set) each task gets in ``split``."""
        self.check_split(split)
        subset = "test" if split == "test" else "train"
        labels = self._source(subset)[1]
        if split == "test":
            pool = np.arange(len(labels))
        else:
            train, validation = holdout_indices(len(labels))
            pool = train if split == "train" else validation
        need = self.num_tasks * self.per_task[split]
        if need > len(pool):
            option = "examples_per_task" if split == "train" else "heldout_per_task"
            raise ValueError(
                f"{self.name}: {self.num_tasks} tasks x {self.per_task[split]} {split} images need {need}, but the "
                f"{split} pool has {len(pool)}; lower num_tasks or {option}."
            )
        chosen = np.random.default_rng([self.seed, _STREAMS[split]]).permutation(len(pool))[:need]
        return pool[chosen].reshape(self.num_tasks, self.per_task[split])

    def load(self, split: str) -> MultiTaskArrays:
        images, labels = self._source("test" if split == "test" else "train")
        picked, perms = self.indices(split), self.permutations()
        flat, target = [], []
        for t, index in enumerate(picked):
            x, y = images[index].reshape(len(index), PIXELS), labels[index]
            flat.append(x[:, perms[t]] if self.permute == "pixels" else x)
            target.append(y if self.permute == "pixels" else perms[t][y])
        task_id = np.repeat(np.arange(self.num_tasks), picked.shape[1])
        return MultiTaskArrays.one_task_per_example(
            {"image": np.concatenate(flat)}, np.concatenate(target), task_id, self.task_names())

    def _source(self, subset: str) -> tuple[np.ndarray, np.ndarray]:
        if subset not in self._images:
            directory = collection_dir(self.data_dir, "mnist") if self.source == "files" else None
            self._images[subset] = read_images("mnist", subset, directory, source=self.source)
        return self._images[subset]


@register_dataset("permuted_mnist")
class PixelPermutedMnist(PermutedMnist):
    """MNIST tasks that differ by a fixed permutation of the pixels (labels as they are)."""

    permute = "pixels"


@register_dataset("label_permuted_mnist")
class LabelPermutedMnist(PermutedMnist):
    """MNIST tasks that differ by a fixed renaming of the ten labels (images as they are)."""

    permute = "labels"


def to_multitask(tf_dataset, num_tasks: int):
    """Map TFDS ``permuted_mnist`` / ``label_permuted_mnist`` examples to ``(inputs, targets,
    weights)``, as ``fit`` takes: the structure of ``MultiTaskArrays.to_tf_dataset``, each
    example labelled (weight 1) for its own task only, target 0 elsewhere.

    Works on batched or unbatched datasets of dicts with ``image``, ``label`` and ``task``.
    """
    import tensorflow as tf

    spec = tf_dataset.element_spec
    missing = sorted({"image", "label", "task"} - set(spec if isinstance(spec, dict) else ()))
    if missing:
        raise ValueError(f"to_multitask: dataset elements must be dicts with 'image', 'label' and 'task'; missing {missing}.")

    def convert(example):
        label = tf.cast(example["label"], tf.float32)[..., None]
        targets, weights = {}, {}
        for t in range(num_tasks):
            mine = tf.equal(example["task"], tf.cast(t, example["task"].dtype))
            targets[f"task_{t:02d}"] = tf.where(mine[..., None], label, tf.zeros_like(label))
            weights[f"task_{t:02d}"] = tf.cast(mine, tf.float32)
        return {"image": example["image"]}, targets, weights

    return tf_dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
