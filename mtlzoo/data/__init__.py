"""Benchmark datasets: plain readers, in-process generators and TFDS builders.

Importing this package registers every dataset with mtlzoo (``load_dataset(name)``) and its
TFDS builder with tensorflow-datasets (``tfds.load(name)``, offline).
"""

from mtlzoo.data import dna_motif, kang, multi_mnist, school, tfds_builders  # noqa: F401  (registration)
from mtlzoo.data.base import (
    DATA_DIR_ENV,
    Dataset,
    MultiTaskArrays,
    list_datasets,
    load_dataset,
    register_dataset,
)

__all__ = ["DATA_DIR_ENV", "Dataset", "MultiTaskArrays", "list_datasets", "load_dataset", "register_dataset"]
