"""Random expansions: the matrix-free product is the dense one, P comes back from its seed,
Kronecker columns are orthonormal, and memory stays far below D x d."""

import keras
import numpy as np
import pytest

from mtlzoo.subspace import KINDS, Expansion


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size, dim", [(50, 7), (37, 37), (1000, 30), (2, 1)])
def test_the_matrix_free_product_is_the_dense_one(kind, size, dim):
    expansion = Expansion(kind, size, dim, seed=3)
    p = expansion.matrix()
    assert p.shape == (size, dim)
    w = np.random.default_rng(0).normal(size=(3, dim)).astype("float32")  # three vectors, one per row
    np.testing.assert_allclose(keras.ops.convert_to_numpy(expansion.apply(w)), w @ p.T, atol=2e-6)
    vector = keras.ops.convert_to_numpy(expansion.apply(w[0]))
    assert vector.shape == (size,)
    np.testing.assert_allclose(vector, p @ w[0], atol=2e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size, dim", [(50, 7), (1000, 30)])
def test_the_gradient_is_p_transposed_times_the_upstream(kind, size, dim):
    import tensorflow as tf

    expansion = Expansion(kind, size, dim, seed=2)
    w = tf.Variable(np.random.default_rng(0).normal(size=(3, dim)).astype("float32"))
    upstream = np.random.default_rng(1).normal(size=(3, size)).astype("float32")
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(expansion.apply(w) * upstream)
    # Rows cut from the Kronecker product, and the permutation's inverse, must route every
    # weight's gradient back to its own row and no other.
    np.testing.assert_allclose(tape.gradient(out, w).numpy(), upstream @ expansion.matrix(), atol=2e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_p_is_regenerated_from_its_seed_and_has_unit_columns(kind):
    a, b, other = Expansion(kind, 400, 20, seed=5), Expansion(kind, 400, 20, seed=5), Expansion(kind, 400, 20, seed=6)
    np.testing.assert_array_equal(a.matrix(), b.matrix())
    assert not np.allclose(a.matrix(), other.matrix())
    norms = np.linalg.norm(a.matrix(), axis=0)
    # Dense columns are normalised exactly; sparse ones in expectation (80 nonzeros each, on average).
    np.testing.assert_allclose(norms, 1.0, atol=1e-12 if kind == "dense" else 0.35)
    assert abs(norms.mean() - 1.0) < 0.1
    assert Expansion(**a.get_config()).matrix().tolist() == a.matrix().tolist()


def test_kronecker_columns_are_orthonormal_when_the_factors_tile_d_exactly():
    p = Expansion("kronecker", 36, 9, seed=0).matrix()  # 6 x 6 rows, 3 x 3 columns: nothing cut
    np.testing.assert_allclose(p.T @ p, np.eye(9), atol=1e-12)


def test_millions_of_weights_need_no_dense_matrix():
    size, dim = 3_000_000, 1000
    kron, sparse = Expansion("kronecker", size, dim), Expansion("sparse", size, dim, nonzeros=2)
    assert kron.stored_values() < 1.1 * size  # the row permutation, plus two small factors
    assert sparse.stored_values() == 2 * 2 * size
    w = np.zeros((2, dim), "float32")
    w[1, 17] = 1.0
    rows = keras.ops.convert_to_numpy(kron.apply(w))
    assert rows.shape == (2, size) and not rows[0].any()
    assert np.linalg.norm(rows[1]) == pytest.approx(1.0, abs=0.01)


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match=r"expansion must be one of \['kronecker', 'sparse', 'dense'\], got 'fastfood'"):
        Expansion("fastfood", 10, 2)
    with pytest.raises(ValueError, match="subspace dimension d=11 exceeds the number of weights D=10"):
        Expansion("dense", 10, 11)
    with pytest.raises(ValueError, match=r"dim \(d\) must be a positive integer, got 0"):
        Expansion("sparse", 10, 0)
