"""TFDS builders for mtlzoo's benchmarks; importing this module registers them by name.

    import mtlzoo.data.tfds_builders  # registers "kang_synthetic", "multi_mnist", "permuted_mnist", ...
    ds = tfds.load("kang_synthetic/clean", split="train", data_dir=...)
    ds = mtlzoo.data.kang.to_multitask(ds).batch(32)   # what Model.fit takes
    ds = mtlzoo.data.multi_mnist.to_multitask(tfds.load("multi_mnist", split="train")).batch(32)

The examples are exactly those of the mtlzoo dataset's ``load(split)`` (for instance
``mtlzoo.data.kang.KangSynthetic(...).load(split)``), in the same order: shuffling is
disabled, so examples stay task-major (Kang) or in pairing order (the MultiMNIST family).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mtlzoo.data import kang, multi_mnist, permuted_mnist
from mtlzoo.data.base import DATA_DIR_ENV, resolve_data_dir

_CITATION = """\
@inproceedings{kang2011learning,
  title     = {Learning with Whom to Share in Multi-task Feature Learning},
  author    = {Kang, Zhuoliang and Grauman, Kristen and Sha, Fei},
  booktitle = {Proceedings of the 28th International Conference on Machine Learning (ICML)},
  pages     = {521--528},
  year      = {2011},
}
"""


class _CodeHere:
    """Builders of this module: ``code_path`` is this file.

    TFDS 4.9.10's own ``code_path`` needs ``importlib_resources``, which it declares only for
    Python < 3.9 (tensorflow/datasets#11212); this module's file is the right answer anyway.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)


@dataclasses.dataclass(eq=False)
class KangSyntheticConfig(tfds.core.BuilderConfig):
    """A ``kang_synthetic`` variant; the fields are ``KangSynthetic``'s options."""

    source: str = "generated"
    noisy: bool = False
    seed: int = 0
    validation_per_task: int = 5


class KangSynthetic(_CodeHere, tfds.core.GeneratorBasedBuilder):
    """Kang et al. (ICML 2011): 30 linear regression tasks in 3 groups, one task per example."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: configs generated, clean and noisy; 5 of each task's 15 "
        "training examples held out as validation (MUiR convention, hold-out seed 0).",
    }
    BUILDER_CONFIGS = [
        KangSyntheticConfig(
            name="generated",
            description="Generated in-process with the published structure (seed 0); needs no files.",
            source="generated",
        ),
        KangSyntheticConfig(
            name="clean", description="The published data, noise-free targets.", source="files"
        ),
        KangSyntheticConfig(
            name="noisy", description="The published data, targets with Gaussian noise.", source="files", noisy=True
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"The clean and noisy configs read {kang.FILENAME} and its {kang.SUMS_FILENAME} from the "
        f"manual directory if it holds them, else from ${DATA_DIR_ENV}/{kang.SUBDIR}/."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        # Built directly: dataset_info_from_configs needs a TFDS package directory.
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Synthetic multi-task regression benchmark: 30 linear tasks on 20-d inputs in 3 groups "
                "of 10 whose weight vectors are multiples of one direction per group. 10 train, "
                "5 validation and 50 test examples per task."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(kang.NUM_FEATURES,), dtype=np.float32),
                    "target": tfds.features.Scalar(dtype=np.float32),
                    "task": tfds.features.ClassLabel(names=list(kang.TASK_NAMES)),
                }
            ),
            homepage="https://mlanthology.org/icml/2011/kang2011icml-learning/",
            citation=_CITATION,
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        dataset = kang.KangSynthetic(
            source=config.source,
            noisy=config.noisy,
            seed=config.seed,
            data_dir=self._files_dir(dl_manager) if config.source == "files" else None,
            validation_per_task=config.validation_per_task,
        )
        return {split: self._generate_examples(dataset, split) for split in dataset.splits}

    def _generate_examples(self, dataset, split):
        features, target, task = dataset.examples(split)
        for i in range(len(target)):
            yield i, {"features": features[i], "target": target[i], "task": int(task[i])}

    def _files_dir(self, dl_manager) -> str:
        """The manual directory if it holds the npz, else ``$MTLZOO_DATA_DIR/kang_synthetic``."""
        try:
            manual = dl_manager.manual_dir
        except AssertionError:  # TFDS raises it for a missing or empty manual directory.
            manual = None
        if manual is not None:
            for candidate in (manual, manual / kang.SUBDIR):
                if (candidate / kang.FILENAME).exists():
                    return str(candidate)
        try:
            return resolve_data_dir(None, kang.SUBDIR)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} {self.MANUAL_DOWNLOAD_INSTRUCTIONS}") from err


# --- the MultiMNIST family ---------------------------------------------------------------------

_SENER_CITATION = """\
@inproceedings{sener2018multi,
  title     = {Multi-Task Learning as Multi-Objective Optimization},
  author    = {Sener, Ozan and Koltun, Vladlen},
  booktitle = {Advances in Neural Information Processing Systems 31 (NeurIPS)},
  pages     = {527--538},
  year      = {2018},
}
"""
_LIN_CITATION = """\
@inproceedings{lin2019pareto,
  title     = {Pareto Multi-Task Learning},
  author    = {Lin, Xi and Zhen, Hui-Ling and Li, Zhenhua and Zhang, Qingfu and Kwong, Sam},
  booktitle = {Advances in Neural Information Processing Systems 32 (NeurIPS)},
  pages     = {12060--12070},
  year      = {2019},
}
"""
_SENER_HOMEPAGE = "https://arxiv.org/abs/1810.04650"
_LIN_HOMEPAGE = "https://arxiv.org/abs/1912.12854"


@dataclasses.dataclass(eq=False)
class MultiMnistConfig(tfds.core.BuilderConfig):
    """A variant of ``multi_mnist``, ``multi_fashion`` or ``multi_fashion_mnist``; the fields are
    the options of ``mtlzoo.data.multi_mnist.MultiImageDataset``."""

    seed: int = 0
    max_examples: int | None = None


class MultiImageBuilder(_CodeHere, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared builder of the MultiMNIST family; each subclass names its ``DATASET_CLASS``.

    ``skip_registration`` keeps this base out of the TFDS registry; the subclasses register
    under the snake-case of their class names.
    """

    DATASET_CLASS: type[multi_mnist.MultiImageDataset] = multi_mnist.MultiImageDataset
    DESCRIPTION = ""
    HOMEPAGE = _SENER_HOMEPAGE
    CITATION = _SENER_CITATION

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: 36x36 canvases (left image at the top-left, right image at the "
        "bottom-right, pixel-wise max); validation is a fixed random 10000 of the 60000 training "
        "images; config seed0 pairs the images with seed 0.",
    }
    BUILDER_CONFIGS = [
        MultiMnistConfig(name="seed0", description="Images paired with seed 0; every example of each split."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "The idx files (with SHA256SUMS.uncompressed for MNIST, MD5SUMS.uncompressed for Fashion-MNIST) "
        f"are read from mnist/ and fashion_mnist/ in the manual directory if it holds them, else "
        f"from ${DATA_DIR_ENV}/mnist/ and ${DATA_DIR_ENV}/fashion_mnist/."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        left, right = self.DATASET_CLASS.left_collection, self.DATASET_CLASS.right_collection
        size = multi_mnist.CANVAS_SIZE
        # Built directly: dataset_info_from_configs needs a TFDS package directory.
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 1)),
                    "left": tfds.features.ClassLabel(names=list(multi_mnist.CLASS_NAMES[left])),
                    "right": tfds.features.ClassLabel(names=list(multi_mnist.CLASS_NAMES[right])),
                }
            ),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        dataset = self.DATASET_CLASS(
            data_dir=self._files_root(dl_manager), seed=config.seed, max_examples=config.max_examples
        )
        return {split: self._generate_examples(dataset, split) for split in dataset.splits}

    def _generate_examples(self, dataset, split):
        arrays = dataset.load(split)
        image, left, right = arrays.inputs["image"], arrays.targets["left"], arrays.targets["right"]
        for i in range(len(arrays)):
            yield i, {"image": image[i], "left": int(left[i]), "right": int(right[i])}

    def _files_root(self, dl_manager) -> str:
        """The manual directory if it holds the needed folders, else ``$MTLZOO_DATA_DIR``."""
        folders = sorted({multi_mnist.COLLECTIONS[c][0] for c in (self.DATASET_CLASS.left_collection,
                                                                 self.DATASET_CLASS.right_collection)})
        try:
            manual = dl_manager.manual_dir
        except AssertionError:  # TFDS raises it for a missing or empty manual directory.
            manual = None
        if manual is not None and all((manual / folder).is_dir() for folder in folders):
            return str(manual)
        try:
            for folder in folders:
                resolve_data_dir(None, folder)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} {self.MANUAL_DOWNLOAD_INSTRUCTIONS}") from err
        return os.environ[DATA_DIR_ENV]


