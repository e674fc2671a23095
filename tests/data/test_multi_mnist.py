"""The MultiMNIST family (mtlzoo.data.multi_mnist): idx reader, composition, datasets, TFDS builders.

Real-data tests read the ``data_dir`` fixture (``tests/fixtures/data``: the first 600 training and
200 test images of each collection, in the official format) with a few dozen examples per split;
tests that alter files work on copies or on small fake idx files written into ``tmp_path``.  Only
``full_data`` tests read the full files (``pytest -m full_data``).
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import mtlzoo
from mtlzoo.data import multi_mnist, tfds_builders
from mtlzoo.data.base import DATA_DIR_ENV, dataset_class, list_datasets, load_dataset
from mtlzoo.data.files import DataIntegrityError
from mtlzoo.data.multi_mnist import (
    MultiFashion,
    MultiFashionMnist,
    MultiMnist,
    compose,
    holdout_indices,
    read_idx,
    read_images,
    to_multitask,
)

DUMMY_DIR = Path(__file__).resolve().parents[1] / "dummy_data" / "multi_mnist"
DATASETS = {"multi_mnist": MultiMnist, "multi_fashion": MultiFashion, "multi_fashion_mnist": MultiFashionMnist}
FAKE_SEEDS = {"mnist": 1, "fashion_mnist": 2}  # of the fake files, here and in dummy_data/
FAKE_SIZES = {"train": 12, "test": 6}  # 12 training images: 10 train + 2 (12 // 6) validation
FIXTURE_SIZES = {"train": 600, "test": 200}  # tests/fixtures/make_fixtures.py: the first images of each file


# --- fake idx files ------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """The idx encoding of a uint8 array: 0, 0, type code, ndim, big-endian dims, values."""
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def fake_arrays(collection: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{subset: (images (n, 28, 28), labels (n,))}``: sparse noise, deterministic per collection."""
    rng = np.random.default_rng(FAKE_SEEDS[collection])
    arrays = {}
    for subset, n in FAKE_SIZES.items():
        # Mostly zero, like the real images, so that the gzipped fixtures stay small.
        images = (rng.integers(1, 256, (n, 28, 28)) * (rng.random((n, 28, 28)) < 0.15)).astype(np.uint8)
        arrays[subset] = images, rng.integers(0, 10, n).astype(np.uint8)
    return arrays


def write_sums(folder: Path, collection: str) -> None:
    """The collection's checksum file for the gunzipped content of every ``*.gz`` in ``folder``."""
    sums_filename = multi_mnist.COLLECTIONS[collection][1]
    algorithm = "sha256" if sums_filename.startswith("SHA256") else "md5"
    lines = [
        f"{hashlib.new(algorithm, gzip.decompress(p.read_bytes())).hexdigest()}  {p.name[:-3]}\n"
        for p in sorted(folder.glob("*.gz"))
    ]
    (folder / sums_filename).write_text("".join(lines))


