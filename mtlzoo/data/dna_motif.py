"""A generated DNA-binding task: does a sequence contain a transcription-factor motif?

Sequences of ``length`` bases drawn uniformly from ACGT, one-hot encoded as (length, 4). A
hidden motif, a position weight matrix of ``motif_length`` columns drawn from a Dirichlet
(so each position prefers some bases), is planted at a random position in half of the
sequences; the task ``binding`` (binary) is whether a sequence holds a planted motif. It stands
in for DeepBind-style protein-binding data, which cannot be downloaded here, and needs no files.
"""

from __future__ import annotations

import numpy as np

from mtlzoo.data.base import Dataset, MultiTaskArrays, check_int_option, register_dataset
from mtlzoo.tasks import Task

BASES = "ACGT"
_SPLIT_STREAMS = {"train": 1, "validation": 2, "test": 3}


@register_dataset("dna_motif")
class DnaMotif(Dataset):
    """Binary motif detection in one-hot DNA sequences, generated in-process.

    Args:
        seed: seed of the motif and of every split's sequences.
        length: bases per sequence.
        motif_length: columns of the planted motif.
        concentration: Dirichlet concentration of the motif's columns; smaller is sharper.
        num_train, num_validation, num_test: sequences per split (half of them bind).
    """

    def __init__(self, *, seed: int = 0, length: int = 101, motif_length: int = 10, concentration: float = 0.1,
                 num_train: int = 4000, num_validation: int = 1000, num_test: int = 1000):
        for name, value, minimum in (("seed", seed, 0), ("length", length, 1), ("motif_length", motif_length, 1),
                                     ("num_train", num_train, 2), ("num_validation", num_validation, 2),
                                     ("num_test", num_test, 2)):
            check_int_option("dna_motif", name, value, minimum=minimum)
        if motif_length > length:
            raise ValueError(f"dna_motif: motif_length ({motif_length}) cannot exceed length ({length}).")
        if isinstance(concentration, bool) or not isinstance(concentration, (int, float)) or concentration <= 0:
            raise ValueError(f"dna_motif: option concentration must be a number > 0, got {concentration!r}.")
        self.seed, self.length, self.motif_length = int(seed), int(length), int(motif_length)
        self.concentration = float(concentration)
        self.sizes = {"train": int(num_train), "validation": int(num_validation), "test": int(num_test)}

    def tasks(self) -> list[Task]:
        return [Task(name="binding", kind="binary")]

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        return {"sequence": (self.length, len(BASES))}

    def motif(self) -> np.ndarray:
        """The planted position weight matrix, (motif_length, 4); each row sums to 1."""
        rng = np.random.default_rng([self.seed, 0])
        return rng.dirichlet(np.full(len(BASES), self.concentration), size=self.motif_length)

    def examples(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bases int8 (N, length), binds int64 (N,), motif start (N,), -1 where none)``."""
        self.check_split(split)
        rng = np.random.default_rng([self.seed, _SPLIT_STREAMS[split]])
        n = self.sizes[split]
        bases = rng.integers(0, len(BASES), (n, self.length)).astype(np.int8)
        binds = rng.permutation(np.arange(n) % 2).astype(np.int64)
        starts = np.where(binds == 1, rng.integers(0, self.length - self.motif_length + 1, n), -1)
        motif = self.motif()
        for i in np.flatnonzero(binds):
            planted = [rng.choice(len(BASES), p=column) for column in motif]
            bases[i, starts[i]:starts[i] + self.motif_length] = planted
        return bases, binds, starts

    def load(self, split: str) -> MultiTaskArrays:
        bases, binds, _ = self.examples(split)
        one_hot = np.eye(len(BASES), dtype=np.float32)[bases]
        return MultiTaskArrays(
            {"sequence": one_hot},
            {"binding": binds.astype(np.float32)[:, None]},
            {"binding": np.ones(len(binds), np.float32)},
        )
