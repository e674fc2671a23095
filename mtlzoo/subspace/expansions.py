"""Fixed random expansions P (D x d) from a d-dimensional subspace to a network's D weights.

Training in a random subspace (Li et al., ICLR 2018, "Measuring the Intrinsic Dimension of
Objective Landscapes") sets theta = theta_0 + P w and trains only w. P is fixed and random, so
it is regenerated from ``(kind, D, d, seed)`` rather than stored; ``apply`` computes P @ W
without ever forming P for the sparse and Kronecker kinds, so D can run to the millions:

- ``kronecker``: P = the first d columns of (Q1 (x) Q2), rows randomly permuted and cut to D,
  with Q1 (D1 x d1) and Q2 (D2 x d2) Gaussian matrices orthonormalised by QR, D1*D2 >= D and
  d1*d2 >= d (Lotfi et al., NeurIPS 2022, "PAC-Bayes Compression Bounds So Tight That They Can
  Explain Generalization"). Columns are orthonormal when D1*D2 = D and near it otherwise.
  Memory O(D + sqrt(D d)); P w costs O(D (d1 + d2)) per vector w.
- ``sparse``: each row of P has ``nonzeros`` entries +-s at random columns, s chosen so that
  columns have unit norm in expectation (a very sparse random projection; Li, Hastie & Church,
  KDD 2006). Memory O(D * nonzeros).
- ``dense``: Gaussian columns normalised to unit length (Li et al.'s own construction), stored
  as a D x d matrix: the reference, for small D.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from mtlzoo.validation import positive_int

KINDS = ("kronecker", "sparse", "dense")


class Expansion:
    """A fixed random D x d matrix P, regenerated from ``seed``; ``apply(W)`` is P @ W.

    Args:
        kind: one of ``KINDS``.
        size: D, the number of weights theta_0 + P w sets.
        dim: d, the subspace dimension (at most D).
        seed: the integer P is generated from (numpy's PCG64), recorded in model configs.
        nonzeros: entries per row of a ``sparse`` P.
    """

    def __init__(self, kind: str, size: int, dim: int, seed: int = 0, *, nonzeros: int = 4):
        if kind not in KINDS:
            raise ValueError(f"expansion must be one of {list(KINDS)}, got {kind!r}.")
        self.kind = kind
        self.size = positive_int("expansion", "size (D)", size)
        self.dim = positive_int("expansion", "dim (d)", dim)
        self.seed = int(seed)
        self.nonzeros = positive_int("expansion", "nonzeros", nonzeros)
        if self.dim > self.size:
            raise ValueError(f"expansion: the subspace dimension d={dim} exceeds the number of weights D={size}.")
        rng = np.random.default_rng([self.seed, KINDS.index(kind)])
        if kind == "dense":
            p = rng.standard_normal((self.size, self.dim))
            self._arrays = (p / np.linalg.norm(p, axis=0, keepdims=True),)
        elif kind == "sparse":
            columns = rng.integers(0, self.dim, size=(self.size, self.nonzeros))
            # Each column receives D * nonzeros / d entries on average: scale for unit norm.
            scale = math.sqrt(self.dim / (self.size * self.nonzeros))
            signs = rng.choice(np.array([-scale, scale]), size=(self.size, self.nonzeros))
            self._arrays = (columns.astype(np.int32), signs)
        else:
            d1 = math.ceil(math.sqrt(self.dim))
            d2 = math.ceil(self.dim / d1)
            big1 = max(math.ceil(math.sqrt(self.size)), d1)
            big2 = max(math.ceil(self.size / big1), d2)
            q1 = np.linalg.qr(rng.standard_normal((big1, d1)))[0]
            q2 = np.linalg.qr(rng.standard_normal((big2, d2)))[0]
            rows = rng.permutation(big1 * big2)[: self.size].astype(np.int32)
            self._arrays = (q1, q2, rows)

    def get_config(self) -> dict:
        return {"kind": self.kind, "size": self.size, "dim": self.dim, "seed": self.seed, "nonzeros": self.nonzeros}

    def stored_values(self) -> int:
        """How many numbers the matrix-free form keeps in memory (D * d for ``dense``)."""
        return int(sum(a.size for a in self._arrays))

    def matrix(self) -> np.ndarray:
        """P as a dense float64 array: for tests and small D only."""
        if self.kind == "dense":
            return self._arrays[0].copy()
        if self.kind == "sparse":
            columns, signs = self._arrays
            p = np.zeros((self.size, self.dim))
            np.add.at(p, (np.repeat(np.arange(self.size), self.nonzeros), columns.ravel()), signs.ravel())
            return p
        q1, q2, rows = self._arrays
        return np.kron(q1, q2)[rows, : self.dim]

    def apply(self, w):
        """P w for w of shape (d,), or for each row of w of shape (T, d): (D,) or (T, D), float32.

        Rows, not columns, so that each task's D weights are contiguous: splitting them into
        the network's variables is a cheap split whose gradient is a concat.
        """
        vector = len(w.shape) == 1
        w = ops.reshape(w, (1, self.dim)) if vector else w
        # Converted on every call, not cached: a tensor made inside one traced function cannot
        # be used from another (inside a trace they are constants, made once).
        tensors = tuple(ops.convert_to_tensor(a, dtype="int32" if a.dtype.kind == "i" else "float32")
                        for a in self._arrays)
        if self.kind == "dense":
            out = ops.matmul(w, ops.transpose(tensors[0]))
        elif self.kind == "sparse":
            columns, signs = tensors
            out = ops.sum(ops.take(w, columns, axis=1) * signs, axis=-1)
        else:
            q1, q2, rows = tensors
            (big1, d1), (big2, d2) = q1.shape, q2.shape
            grid = ops.reshape(ops.pad(w, [(0, 0), (0, d1 * d2 - self.dim)]), (-1, d1, d2))
            # Two matmuls, the small factor first: (T, d1, d2) -> (T, d1, D2) -> (T, D1, D2).
            full = ops.matmul(q1, ops.matmul(grid, ops.transpose(q2)))
            out = _permute(ops.reshape(full, (-1, big1 * big2)), rows, self._inverse_rows())
        return ops.reshape(out, (self.size,)) if vector else out

    def _inverse_rows(self):
        # Where each Kronecker row went, or D (a zero column the gradient appends) if it was cut.
        rows = self._arrays[2]
        inverse = np.full(self._arrays[0].shape[0] * self._arrays[1].shape[0], self.size, np.int32)
        inverse[rows] = np.arange(self.size, dtype=np.int32)
        return ops.convert_to_tensor(inverse, dtype="int32")


def _permute(x, rows, inverse):
    """``x[:, rows]``, rows distinct; its gradient is a gather by ``inverse``, not a scatter-add.

    A gather's generic gradient accumulates into a zero tensor (a scatter-add, slow on CPU);
    a permutation's transpose is just the inverse permutation.
    """

    @ops.custom_gradient
    def permute(values):
        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            return ops.take(ops.pad(upstream, [(0, 0), (0, 1)]), inverse, axis=1)

        return ops.take(values, rows, axis=1), grad

    return permute(x)
