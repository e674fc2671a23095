"""MultiMNIST-style benchmarks: two 28x28 images overlaid on one 36x36 canvas, one task each.

After Sener & Koltun (NeurIPS 2018) and Lin et al. (Pareto MTL, NeurIPS 2019): the ``left``
image sits at the top-left of the canvas (rows and columns 0-27), the ``right`` image at the
bottom-right (rows and columns 8-35), and where they overlap the brighter pixel wins.  The
tasks classify the left and the right image (10 classes each).

==========================  ===============  ===============
dataset                     left image       right image
==========================  ===============  ===============
``multi_mnist``             MNIST            MNIST
``multi_fashion``           Fashion-MNIST    Fashion-MNIST
``multi_fashion_mnist``     MNIST            Fashion-MNIST
==========================  ===============  ===============

Splits: ``test`` pairs the 10000 official test images; ``train`` and ``validation`` pair the
official training images after a fixed hold-out (``holdout_indices``): a random sixth of them
(10000 of 60000), the same for every ``seed``, is ``validation``.  Within a split, left image
``pool[i]`` is paired with right image ``pool[perm[i]]``, ``perm`` a permutation drawn from
``np.random.default_rng([seed, split constant])``, so each split has its own stream.

The images are read from the idx files in ``<root>/mnist/`` and ``<root>/fashion_mnist/``
(``read_images``, after verifying their checksums), or through ``keras.datasets``.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from mtlzoo.data.base import Dataset, MultiTaskArrays, check_int_option, register_dataset, resolve_data_dir
from mtlzoo.data.files import DataIntegrityError, verify_checksums
from mtlzoo.tasks import Task

IMAGE_SIZE = 28
CANVAS_SIZE = 36
RIGHT_OFFSET = CANVAS_SIZE - IMAGE_SIZE  # the right image starts at row and column 8
NUM_CLASSES = 10
TASK_NAMES = ("left", "right")

# {collection: (subfolder of the data root, checksum file, keras.datasets module name)}
COLLECTIONS = {
    "mnist": ("mnist", "SHA256SUMS.uncompressed", "mnist"),
    "fashion_mnist": ("fashion_mnist", "MD5SUMS.uncompressed", "fashion_mnist"),
}
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(NUM_CLASSES)),
    "fashion_mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}
# The official files of each subset, without the .gz that the readers also accept.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SOURCES = ("files", "keras")

# idx type codes (third byte of the magic number); all values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Stream keys of the seeded permutations: the hold-out ignores `seed`, so that every seed
# trains and validates on the same images and only the pairing changes.
_HOLDOUT_KEY = (2018, 0)
_SPLIT_STREAMS = {"train": 1, "validation": 2, "test": 3}

# Directories (and file signatures) verified in this process; hashing ~80 MB once is enough.
_VERIFIED: set[tuple] = set()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an idx file (gunzipped on the fly if the name ends in ``.gz``).

    The header is 2 zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions and one big-endian uint32 per
    dimension; the values follow, big-endian, with nothing after them.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:  # a damaged or truncated .gz
        raise DataIntegrityError(f"Cannot read {path!r}: {err}", path=path) from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataIntegrityError(
            f"{path!r} is not an idx file: its magic number is {data[:4].hex() or 'missing'}; expected "
            f"0000TTNN with type code TT in {{{', '.join(f'{c:02x}' for c in _IDX_DTYPES)}}} and NN dimensions.",
            path=path,
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataIntegrityError(
            f"{path!r}: the idx header declares {ndim} dimensions but the file has {len(data)} bytes, "
            f"too few for the {header}-byte header.",
            path=path,
        )
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataIntegrityError(
            f"{path!r}: the idx header declares shape {shape} of {dtype.name}, {expected} bytes in all, "
            f"but the file has {len(data)} bytes ({'truncated' if len(data) < expected else 'trailing data'}).",
            path=path,
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_images(collection: str, subset: str, data_dir: str | os.PathLike | None = None, *,
                source: str = "files") -> tuple[np.ndarray, np.ndarray]:
    """The official ``train`` (60000) or ``test`` (10000) images of MNIST or Fashion-MNIST.

    Args:
        collection: ``"mnist"`` or ``"fashion_mnist"``.
        subset: ``"train"`` or ``"test"`` (the ``t10k-*`` files).
        data_dir: for ``source="files"``, the folder holding the idx files (``.gz`` or not) and
            the checksum file; default ``$MTLZOO_DATA_DIR/<collection>``.
        source: ``"files"`` reads the idx files after verifying their checksums (once per folder
            and process); ``"keras"`` takes ``keras.datasets.<collection>.load_data()``, which
            downloads on first use.

    Returns:
        ``(images uint8 (N, 28, 28), labels int64 (N,))``.
    """
    if collection not in COLLECTIONS:
        raise ValueError(f"Unknown image collection {collection!r}; expected one of {list(COLLECTIONS)}.")
    if subset not in IDX_FILES:
        raise ValueError(f"Unknown subset {subset!r} of {collection}; expected one of {list(IDX_FILES)}.")
    if source == "keras":
        if data_dir is not None:
            raise ValueError("data_dir applies only to source='files'; keras.datasets keeps its own cache.")
        import keras

        module = getattr(keras.datasets, COLLECTIONS[collection][2])
        (train_x, train_y), (test_x, test_y) = module.load_data()
        images, labels = (train_x, train_y) if subset == "train" else (test_x, test_y)
        image_file = label_file = f"keras.datasets.{COLLECTIONS[collection][2]} ({subset})"
    elif source == "files":
        subdir, sums_filename, _ = COLLECTIONS[collection]
        directory = resolve_data_dir(data_dir, subdir)
        paths = _verified_paths(directory, sums_filename)
        image_file, label_file = (paths[name] for name in IDX_FILES[subset])
        images, labels = read_idx(image_file), read_idx(label_file)
    else:
        raise ValueError(f"Unknown source {source!r}; expected one of {list(SOURCES)}.")
    _check_images(images, labels, image_file, label_file)
    return np.asarray(images, np.uint8), np.asarray(labels, np.int64)


def compose(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Canvases uint8 (N, 36, 36, 1): ``left`` (N, 28, 28) at the top-left, ``right`` at the
    bottom-right, overlapping pixels combined by their maximum."""
    left, right = np.asarray(left, np.uint8), np.asarray(right, np.uint8)
    canvas = np.zeros((len(left), CANVAS_SIZE, CANVAS_SIZE), np.uint8)
    canvas[:, :IMAGE_SIZE, :IMAGE_SIZE] = left
    bottom_right = canvas[:, RIGHT_OFFSET:, RIGHT_OFFSET:]
    np.maximum(bottom_right, right, out=bottom_right)
    return canvas[..., None]