class MultiMnist(MultiImageBuilder):
    """MultiMNIST (Sener & Koltun, NeurIPS 2018): two MNIST digits on a 36x36 canvas."""

    DATASET_CLASS = multi_mnist.MultiMnist
    DESCRIPTION = (
        "MultiMNIST: two MNIST digits overlaid on a 36x36 canvas, one at the top-left and one at the "
        "bottom-right; the tasks classify the left and the right digit. 50000 train, 10000 validation "
        "and 10000 test examples."
    )


class MultiFashion(MultiImageBuilder):
    """MultiFashion (Lin et al., NeurIPS 2019): two Fashion-MNIST items on a 36x36 canvas."""

    DATASET_CLASS = multi_mnist.MultiFashion
    DESCRIPTION = (
        "MultiFashion: two Fashion-MNIST items overlaid on a 36x36 canvas, one at the top-left and one "
        "at the bottom-right; the tasks classify the left and the right item. 50000 train, 10000 "
        "validation and 10000 test examples."
    )
    HOMEPAGE = _LIN_HOMEPAGE
    CITATION = _LIN_CITATION


class MultiFashionMnist(MultiImageBuilder):
    """Multi-(Fashion+MNIST) (Lin et al., NeurIPS 2019): an MNIST digit and a Fashion-MNIST item."""

    DATASET_CLASS = multi_mnist.MultiFashionMnist
    DESCRIPTION = (
        "Multi-(Fashion+MNIST): an MNIST digit at the top-left and a Fashion-MNIST item at the "
        "bottom-right of a 36x36 canvas; the tasks classify the digit (left) and the item (right). "
        "50000 train, 10000 validation and 10000 test examples."
    )
    HOMEPAGE = _LIN_HOMEPAGE
    CITATION = _LIN_CITATION