def write_fake(root: Path, collection: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``fake_arrays(collection)`` as gzipped idx files with checksums under ``root``."""
    folder = root / multi_mnist.COLLECTIONS[collection][0]
    folder.mkdir(parents=True, exist_ok=True)
    arrays = fake_arrays(collection)
    for subset, (images, labels) in arrays.items():
        image_name, label_name = multi_mnist.IDX_FILES[subset]
        (folder / f"{image_name}.gz").write_bytes(gzip.compress(idx_bytes(images), mtime=0))
        (folder / f"{label_name}.gz").write_bytes(gzip.compress(idx_bytes(labels), mtime=0))
    write_sums(folder, collection)
    return arrays


@pytest.fixture
def fake_root(tmp_path) -> Path:
    root = tmp_path / "data"
    for collection in multi_mnist.COLLECTIONS:
        write_fake(root, collection)
    return root


def expected_canvas(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The composition, recomputed by padding: left to the top-left, right to the bottom-right."""
    left = np.pad(left, ((0, 0), (0, 8), (0, 8)))
    right = np.pad(right, ((0, 0), (8, 0), (8, 0)))
    return np.maximum(left, right)[..., None]


# --- the real files --------------------------------------------------------------------------

def read_all(root: Path) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """``{(collection, subset): (images, labels)}`` of the idx files under ``root``."""
    return {(c, s): read_images(c, s, root / c) for c in multi_mnist.COLLECTIONS for s in multi_mnist.IDX_FILES}


@pytest.fixture(scope="module")
def raw(data_dir):
    """``{(collection, subset): (images, labels)}`` read once from the fixture data."""
    return read_all(data_dir)


def test_read_images_of_the_fixture_files(raw):
    for (collection, subset), (images, labels) in raw.items():
        n = FIXTURE_SIZES[subset]
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert images.max() == 255 and images.min() == 0
    # The class counts of the first images of the official files.
    assert np.bincount(raw["mnist", "test"][1]).tolist() == [17, 28, 16, 16, 28, 20, 20, 24, 10, 21]
    assert np.bincount(raw["mnist", "train"][1]).tolist() == [58, 79, 64, 59, 59, 51, 54, 62, 49, 65]
    assert np.bincount(raw["fashion_mnist", "train"][1]).tolist() == [62, 66, 57, 58, 59, 58, 66, 61, 58, 55]
    assert np.bincount(raw["fashion_mnist", "test"][1]).tolist() == [20, 27, 27, 17, 21, 16, 16, 20, 18, 18]


@pytest.mark.full_data
def test_read_images_of_the_real_files(full_data_dir, raw):
    full = read_all(full_data_dir)
    for (collection, subset), (images, labels) in full.items():
        n = 60000 if subset == "train" else 10000
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert images.max() == 255 and images.min() == 0
    # The published class counts.
    assert np.bincount(full["mnist", "test"][1]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(full["mnist", "train"][1]).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]
    assert np.bincount(full["fashion_mnist", "train"][1]).tolist() == [6000] * 10
    assert np.bincount(full["fashion_mnist", "test"][1]).tolist() == [1000] * 10
    # The fixtures are the first images and labels of these files.
    for key, (images, labels) in raw.items():
        np.testing.assert_array_equal(images, full[key][0][:len(images)])
        np.testing.assert_array_equal(labels, full[key][1][:len(labels)])


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_canvases_and_labels_come_from_the_paired_images(name, data_dir, raw):
    cls = DATASETS[name]
    assert dataset_class(name) is cls and isinstance(load_dataset(name, seed=3), cls)
    dataset = cls(data_dir=data_dir, max_examples=40)
    assert [(t.name, t.kind, t.num_classes) for t in dataset.tasks()] == [
        ("left", "classification", 10), ("right", "classification", 10)
    ]
    assert dataset.input_spec() == {"image": {"shape": (36, 36, 1), "dtype": "uint8", "scale": 1 / 255}}
    names = {"mnist": "0", "fashion_mnist": "T-shirt/top"}
    assert dataset.class_names()["left"][0] == names[cls.left_collection]
    assert dataset.class_names()["right"][0] == names[cls.right_collection]
    for split in ("train", "validation", "test"):
        arrays = dataset.load(split)
        image = arrays.inputs["image"]
        assert image.shape == (40, 36, 36, 1) and image.dtype == np.uint8
        assert set(arrays.targets) == set(arrays.weights) == {"left", "right"}
        left_index, right_index = dataset.pairs(split)
        subset = "test" if split == "test" else "train"
        left_images, left_labels = raw[cls.left_collection, subset]
        right_images, right_labels = raw[cls.right_collection, subset]
        np.testing.assert_array_equal(image, expected_canvas(left_images[left_index], right_images[right_index]))
        for task, labels, index in (("left", left_labels, left_index), ("right", right_labels, right_index)):
            assert arrays.targets[task].dtype == np.int64 and arrays.targets[task].shape == (40,)
            np.testing.assert_array_equal(arrays.targets[task], labels[index])
            assert arrays.weights[task].dtype == np.float32 and np.all(arrays.weights[task] == 1)
    # The overlap (rows and columns 8-27) really mixes both images: the max differs from each.
    both = image[:, 8:28, 8:28, 0]
    assert np.any(both != left_images[left_index][:, 8:, 8:]) and np.any(both != right_images[right_index][:, :20, :20])


def test_compose_places_and_overlays():
    left = np.full((1, 28, 28), 10, np.uint8)
    right = np.full((1, 28, 28), 200, np.uint8)
    right[0, :20, :20] = 5  # the overlapping corner: here the left image is brighter
    canvas = compose(left, right)[0, :, :, 0]
    assert canvas.shape == (36, 36) and canvas.dtype == np.uint8
    assert np.all(canvas[:8, :28] == 10) and np.all(canvas[:28, :8] == 10)  # left only
    assert np.all(canvas[28:, 8:] == 200) and np.all(canvas[8:, 28:] == 200)  # right only
    assert np.all(canvas[8:28, 8:28] == 10)  # max(10, 5)
    assert np.all(canvas[:8, 28:] == 0) and np.all(canvas[28:, :8] == 0)  # neither


def test_splits_pairing_and_seeds(data_dir):
    dataset = MultiMnist(data_dir=data_dir)
    num_train, num_test = FIXTURE_SIZES["train"], FIXTURE_SIZES["test"]  # 60000 and 10000 in the full files
    train, validation, test = (dataset.pairs(s) for s in ("train", "validation", "test"))
    assert (len(train[0]), len(validation[0]), len(test[0])) == (num_train - num_train // 6, num_train // 6, num_test)
    # Train and validation partition the training images; within a split the right images are a
    # permutation of the left ones, and the left ones keep their order.
    assert not set(train[0]) & set(validation[0])
    np.testing.assert_array_equal(np.sort(np.concatenate([train[0], validation[0]])), np.arange(num_train))
    for left, right in (train, validation, test):
        assert np.all(np.diff(left) > 0)
        np.testing.assert_array_equal(np.sort(right), left)
        # A random pairing (a permutation has one fixed point on average), not the identity.
        assert np.sum(left == right) <= 5
    np.testing.assert_array_equal(test[0], np.arange(num_test))
    expected_train, expected_validation = holdout_indices(num_train)
    np.testing.assert_array_equal(train[0], expected_train)
    np.testing.assert_array_equal(validation[0], expected_validation)

    # max_examples takes the first examples of the full split.
    small = MultiMnist(data_dir=data_dir, max_examples=32)
    for split, (left, right) in zip(("train", "validation", "test"), (train, validation, test)):
        np.testing.assert_array_equal(small.pairs(split)[0], left[:32])
        np.testing.assert_array_equal(small.pairs(split)[1], right[:32])
    # Deterministic in the seed; another seed pairs differently but holds out the same images.
    first = small.load("test")
    again = MultiMnist(data_dir=data_dir, max_examples=32).load("test")
    other = MultiMnist(data_dir=data_dir, max_examples=32, seed=1)
    np.testing.assert_array_equal(first.inputs["image"], again.inputs["image"])
    np.testing.assert_array_equal(first.targets["right"], again.targets["right"])
    assert not np.array_equal(first.inputs["image"], other.load("test").inputs["image"])
    assert not np.array_equal(small.pairs("validation")[1], other.pairs("validation")[1])
    np.testing.assert_array_equal(MultiMnist(data_dir=data_dir, seed=1).pairs("validation")[0], validation[0])


def test_train_smoke_hard_sharing(data_dir):
    dataset = load_dataset("multi_fashion_mnist", data_dir=str(data_dir), max_examples=64)
    model = mtlzoo.create_model("hard_sharing", dataset.tasks(), dataset.input_spec(), filters=[4], shared_units=[8])
    assert model.inputs[0].dtype == "uint8" and model.inputs[0].shape == (None, 36, 36, 1)
    model.compile(optimizer="adam")
    # The tf.data pipeline shuffles; fit's own shuffle would only warn that it cannot.
    train = dataset.load("train").to_tf_dataset(32, shuffle=True)
    history = model.fit(train, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][-1])
    assert {"left_accuracy", "right_accuracy"} <= set(history.history)
    predictions = model.predict(dataset.load("test").inputs, verbose=0)
    assert predictions["left"].shape == predictions["right"].shape == (64, 10)


# --- integrity and errors ----------------------------------------------------------------------

def test_verification_happens_once_per_folder_and_again_after_a_change(fake_root):
    folder = fake_root / "mnist"
    images, labels = read_images("mnist", "test", folder)
    expected = fake_arrays("mnist")["test"]
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(labels, expected[1])
    verified = len(multi_mnist._VERIFIED)
    read_images("mnist", "train", folder)
    assert len(multi_mnist._VERIFIED) == verified  # the folder was verified already
    # A replaced file (new size and time) is verified again, and its checksum no longer fits.
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8)), mtime=0))
    with pytest.raises(DataIntegrityError, match=r"sha256 mismatch .*t10k-labels-idx1-ubyte\.gz"):
        read_images("mnist", "train", folder)


