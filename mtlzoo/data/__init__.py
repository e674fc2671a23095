"""Benchmark datasets: plain readers, in-process generators and TFDS builders.

Importing this package registers every dataset with mtlzoo (``load_dataset(name)``). The TFDS
builders register with tensorflow-datasets when ``mtlzoo.data.tfds_builders`` is imported
(then ``tfds.load(name)`` works offline); ``import mtlzoo`` leaves tensorflow-datasets alone:
training, evaluation and export never need it.
"""

from mtlzoo.data import dna_motif, kang, multi_mnist, permuted_mnist, school, tumour_survival  # noqa: F401  (registration)
from mtlzoo.data import survival_tables  # noqa: F401  (registration)
from mtlzoo.data.base import (
    DATA_DIR_ENV,
    Dataset,
    MultiTaskArrays,
    list_datasets,
    load_dataset,
    register_dataset,
)

__all__ = ["DATA_DIR_ENV", "Dataset", "MultiTaskArrays", "list_datasets", "load_dataset", "register_dataset"]
