"""Permuted and label-permuted MNIST: each task its own images and its own fixed permutation."""

import numpy as np
import pytest

from mtlzoo.data import load_dataset
from mtlzoo.data.multi_mnist import read_images

OPTIONS = dict(num_tasks=3, examples_per_task=40, heldout_per_task=20)


@pytest.mark.parametrize("name", ["permuted_mnist", "label_permuted_mnist"])
def test_each_task_has_its_own_images_under_its_own_permutation(name):
    dataset = load_dataset(name, **OPTIONS)
    train_images, train_labels = read_images("mnist", "train")
    perms = dataset.permutations()
    assert perms.shape == (3, 784 if name == "permuted_mnist" else 10)
    assert all(sorted(p) == list(range(perms.shape[1])) for p in perms)  # bijections
    assert len({tuple(p) for p in perms}) == 3
    used = {}
    for split in ("train", "validation", "test"):
        arrays, index = dataset.load(split), dataset.indices(split)
        assert arrays.inputs["image"].shape == (3 * len(index[0]), 784) and arrays.inputs["image"].dtype == np.uint8
        labelled = np.stack([arrays.weights[f"task_{t:02d}"] for t in range(3)], axis=1)
        assert (labelled.sum(axis=1) == 1).all()  # every example belongs to exactly one task
        used[split] = index
        if split == "test":
            continue
        for t in range(3):
            mine = labelled[:, t] == 1
            original = train_images[index[t]].reshape(-1, 784)
            want_x = original[:, perms[t]] if name == "permuted_mnist" else original
            want_y = train_labels[index[t]] if name == "permuted_mnist" else perms[t][train_labels[index[t]]]
            np.testing.assert_array_equal(arrays.inputs["image"][mine], want_x)
            np.testing.assert_array_equal(arrays.targets[f"task_{t:02d}"][mine, 0], want_y)
    # Disjoint: no image serves two tasks, or both training and validation.
    train_and_validation = np.concatenate([used["train"].ravel(), used["validation"].ravel()])
    assert len(np.unique(train_and_validation)) == len(train_and_validation)
    assert len(np.unique(used["test"])) == used["test"].size
    # The same seed gives the same tasks; another seed other ones.
    np.testing.assert_array_equal(load_dataset(name, **OPTIONS).permutations(), perms)
    assert not np.array_equal(load_dataset(name, **OPTIONS, seed=1).permutations(), perms)


def test_pixel_swaps_move_only_the_swapped_pixels_and_the_images_follow_them():
    dataset = load_dataset("permuted_mnist", **OPTIONS, pixel_swaps=5)
    perms = dataset.permutations()
    assert all(sorted(p) == list(range(784)) for p in perms)  # still bijections
    moved = [np.flatnonzero(p != np.arange(784)) for p in perms]
    assert all(0 < len(m) <= 10 for m in moved)  # 5 swaps move at most 10 pixels
    assert len({tuple(m) for m in moved}) == 3  # each task its own pixels
    np.testing.assert_array_equal(load_dataset("permuted_mnist", **OPTIONS, pixel_swaps=5).permutations(), perms)
    assert not np.array_equal(load_dataset("permuted_mnist", **OPTIONS, pixel_swaps=5, seed=1).permutations(), perms)
    train_images = read_images("mnist", "train")[0]
    arrays, index = dataset.load("train"), dataset.indices("train")
    first = arrays.weights["task_00"] == 1
    np.testing.assert_array_equal(arrays.inputs["image"][first], train_images[index[0]].reshape(-1, 784)[:, perms[0]])
    # Zero swaps is the unpermuted image; no option is the full permutation, as before.
    np.testing.assert_array_equal(load_dataset("permuted_mnist", **OPTIONS, pixel_swaps=0).permutations(),
                                  np.tile(np.arange(784), (3, 1)))
    full = load_dataset("permuted_mnist", **OPTIONS).permutations()
    assert min((p != np.arange(784)).sum() for p in full) > 700


@pytest.mark.parametrize("name, swaps, message", [
    ("permuted_mnist", -1, "pixel_swaps must be an integer >= 0 or None, got -1"),
    ("permuted_mnist", 2.5, "pixel_swaps must be an integer >= 0 or None, got 2.5"),
    ("label_permuted_mnist", 10, "pixel_swaps applies only to permuted_mnist"),
])
def test_bad_pixel_swaps_are_refused(name, swaps, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(name, pixel_swaps=swaps)


def test_asking_for_more_images_than_the_pool_holds_is_a_clear_error():
    dataset = load_dataset("permuted_mnist", num_tasks=10, examples_per_task=100)
    with pytest.raises(ValueError, match=r"10 tasks x 100 train images need 1000, but the train pool has \d+; "
                                         "lower num_tasks or examples_per_task"):
        dataset.load("train")
    with pytest.raises(ValueError, match="num_tasks"):
        load_dataset("label_permuted_mnist", num_tasks=0)


@pytest.mark.parametrize("name, extra", [("permuted_mnist", {}), ("permuted_mnist", {"pixel_swaps": 20}),
                                         ("label_permuted_mnist", {})])
def test_the_tfds_builder_gives_the_dataset_and_to_multitask_what_fit_takes(name, extra, tmp_path):
    import tensorflow_datasets as tfds

    from mtlzoo.data import permuted_mnist, tfds_builders

    config = tfds_builders.PermutedMnistConfig(name="t3_n30", num_tasks=3, examples_per_task=30, heldout_per_task=10,
                                               **extra)
    builder = tfds.builder(name, config=config, data_dir=tmp_path)
    builder.download_and_prepare()
    dataset = load_dataset(name, num_tasks=3, examples_per_task=30, heldout_per_task=10, **extra)
    assert {s: builder.info.splits[s].num_examples for s in dataset.splits} == {"train": 90, "validation": 30, "test": 30}
    for split in dataset.splits:
        raw = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        arrays = dataset.load(split)
        np.testing.assert_array_equal(raw["image"], arrays.inputs["image"])
        inputs, targets, weights = next(iter(tfds.as_numpy(
            permuted_mnist.to_multitask(builder.as_dataset(split=split), 3).batch(1000))))
        np.testing.assert_array_equal(inputs["image"], arrays.inputs["image"])
        for task in dataset.task_names():
            np.testing.assert_array_equal(targets[task], arrays.targets[task])
            np.testing.assert_array_equal(weights[task], arrays.weights[task])