# --- permuted MNIST task sets ---------------------------------------------------------------------

_ZAKERINIA_CITATION = """\
@article{zakerinia2025deep,
  title   = {Deep Multi-Task Learning Has Low Amortized Intrinsic Dimensionality},
  author  = {Zakerinia, Hossein and Ghobadi, Dorsa and Lampert, Christoph H.},
  journal = {arXiv preprint arXiv:2501.19067},
  year    = {2025},
}
"""


@dataclasses.dataclass(eq=False)
class PermutedMnistConfig(tfds.core.BuilderConfig):
    """A variant of ``permuted_mnist`` or ``label_permuted_mnist``; the fields are the options of
    ``mtlzoo.data.permuted_mnist.PermutedMnist``."""

    num_tasks: int = 10
    examples_per_task: int = 1000
    heldout_per_task: int = 1000
    seed: int = 0
    pixel_swaps: int | None = None


class PermutedMnistBuilder(_CodeHere, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared builder of the permuted MNIST task sets; each subclass names its ``DATASET_CLASS``.

    Each example is one task's flat 784-pixel image (already permuted for ``permuted_mnist``),
    its label (already renamed for ``label_permuted_mnist``) and its task; examples are
    task-major, as ``load(split)`` gives them.
    """

    DATASET_CLASS: type[permuted_mnist.PermutedMnist] = permuted_mnist.PermutedMnist
    DESCRIPTION = ""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 10 tasks, 1000 training and 1000 validation and test images each."}
    BUILDER_CONFIGS = [PermutedMnistConfig(name="t10_n1000", description="10 tasks, 1000 images per task and split.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "The MNIST idx files (with SHA256SUMS.uncompressed) are read from mnist/ in the manual directory "
        f"if it holds them, else from ${DATA_DIR_ENV}/mnist/."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        names = [f"task_{t:02d}" for t in range(config.num_tasks)]
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(permuted_mnist.PIXELS,), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=multi_mnist.NUM_CLASSES),
                "task": tfds.features.ClassLabel(names=names),
            }),
            homepage="https://arxiv.org/abs/2501.19067",
            citation=_ZAKERINIA_CITATION,
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        root = None
        try:
            manual = dl_manager.manual_dir
        except AssertionError:  # TFDS raises it for a missing or empty manual directory.
            manual = None
        if manual is not None and (manual / "mnist").is_dir():
            root = str(manual)
        dataset = self.DATASET_CLASS(num_tasks=config.num_tasks, examples_per_task=config.examples_per_task,
                                     heldout_per_task=config.heldout_per_task, seed=config.seed,
                                     pixel_swaps=config.pixel_swaps, data_dir=root)
        return {split: self._generate_examples(dataset, split) for split in dataset.splits}

    def _generate_examples(self, dataset, split):
        arrays = dataset.load(split)
        names = dataset.task_names()
        weights = np.stack([arrays.weights[name] for name in names], axis=1)
        task = weights.argmax(axis=1)
        for i in range(len(arrays)):
            label = int(arrays.targets[names[task[i]]][i, 0])
            yield i, {"image": arrays.inputs["image"][i], "label": label, "task": int(task[i])}


class PermutedMnist(PermutedMnistBuilder):
    """Permuted MNIST: each task MNIST under its own fixed pixel permutation."""

    DATASET_CLASS = permuted_mnist.PixelPermutedMnist
    DESCRIPTION = ("Permuted MNIST: T tasks, each the MNIST digits with the 784 pixels in the task's own fixed "
                   "random order (or, with pixel_swaps=s, s random pixel pairs swapped); each task has its own "
                   "images.")


class LabelPermutedMnist(PermutedMnistBuilder):
    """Label-permuted MNIST: each task MNIST with its ten labels renamed by a fixed permutation."""

    DATASET_CLASS = permuted_mnist.LabelPermutedMnist
    DESCRIPTION = ("Label-permuted MNIST: T tasks, each the MNIST digits with the ten labels renamed by the "
                   "task's own fixed permutation; each task has its own images.")