def test_corrupted_real_file_is_reported(data_dir, tmp_path):
    copy = tmp_path / "root" / "mnist"
    shutil.copytree(data_dir / "mnist", copy)
    path = copy / "t10k-labels-idx1-ubyte.gz"
    path.chmod(0o644)  # the source files may be read-only
    # One label changed: still a valid gzip, but not the published content.
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[100] = (content[100] + 1) % 10
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataIntegrityError, match=r"sha256 mismatch for gunzipped content of .*t10k-labels-idx1-ubyte"):
        MultiMnist(data_dir=tmp_path / "root").load("test")
    # One byte of the compressed stream flipped: gzip's own check fails first.
    data = bytearray(gzip.compress(bytes(content)))
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError, match=r"t10k-labels-idx1-ubyte\.gz"):
        read_images("mnist", "test", copy)


def test_fashion_md5_mismatch_is_reported(fake_root):
    path = fake_root / "fashion_mnist" / "train-images-idx3-ubyte.gz"
    images = fake_arrays("fashion_mnist")["train"][0].copy()
    images[0, 0, 0] ^= 1
    path.write_bytes(gzip.compress(idx_bytes(images), mtime=0))
    with pytest.raises(DataIntegrityError, match=r"md5 mismatch .*train-images-idx3-ubyte\.gz"):
        MultiFashion(data_dir=fake_root).load("test")


