"""Compressing a subspace model's free parameters into a message of C bits.

Q and alpha_1..T are quantised to a codebook of L levels (``kmeans_codebook``, then fine-tuned
with the quantisation in the forward pass: ``SubspaceColumns(levels=L)``), and the level
indices are arithmetic-coded with their empirical frequencies (``ArithmeticCoder``, a 32-bit
integer coder after Witten, Neal & Cleary, CACM 1987). The message is

    header:  L and the number of symbols N (Elias gamma codes), each level as a float32,
             each level's count in ceil(log2(N + 1)) bits;
    payload: the arithmetic code of the N indices under those counts,

and ``message_length`` counts every bit of it: it is what a decoder holding the seed (theta_0,
P) needs to rebuild the quantised model exactly.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

_BITS = 32
_FULL = (1 << _BITS) - 1
_HALF = 1 << (_BITS - 1)
_QUARTER = 1 << (_BITS - 2)


def kmeans_codebook(values: np.ndarray, levels: int, iterations: int = 50) -> np.ndarray:
    """``levels`` sorted float32 values that quantise ``values`` well (1-D Lloyd from quantiles)."""
    values = np.asarray(values, np.float64).ravel()
    if levels < 1 or not len(values):
        raise ValueError(f"kmeans_codebook: need levels >= 1 and some values, got {levels!r} and {len(values)}.")
    codebook = np.quantile(values, (np.arange(levels) + 0.5) / levels)
    for _ in range(iterations):
        index = nearest(values, codebook)
        for k in range(levels):
            if (index == k).any():
                codebook[k] = values[index == k].mean()
        codebook = np.sort(codebook)
    return codebook.astype(np.float32)


def nearest(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """For each value, the index of the nearest level (ties to the lower)."""
    return np.abs(np.asarray(values)[..., None] - np.asarray(codebook)).argmin(axis=-1)


class ArithmeticCoder:
    """Static-model arithmetic coding of symbols 0..L-1 with the given positive counts."""

    def __init__(self, counts):
        counts = [int(c) for c in counts]
        if not counts or min(counts) < 0 or sum(counts) == 0 or sum(counts) >= _QUARTER:
            raise ValueError(f"ArithmeticCoder: counts must be >= 0, sum to between 1 and 2^30, got {counts}.")
        self.cumulative = [0]
        for c in counts:
            self.cumulative.append(self.cumulative[-1] + c)

    def _narrow(self, low: int, high: int, symbol: int) -> tuple[int, int]:
        span, total = high - low + 1, self.cumulative[-1]
        return low + span * self.cumulative[symbol] // total, low + span * self.cumulative[symbol + 1] // total - 1

    def encode(self, symbols) -> list[int]:
        """The code of ``symbols`` as a list of bits."""
        bits: list[int] = []
        low, high, pending = 0, _FULL, 0

        def emit(bit):
            nonlocal pending
            bits.append(bit)
            bits.extend([1 - bit] * pending)
            pending = 0

        for symbol in symbols:
            if self.cumulative[symbol + 1] == self.cumulative[symbol]:
                raise ValueError(f"ArithmeticCoder: symbol {symbol} has count 0 and cannot be coded.")
            low, high = self._narrow(low, high, symbol)
            while True:
                if high < _HALF:
                    emit(0)
                elif low >= _HALF:
                    emit(1)
                    low, high = low - _HALF, high - _HALF
                elif low >= _QUARTER and high < 3 * _QUARTER:
                    pending += 1
                    low, high = low - _QUARTER, high - _QUARTER
                else:
                    break
                low, high = 2 * low, 2 * high + 1
        pending += 1  # two more bits pick a point inside the final interval
        emit(0 if low < _QUARTER else 1)
        return bits

    def decode(self, bits, count: int) -> list[int]:
        """The ``count`` symbols that ``bits`` encode."""
        stream = iter(list(bits) + [0] * _BITS)
        value = 0
        for _ in range(_BITS):
            value = 2 * value + next(stream)
        low, high, total, symbols = 0, _FULL, self.cumulative[-1], []
        for _ in range(count):
            span = high - low + 1
            target = ((value - low + 1) * total - 1) // span
            symbol = bisect.bisect_right(self.cumulative, target) - 1
            symbols.append(symbol)
            low, high = self._narrow(low, high, symbol)
            while True:
                if high < _HALF:
                    pass
                elif low >= _HALF:
                    low, high, value = low - _HALF, high - _HALF, value - _HALF
                elif low >= _QUARTER and high < 3 * _QUARTER:
                    low, high, value = low - _QUARTER, high - _QUARTER, value - _QUARTER
                else:
                    break
                low, high, value = 2 * low, 2 * high + 1, 2 * value + next(stream)
        return symbols


def _elias_gamma_bits(n: int) -> int:
    return 2 * int(math.floor(math.log2(n))) + 1


def message_length(symbols, levels: int) -> dict:
    """Every bit of the message coding ``symbols`` (indices into ``levels`` float32 levels).

    Returns ``{"header": bits, "payload": bits, "total": bits, "entropy": N * H(counts)}``;
    the payload is the real arithmetic code (within 2 bits of the entropy, plus rounding).
    """
    symbols = np.asarray(symbols, np.int64).ravel()
    counts = np.bincount(symbols, minlength=levels)
    if len(counts) != levels:
        raise ValueError(f"message_length: symbols reach {len(counts) - 1}, beyond {levels} levels.")
    n = len(symbols)
    header = _elias_gamma_bits(levels) + _elias_gamma_bits(n) + levels * 32 + levels * math.ceil(math.log2(n + 1))
    payload = len(ArithmeticCoder(counts).encode(symbols.tolist()))
    p = counts[counts > 0] / n
    return {"header": header, "payload": payload, "total": header + payload,
            "entropy": float(-n * (p * np.log2(p)).sum())}