def holdout_indices(num_train: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` indices into the official training images, each sorted.

    A fixed random sixth (``num_train // 6``: 10000 of 60000) is held out for validation; it
    does not depend on any option.
    """
    perm = np.random.default_rng(_HOLDOUT_KEY).permutation(num_train)
    num_validation = num_train // 6
    return np.sort(perm[num_validation:]), np.sort(perm[:num_validation])


class MultiImageDataset(Dataset):
    """Two images on one 36x36 canvas, tasks ``left`` and ``right`` (10 classes each).

    Subclasses set ``left_collection`` and ``right_collection`` (``"mnist"`` or
    ``"fashion_mnist"``).

    Args:
        source: ``"files"`` (idx files with checksums under ``data_dir``) or ``"keras"``
            (``keras.datasets``, downloads on first use).
        data_dir: the root folder holding ``mnist/`` and ``fashion_mnist/`` (whichever the
            dataset uses), for ``source="files"``; default ``$MTLZOO_DATA_DIR``.
        seed: seed of the pairing of left and right images (the validation hold-out is fixed).
        max_examples: keep only the first ``max_examples`` examples of each split (None: all);
            only those are composed, and they are the first examples of the full split.
    """

    left_collection: str = ""
    right_collection: str = ""

    def __init__(self, *, source: str = "files", data_dir: str | os.PathLike | None = None, seed: int = 0,
                 max_examples: int | None = None):
        if source not in SOURCES:
            raise ValueError(f"{self.name}: option source={source!r} is invalid; expected one of {list(SOURCES)}.")
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise ValueError(f"{self.name}: option data_dir must be a path or None, got {data_dir!r}.")
        if data_dir is not None and source != "files":
            raise ValueError(f"{self.name}: option data_dir applies only to source='files'.")
        check_int_option(self.name, "seed", seed, minimum=0)
        check_int_option(self.name, "max_examples", max_examples, minimum=1, or_none=True)
        self.source = source
        self.data_dir = data_dir
        self.seed = seed
        self.max_examples = max_examples
        self._images: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def tasks(self) -> list[Task]:
        return [Task(name=name, kind="classification", num_classes=NUM_CLASSES) for name in TASK_NAMES]

    def input_spec(self) -> dict[str, dict]:
        return {"image": {"shape": (CANVAS_SIZE, CANVAS_SIZE, 1), "dtype": "uint8", "scale": 1 / 255}}

    def class_names(self) -> dict[str, tuple[str, ...]]:
        """``{task: its 10 class names}``: digits for MNIST, clothing for Fashion-MNIST."""
        return {"left": CLASS_NAMES[self.left_collection], "right": CLASS_NAMES[self.right_collection]}

    def pairs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(left, right)`` int64 indices of each example's two images.

        They index the official ``test`` images for the test split and the official ``train``
        images for the train and validation splits; at most ``max_examples`` of them.
        """
        self.check_split(split)
        subset = "test" if split == "test" else "train"
        num = self._num_images(subset)
        if split == "test":
            pool = np.arange(num)
        else:
            train, validation = holdout_indices(num)
            pool = train if split == "train" else validation
        perm = np.random.default_rng([self.seed, _SPLIT_STREAMS[split]]).permutation(len(pool))
        count = len(pool) if self.max_examples is None else min(self.max_examples, len(pool))
        return pool[:count].astype(np.int64), pool[perm[:count]].astype(np.int64)

    def load(self, split: str) -> MultiTaskArrays:
        left_index, right_index = self.pairs(split)
        subset = "test" if split == "test" else "train"
        left_images, left_labels = self._source_images(self.left_collection, subset)
        right_images, right_labels = self._source_images(self.right_collection, subset)
        image = compose(left_images[left_index], right_images[right_index])
        targets = {"left": left_labels[left_index], "right": right_labels[right_index]}
        weights = {name: np.ones(len(image), np.float32) for name in TASK_NAMES}
        return MultiTaskArrays({"image": image}, targets, weights)

    def _num_images(self, subset: str) -> int:
        left = len(self._source_images(self.left_collection, subset)[1])
        right = len(self._source_images(self.right_collection, subset)[1])
        if left != right:
            raise DataIntegrityError(
                f"{self.name}: the {subset} images of {self.left_collection} ({left}) and "
                f"{self.right_collection} ({right}) differ in number; pairing needs the same count."
            )
        return left

    def _source_images(self, collection: str, subset: str) -> tuple[np.ndarray, np.ndarray]:
        key = (collection, subset)
        if key not in self._images:
            directory = None
            if self.source == "files":
                directory = collection_dir(self.data_dir, collection)
            self._images[key] = read_images(collection, subset, directory, source=self.source)
        return self._images[key]


@register_dataset("multi_mnist")
class MultiMnist(MultiImageDataset):
    """MultiMNIST (Sener & Koltun 2018): two MNIST digits; tasks ``left`` and ``right``."""

    left_collection = right_collection = "mnist"


@register_dataset("multi_fashion")
class MultiFashion(MultiImageDataset):
    """MultiFashion (Lin et al. 2019): two Fashion-MNIST items; tasks ``left`` and ``right``."""

    left_collection = right_collection = "fashion_mnist"


@register_dataset("multi_fashion_mnist")
class MultiFashionMnist(MultiImageDataset):
    """Multi-(Fashion+MNIST) (Lin et al. 2019): an MNIST digit on the left, a Fashion-MNIST
    item on the right."""

    left_collection = "mnist"
    right_collection = "fashion_mnist"


def to_multitask(tf_dataset):
    """Map TFDS ``multi_mnist``-family examples to ``(inputs, targets, weights)``, as ``fit`` takes.

    The structure is that of ``MultiTaskArrays.to_tf_dataset``: ``({"image": image}, {"left":
    label, "right": label}, {"left": 1.0, "right": 1.0})`` (every example is labelled for both).

    Works on batched or unbatched datasets of dicts with ``image`` (uint8, kept raw: the
    models built from ``input_spec()`` rescale it) and the ``left`` and ``right`` ClassLabel
    indices (cast to int64, as ``Dataset.load`` gives them).
    """
    import tensorflow as tf

    spec = tf_dataset.element_spec
    missing = sorted({"image", *TASK_NAMES} - set(spec if isinstance(spec, dict) else ()))
    if missing:
        raise ValueError(
            f"to_multitask: dataset elements must be dicts with 'image', 'left' and 'right'; missing {missing}."
        )

    def convert(example):
        targets = {name: tf.cast(example[name], tf.int64) for name in TASK_NAMES}
        weights = {name: tf.ones_like(label, tf.float32) for name, label in targets.items()}
        return {"image": example["image"]}, targets, weights

    return tf_dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def collection_dir(root: str | os.PathLike | None, collection: str) -> str:
    """The folder of a collection's idx files under the data root (``$MTLZOO_DATA_DIR`` if None)."""
    subdir = COLLECTIONS[collection][0]
    if root is None:
        return resolve_data_dir(None, subdir)
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Data directory {root!r} does not exist (expected the folder holding {subdir}/)."
        )
    return resolve_data_dir(os.path.join(root, subdir), subdir)


def _verified_paths(directory: str, sums_filename: str) -> dict[str, str]:
    """``{idx name: path}`` of the four idx files, verified against ``sums_filename`` once."""
    sums_path = os.path.join(directory, sums_filename)
    if not os.path.isfile(sums_path):
        raise FileNotFoundError(
            f"Checksum file {sums_path!r} does not exist; the idx files in {directory!r} cannot be verified."
        )
    paths = {}
    for name in (*IDX_FILES["train"], *IDX_FILES["test"]):
        path = os.path.join(directory, name)
        paths[name] = path if os.path.isfile(path) or not os.path.isfile(path + ".gz") else path + ".gz"
    # The key holds the files' sizes and modification times, so a replaced file is re-verified.
    key = (os.path.realpath(directory), sums_filename,
           *(_signature(p) for p in (sums_path, *paths.values())))
    if key not in _VERIFIED:
        verified = verify_checksums(directory, sums_filename)
        unlisted = [name for name in paths if name not in verified]
        if unlisted:
            raise DataIntegrityError(
                f"{sums_filename} in {directory!r} does not list {unlisted}; every idx file must be verified.",
                path=sums_path,
            )
        _VERIFIED.add(key)
    return paths


def _signature(path: str) -> tuple:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return (path, None)  # verify_checksums reports the missing file
    return (path, stat.st_size, stat.st_mtime_ns)


def _check_images(images: np.ndarray, labels: np.ndarray, image_file: str, label_file: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise DataIntegrityError(
            f"{image_file!r}: images have shape {images.shape} of {images.dtype}; expected (N, {IMAGE_SIZE}, "
            f"{IMAGE_SIZE}) of uint8.",
            path=image_file,
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataIntegrityError(
            f"{label_file!r}: labels have shape {labels.shape} of {labels.dtype}; expected (N,) of uint8.",
            path=label_file,
        )
    if len(labels) != len(images):
        raise DataIntegrityError(
            f"{label_file!r} has {len(labels)} labels but {image_file!r} has {len(images)} images; "
            "expected one label per image.",
            path=label_file,
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DataIntegrityError(
            f"{label_file!r}: label {int(labels.max())} is out of range; expected 0-{NUM_CLASSES - 1}.",
            path=label_file,
        )