def _replace(fake_root: Path, name: str, content: bytes, collection: str = "mnist") -> None:
    """Put ``content`` in ``name``.gz with matching checksums, so that only the parser can object."""
    folder = fake_root / collection
    (folder / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
    write_sums(folder, collection)


_IMAGES = fake_arrays("mnist")["test"][0]


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("t10k-images-idx3-ubyte", b"\x08\x03" + idx_bytes(_IMAGES)[2:], r"is not an idx file: its magic number is 0803"),
        ("t10k-images-idx3-ubyte", idx_bytes(_IMAGES, type_code=0x07), r"is not an idx file: its magic number is 00000703"),
        ("t10k-images-idx3-ubyte", b"\x00\x00", r"magic number is 0000"),
        ("t10k-images-idx3-ubyte", b"\x00\x00\x08\x03\x00\x00", r"declares 3 dimensions but the file has 6 bytes"),
        ("t10k-images-idx3-ubyte", idx_bytes(_IMAGES)[:-10], r"shape \(6, 28, 28\).*\(truncated\)"),
        ("t10k-images-idx3-ubyte", idx_bytes(_IMAGES) + b"\x00", r"\(trailing data\)"),
        ("t10k-images-idx3-ubyte", idx_bytes(_IMAGES[:, :, :27]), r"images have shape \(6, 28, 27\).*expected \(N, 28, 28\)"),
        ("t10k-images-idx3-ubyte", idx_bytes(_IMAGES[:5]), r"has 6 labels but .*t10k-images-idx3-ubyte.gz' has 5 images"),
        ("t10k-labels-idx1-ubyte", idx_bytes(np.full(6, 10, np.uint8)), r"label 10 is out of range; expected 0-9"),
        ("t10k-labels-idx1-ubyte", idx_bytes(np.zeros((6, 1), np.uint8)), r"labels have shape \(6, 1\)"),
    ],
)
def test_malformed_idx_is_a_data_integrity_error(fake_root, name, content, pattern):
    _replace(fake_root, name, content)
    with pytest.raises(DataIntegrityError, match=pattern) as info:
        MultiMnist(data_dir=fake_root).load("test")
    assert name in str(info.value)


def test_read_idx_other_type_codes_and_plain_files(tmp_path):
    values = np.arange(-3, 3, dtype=">i4").reshape(2, 3)
    header = bytes([0, 0, 0x0C, 2]) + np.asarray(values.shape, ">u4").tobytes()
    (tmp_path / "a-idx2-int").write_bytes(header + values.tobytes())
    result = read_idx(tmp_path / "a-idx2-int")
    assert result.dtype == np.int32 and result.dtype.isnative
    np.testing.assert_array_equal(result, values)


