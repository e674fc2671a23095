"""The message length is a real arithmetic code's (it decodes back), within 2 bits of the entropy,
and the codebook quantises well on skewed, degenerate and single-symbol inputs."""

import math

import numpy as np
import pytest

from mtlzoo.subspace.compression import ArithmeticCoder, kmeans_codebook, message_length, nearest


@pytest.mark.parametrize("levels, n, concentration", [(2, 1, 1.0), (4, 1000, 0.5), (16, 20000, 0.3), (8, 3000, 5.0)])
def test_the_code_decodes_back_and_is_within_two_bits_of_the_entropy(levels, n, concentration):
    rng = np.random.default_rng(levels)
    symbols = rng.choice(levels, size=n, p=rng.dirichlet(np.full(levels, concentration)))
    counts = np.bincount(symbols, minlength=levels)
    coder = ArithmeticCoder(counts)
    bits = coder.encode(symbols.tolist())
    assert set(bits) <= {0, 1}
    assert coder.decode(bits, n) == symbols.tolist()
    length = message_length(symbols, levels)
    p = counts[counts > 0] / n
    entropy = -n * float((p * np.log2(p)).sum())
    assert length["entropy"] == pytest.approx(entropy)
    assert entropy - 1e-6 <= length["payload"] <= entropy + 2 + 1e-3 * n / 1000
    # Header: gamma codes of L and N, the float32 levels, and each count in ceil(log2(N + 1)) bits.
    gamma = lambda k: 2 * math.floor(math.log2(k)) + 1  # noqa: E731
    assert length["header"] == gamma(levels) + gamma(n) + levels * (32 + math.ceil(math.log2(n + 1)))
    assert length["total"] == length["header"] + length["payload"]


def test_one_symbol_alone_and_one_rare_symbol_cost_almost_nothing():
    assert message_length(np.zeros(5000, int), 1)["payload"] <= 2
    skewed = np.zeros(10000, int)
    skewed[1234] = 1
    coder = ArithmeticCoder(np.bincount(skewed))
    assert coder.decode(coder.encode(skewed.tolist()), 10000) == skewed.tolist()
    assert message_length(skewed, 2)["payload"] <= 16  # entropy 14.7 bits


def test_bad_symbols_and_counts_are_refused():
    with pytest.raises(ValueError, match="symbols reach 5, beyond 4 levels"):
        message_length(np.array([0, 5]), 4)
    with pytest.raises(ValueError, match="symbol 1 has count 0"):
        ArithmeticCoder([3, 0]).encode([0, 1])
    with pytest.raises(ValueError, match="counts must be >= 0"):
        ArithmeticCoder([0, 0])


def test_the_codebook_fits_the_values_and_handles_degenerate_ones():
    values = np.random.default_rng(0).normal(size=4000)
    codebook = kmeans_codebook(values, 8)
    assert np.all(np.diff(codebook) > 0)
    error = np.abs(values - codebook[nearest(values, codebook)]).mean()
    uniform = np.linspace(values.min(), values.max(), 8)
    assert error < 0.8 * np.abs(values - uniform[nearest(values, uniform)]).mean()  # beats an even grid
    constant = kmeans_codebook(np.full(100, 0.25), 4)
    np.testing.assert_allclose(constant, 0.25)  # every level on the one value
    wide = kmeans_codebook(np.array([1e-8, 1e6]), 2)  # badly scaled: both values exactly
    np.testing.assert_allclose(wide, [1e-8, 1e6], rtol=1e-6)
