"""The hypermodule bank of MUiR (Meyerson & Miikkulainen, NeurIPS 2019).

Every reparameterized weight tensor is cut into blocks of shape (m, n), the *pseudo-tasks*.
Block l is generated from a learned context vector z_l in R^c by a hypermodule, a linear map
H_k: R^c -> R^(m*n) without bias: ``vec(B_l) = H_psi(l) z_l``. The bank holds K hypermodules,
the L contexts and the assignment psi, and generates all L blocks in one batched contraction.

During alignment search a location may hold several candidate hypermodules (the incumbent in
slot 0 and challengers after it); the block is then the softmax-weighted mix of what each
candidate generates, with the mixing logits trained alongside the weights.

``Reparameterized(layer)`` runs any Dense, convolution or recurrent layer with its kernels
assembled from the bank's blocks, inside one functional model; ``mtlzoo.muir.MuirModel`` does
the same for whole models of several domains.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from mtlzoo.layers.substitution import call_with  # noqa: F401  (re-exported by mtlzoo.muir)
from mtlzoo.validation import positive_int


REPARAMETERIZED = ("kernel", "recurrent_kernel")


def block_count(shape: Sequence[int], block_shape: Sequence[int]) -> int | None:
    """How many (m, n) blocks a kernel of ``shape`` cuts into, or None if it does not divide."""
    m, n = block_shape
    if len(shape) < 2 or shape[-1] % m or shape[-2] % n:
        return None
    return int(np.prod(shape[:-2], dtype=np.int64)) * (shape[-1] // m) * (shape[-2] // n)


def he_context(shape: Sequence[int]) -> float:
    """The context entry that makes a generated kernel of ``shape`` He-initialised: sqrt(2 / fan_in)."""
    return math.sqrt(2.0 / int(np.prod(shape[:-1])))


def assemble(blocks, shape: Sequence[int]):
    """The kernel of ``shape`` from its blocks (count, m, n), as laid out in ``BlockSlot``."""
    count, m, n = blocks.shape
    *positions, fan_in, fan_out = shape
    p = len(positions)
    grid = ops.reshape(blocks, (*positions, fan_out // m, fan_in // n, m, n))
    # (..., out block, in block, m, n) -> (..., in block, n, out block, m) -> (..., fan_in, fan_out)
    grid = ops.transpose(grid, (*range(p), p + 1, p + 3, p, p + 2))
    return ops.reshape(grid, tuple(shape))


def split(kernel: np.ndarray, block_shape: Sequence[int]) -> np.ndarray:
    """The inverse of ``assemble``: a kernel's blocks, shape (count, m, n)."""
    m, n = block_shape
    *positions, fan_in, fan_out = kernel.shape
    p = len(positions)
    grid = np.reshape(kernel, (*positions, fan_in // n, n, fan_out // m, m))
    grid = np.transpose(grid, (*range(p), p + 2, p, p + 3, p + 1))
    return np.reshape(grid, (-1, m, n))



@keras.saving.register_keras_serializable(package="mtlzoo")
class HypermoduleBank(keras.layers.Layer):
    """K hypermodules generating L blocks of shape ``block_shape`` from L context vectors.

    Args:
        num_blocks: L, the number of block locations (pseudo-tasks) the bank generates.
        block_shape: (m, n) of every block.
        context_size: c, the length of each context vector.
        num_hypermodules: K; default L, one hypermodule per block (the "pessimistic" start,
            where nothing is shared until the alignment search finds it pays).
        num_candidates: hypermodules per location at once, 1 + lambda during alignment search.
        context_scales: the initial value of every context entry, one number per block, or
            ``[[count, value], ...]`` runs of blocks; MUiR uses sqrt(2 / fan_in) of the weight
            the block belongs to, which makes the generated weights He-initialised.
        mix_lr_multiplier: how much faster the candidates' mixing logits learn than the other
            weights (MUiR trains them with their own, larger learning rate).

    ``call()`` takes no inputs and returns the blocks, shape (L, m, n). The assignment
    ``assignment`` (L, num_candidates) is a non-trainable int variable: slot 0 of each row is the
    incumbent, the others challengers; ``mix_logits`` (L, num_candidates) is trainable when there
    are challengers. ``mtlzoo.muir.AlignmentSearch`` rewrites both between generations.
    """

    def __init__(self, num_blocks: int, block_shape: Sequence[int] = (16, 16), context_size: int = 4,
                 num_hypermodules: int | None = None, num_candidates: int = 1, context_scales=None,
                 mix_lr_multiplier: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_blocks = positive_int("HypermoduleBank", "num_blocks", num_blocks)
        if len(block_shape) != 2:
            raise ValueError(f"HypermoduleBank: block_shape must be (m, n), got {block_shape!r}.")
        self.block_shape = tuple(positive_int("HypermoduleBank", "block_shape", d) for d in block_shape)
        self.context_size = positive_int("HypermoduleBank", "context_size", context_size)
        self.num_hypermodules = positive_int("HypermoduleBank",
            "num_hypermodules", self.num_blocks if num_hypermodules is None else num_hypermodules
        )
        self.num_candidates = positive_int("HypermoduleBank", "num_candidates", num_candidates)
        self.context_scales = _expand_scales(context_scales, self.num_blocks)
        if isinstance(mix_lr_multiplier, bool) or not isinstance(mix_lr_multiplier, (int, float)) \
                or mix_lr_multiplier <= 0:
            raise ValueError(f"HypermoduleBank: mix_lr_multiplier must be a number > 0, got {mix_lr_multiplier!r}.")
        self.mix_lr_multiplier = float(mix_lr_multiplier)
        self._scale_runs = _compress(self.context_scales)

    def build(self, input_shape=None):
        m, n = self.block_shape
        c = self.context_size
        # H_k ~ N(0, 1/c): with contexts of entries s, each generated weight has variance s^2.
        self.hypermodules = self.add_weight(
            name="hypermodules", shape=(self.num_hypermodules, c, m * n),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(c)),
        )
        scales = np.repeat(self.context_scales[:, None], c, axis=1).astype("float32")
        self.contexts = self.add_weight(
            name="contexts", shape=(self.num_blocks, c), initializer=keras.initializers.Constant(scales)
        )
        start = np.tile(np.arange(self.num_blocks) % self.num_hypermodules, (self.num_candidates, 1)).T
        self.assignment = self.add_weight(
            name="assignment", shape=(self.num_blocks, self.num_candidates), dtype="int32",
            initializer=keras.initializers.Constant(start), trainable=False,
        )
        self.mix_logits = self.add_weight(
            name="mix_logits", shape=(self.num_blocks, self.num_candidates), initializer="zeros",
            trainable=self.num_candidates > 1,
        )
        # Alignment-search generations completed; kept with the weights so a run resumes.
        self.generation = self.add_weight(
            name="generation", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self.built = True

    def call(self, inputs=None):
        m, n = self.block_shape
        # Batched (1 x c) @ (c x m*n) products: on the CPU several times cheaper, forward and
        # backward, than the equivalent einsum.
        contexts = self.contexts[:, None, :]
        if self.num_candidates == 1:
            blocks = ops.matmul(contexts, ops.take(self.hypermodules, self.assignment[:, 0], axis=0))
        else:
            modules = ops.take(self.hypermodules, self.assignment, axis=0)  # (L, candidates, c, m*n)
            generated = ops.matmul(contexts[:, None], modules)[:, :, 0]  # each candidate's block
            blocks = ops.matmul(self.mix_weights()[:, None, :], generated)
        return ops.reshape(blocks, (self.num_blocks, m, n))

    def mix_weights(self):
        """The softmax weights of each location's candidates, (L, num_candidates).

        ``mix_logits`` holds the logits divided by ``mix_lr_multiplier``, so that under Adam-like
        optimizers the logits learn that many times faster than the other weights.
        """
        return ops.softmax(self.mix_logits * self.mix_lr_multiplier, axis=-1)

    def set_mix_logits(self, logits) -> None:
        self.mix_logits.assign(np.asarray(logits, "float32") / self.mix_lr_multiplier)

    def compute_output_shape(self, input_shape=None):
        return (self.num_blocks, *self.block_shape)

    def incumbents(self) -> np.ndarray:
        """psi: the hypermodule at slot 0 of every location, shape (L,)."""
        return np.asarray(ops.convert_to_numpy(self.assignment))[:, 0]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_blocks": self.num_blocks,
            "block_shape": list(self.block_shape),
            "context_size": self.context_size,
            "num_hypermodules": self.num_hypermodules,
            "num_candidates": self.num_candidates,
            "context_scales": self._scale_runs,
            "mix_lr_multiplier": self.mix_lr_multiplier,
        }


def _expand_scales(scales, num_blocks: int) -> np.ndarray:
    if scales is None:
        return np.ones(num_blocks, "float64")
    scales = list(scales)
    if scales and isinstance(scales[0], (list, tuple)):
        scales = [float(v) for count, v in scales for _ in range(int(count))]
    array = np.asarray(scales, "float64")
    if array.shape != (num_blocks,) or not np.all(np.isfinite(array)):
        raise ValueError(
            f"HypermoduleBank: context_scales must give one finite number per block ({num_blocks}), "
            f"directly or as [[count, value], ...] runs; got {array.size} numbers."
        )
    return array


def _compress(scales: np.ndarray) -> list[list]:
    """Runs ``[[count, value], ...]``: a config stays small for banks of many blocks."""
    runs: list[list] = []
    for value in scales.tolist():
        if runs and runs[-1][1] == value:
            runs[-1][0] += 1
        else:
            runs.append([1, value])
    return runs


@keras.saving.register_keras_serializable(package="mtlzoo")
class Reparameterized(keras.layers.Wrapper):
    """A layer whose kernels are blocks generated by a ``HypermoduleBank``.

    Called on ``[x, blocks]``, where ``blocks`` is the bank's output (call the bank once per
    model; every reparameterized layer slices it), it runs the wrapped layer on ``x`` with its
    ``kernel`` (and ``recurrent_kernel``, for LSTM/GRU/RNN layers) assembled from
    ``blocks[offset:offset + num_blocks]``: Dense, Conv1D/2D/3D and recurrent layers all work,
    unchanged. The wrapped layer's own kernels stay as untrained placeholders;
    ``mtlzoo.muir.freeze`` writes the generated values into an ordinary copy for export.

    Args:
        layer: the layer to reparameterize; each of its kernels must divide into blocks.
        offset: index of this layer's first block in the bank.
        block_shape: (m, n), as in the bank.
        group: a label for inspection (``mtlzoo.muir.sharing``), e.g. the task it serves.
    """

    def __init__(self, layer, offset: int = 0, block_shape: Sequence[int] = (16, 16), group: str = "", **kwargs):
        super().__init__(layer, **kwargs)
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"Reparameterized: offset must be an integer >= 0, got {offset!r}.")
        self.offset = int(offset)
        self.block_shape = tuple(positive_int("HypermoduleBank", "block_shape", d) for d in block_shape)
        self.group = str(group)

    def build(self, input_shape):
        x_shape, blocks_shape = input_shape
        if len(blocks_shape) != 3 or tuple(blocks_shape[1:]) != self.block_shape:
            raise ValueError(
                f"Reparameterized {self.name!r}: the second input must be the bank's blocks, shape "
                f"(L, {self.block_shape[0]}, {self.block_shape[1]}); got {tuple(blocks_shape)}."
            )
        if not self.layer.built:
            self.layer.build(x_shape)
        self.kernels = [v for v in self.layer.weights if v.name in REPARAMETERIZED]
        if not self.kernels:
            raise ValueError(f"Reparameterized: layer {self.layer.name!r} has no kernel to generate.")
        counts = [block_count(v.shape, self.block_shape) for v in self.kernels]
        if None in counts:
            shapes = [tuple(v.shape) for v in self.kernels]
            raise ValueError(
                f"Reparameterized: the kernels {shapes} of {self.layer.name!r} do not divide into "
                f"{self.block_shape} blocks (the last axis by m, the one before by n)."
            )
        self.counts = counts
        self.num_blocks = sum(counts)
        if blocks_shape[0] is not None and self.offset + self.num_blocks > blocks_shape[0]:
            raise ValueError(
                f"Reparameterized {self.name!r}: blocks {self.offset}..{self.offset + self.num_blocks - 1} "
                f"are beyond the bank's {blocks_shape[0]}."
            )
        for variable in self.kernels:
            variable.trainable = False  # a placeholder: the bank trains these weights
        self.built = True

    def generated(self, blocks) -> list:
        """``[(kernel variable, its generated value), ...]`` from the bank's ``blocks``."""
        pairs, offset = [], self.offset
        for variable, count in zip(self.kernels, self.counts):
            pairs.append((variable, assemble(blocks[offset:offset + count], variable.shape)))
            offset += count
        return pairs

    def call(self, inputs, training=None):
        x, blocks = inputs
        return call_with(self.layer, self.generated(blocks), x, training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape[0])

    def get_config(self) -> dict:
        return {**super().get_config(), "offset": self.offset, "block_shape": list(self.block_shape),
                "group": self.group}