def test_unlisted_file_in_the_checksums_is_refused(fake_root):
    sums = fake_root / "mnist" / "SHA256SUMS.uncompressed"
    sums.write_text("".join(line for line in sums.read_text().splitlines(True) if "t10k-labels" not in line))
    with pytest.raises(DataIntegrityError, match=r"does not list \['t10k-labels-idx1-ubyte'\]"):
        MultiMnist(data_dir=fake_root).load("test")


def test_missing_data_is_a_clear_error(tmp_path, fake_root, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere' does not exist \(expected the folder holding mnist/\)"):
        MultiMnist(data_dir=tmp_path / "nowhere").load("test")
    shutil.rmtree(fake_root / "fashion_mnist")
    MultiMnist(data_dir=fake_root).load("test")  # needs mnist/ only
    with pytest.raises(FileNotFoundError, match=r"fashion_mnist' does not exist \(expected the fashion_mnist files"):
        MultiFashionMnist(data_dir=fake_root).load("test")
    (fake_root / "mnist" / "SHA256SUMS.uncompressed").unlink()
    with pytest.raises(FileNotFoundError, match=r"Checksum file .*SHA256SUMS.uncompressed' does not exist"):
        MultiMnist(data_dir=fake_root).load("train")
    monkeypatch.delenv(DATA_DIR_ENV)
    with pytest.raises(FileNotFoundError, match=rf"pass data_dir or set {DATA_DIR_ENV}"):
        MultiFashion().load("test")


def test_pairing_needs_as_many_left_as_right_images(fake_root):
    _replace(fake_root, "t10k-images-idx3-ubyte", idx_bytes(_IMAGES[:5]), "fashion_mnist")
    _replace(fake_root, "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(5, np.uint8)), "fashion_mnist")
    assert len(MultiFashion(data_dir=fake_root).load("test")) == 5
    with pytest.raises(DataIntegrityError, match=r"test images of mnist \(6\) and fashion_mnist \(5\) differ"):
        MultiFashionMnist(data_dir=fake_root).load("test")


@pytest.mark.parametrize(
    "options, pattern",
    [
        ({"seed": -1}, r"multi_mnist: option seed must be an integer >= 0, got -1"),
        ({"seed": 1.5}, r"option seed must be an integer >= 0"),
        ({"seed": True}, r"option seed must be an integer >= 0"),
        ({"max_examples": 0}, r"option max_examples must be an integer >= 1 or None, got 0"),
        ({"max_examples": 2.0}, r"option max_examples must be an integer >= 1 or None"),
        ({"source": "web"}, r"option source='web' is invalid; expected one of \['files', 'keras'\]"),
        ({"data_dir": 3}, r"option data_dir must be a path or None"),
        ({"source": "keras", "data_dir": "/tmp"}, r"option data_dir applies only to source='files'"),
    ],
)
def test_option_validation(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        MultiMnist(**options)


def test_other_errors(fake_root):
    with pytest.raises(ValueError, match=r"'multi_fashion' has no split 'dev'"):
        MultiFashion(data_dir=fake_root).load("dev")
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['noisy'\]"):
        load_dataset("multi_mnist", noisy=True)
    with pytest.raises(ValueError, match=r"Unknown image collection 'kmnist'"):
        read_images("kmnist", "train")
    with pytest.raises(ValueError, match=r"Unknown subset 'validation' of mnist"):
        read_images("mnist", "validation")
    with pytest.raises(ValueError, match=r"data_dir applies only to source='files'"):
        read_images("mnist", "test", fake_root / "mnist", source="keras")
    assert list_datasets("multi_*") == ["multi_fashion", "multi_fashion_mnist", "multi_mnist"]


# --- TFDS ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DATASETS))
def test_tfds_build_equals_the_dataset(name, fake_root, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(fake_root))
    builder_cls = tfds.builder_cls(name)
    assert builder_cls.__module__ == tfds_builders.__name__ and builder_cls.DATASET_CLASS is DATASETS[name]
    dataset = DATASETS[name]()
    for split in dataset.splits:
        raw = tfds.as_numpy(tfds.load(name, split=split, data_dir=tmp_path / "tfds", batch_size=-1))
        arrays = dataset.load(split)
        np.testing.assert_array_equal(raw["image"], arrays.inputs["image"])
        assert raw["image"].dtype == np.uint8
        for task in ("left", "right"):
            assert raw[task].dtype == arrays.targets[task].dtype == np.int64
            np.testing.assert_array_equal(raw[task], arrays.targets[task])
    builder = tfds.builder(name, data_dir=tmp_path / "tfds")
    info = builder.info
    assert builder.builder_config.name == "seed0" and str(info.version) == "1.0.0"
    assert {s: info.splits[s].num_examples for s in dataset.splits} == {"train": 10, "validation": 2, "test": 6}
    assert info.features["left"].names == list(dataset.class_names()["left"])
    assert info.features["right"].names == list(dataset.class_names()["right"])


def test_tfds_base_builder_is_not_registered():
    with pytest.raises(tfds.core.registered.DatasetNotFoundError):
        tfds.builder_cls("multi_image_builder")


def test_tfds_custom_config_on_the_real_files(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    config = tfds_builders.MultiMnistConfig(name="seed3_first16", seed=3, max_examples=16)
    builder = tfds.builder("multi_fashion", config=config, data_dir=tmp_path)
    builder.download_and_prepare()
    dataset = MultiFashion(seed=3, max_examples=16)
    for split in dataset.splits:
        raw = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        arrays = dataset.load(split)
        np.testing.assert_array_equal(raw["image"], arrays.inputs["image"])
        np.testing.assert_array_equal(raw["right"], arrays.targets["right"])


def test_tfds_without_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=rf"{DATA_DIR_ENV}.*manual directory"):
        tfds.load("multi_fashion_mnist", split="test", data_dir=tmp_path)


def test_to_multitask(fake_root, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(fake_root))
    ds = tfds.load("multi_fashion_mnist", split="train", data_dir=tmp_path)
    arrays = MultiFashionMnist().load("train")
    for mapped in (to_multitask(ds).batch(4), to_multitask(ds.batch(4))):
        inputs, targets, weights = mapped.element_spec
        assert inputs == {"image": tf.TensorSpec((None, 36, 36, 1), tf.uint8)}
        assert targets == {name: tf.TensorSpec((None,), tf.int64) for name in ("left", "right")}
        assert weights == {name: tf.TensorSpec((None,), tf.float32) for name in ("left", "right")}
        batches = list(tfds.as_numpy(mapped))
        assert [len(b[0]["image"]) for b in batches] == [4, 4, 2]
        np.testing.assert_array_equal(np.concatenate([b[0]["image"] for b in batches]), arrays.inputs["image"])
        for name in ("left", "right"):
            np.testing.assert_array_equal(np.concatenate([b[1][name] for b in batches]), arrays.targets[name])
            np.testing.assert_array_equal(np.concatenate([b[2][name] for b in batches]), arrays.weights[name])
    bad = tf.data.Dataset.from_tensor_slices({"image": np.zeros((2, 36, 36, 1), np.uint8), "left": [0, 1]})
    with pytest.raises(ValueError, match=r"missing \['right'\]"):
        to_multitask(bad)


def test_dummy_data_matches_its_generator():
    """tests/dummy_data/multi_mnist holds ``write_fake`` output (12 train, 6 test images each)."""
    for collection in multi_mnist.COLLECTIONS:
        for subset, (images, labels) in fake_arrays(collection).items():
            read = read_images(collection, subset, DUMMY_DIR / collection)
            np.testing.assert_array_equal(read[0], images)
            np.testing.assert_array_equal(read[1], labels)


class _BuilderTest(tfds.testing.DatasetBuilderTestCase):
    """TFDS's own builder checks on the fake files in dummy_data/multi_mnist (the manual dir)."""

    EXAMPLE_DIR = str(DUMMY_DIR)
    SPLITS = {"train": 10, "validation": 2, "test": 6}

    def test_session(self, *args, **kwargs):
        # tf.test.TestCase's `test_session` is a context manager that TFDS uses, not a test.
        return super().test_session(*args, **kwargs)

    test_session.__test__ = False


class MultiMnistBuilderTest(_BuilderTest):
    DATASET_CLASS = tfds_builders.MultiMnist


class MultiFashionBuilderTest(_BuilderTest):
    DATASET_CLASS = tfds_builders.MultiFashion


class MultiFashionMnistBuilderTest(_BuilderTest):
    DATASET_CLASS = tfds_builders.MultiFashionMnist


del _BuilderTest  # a base without DATASET_CLASS; pytest must not collect it
