"""The Occam bound: a worked example, an independent root finder, and the edge cases."""

import math

import pytest
from scipy.optimize import brentq

from mtlzoo.subspace.bounds import (inverse_kl, kl_bernoulli, occam_bound, prefix_code_kl, search_bits,
                                    single_task_bounds)


def test_a_worked_example():
    # C = 10000 bits, n = 10000, train error 0.1, delta = 0.05:
    # KL = (10000 + 2 log2 10000) ln 2 = 6949.89 nats; ln(2 sqrt(n) / delta) = ln 4000 = 8.294;
    # budget = 0.69582 nats per example; kl(0.1 || p) = 0.69582 at p = 0.66336.
    assert prefix_code_kl(10000) == pytest.approx(6949.89, abs=0.01)
    assert occam_bound(0.1, 10000, 10000) == pytest.approx(0.663356, abs=1e-6)


@pytest.mark.parametrize("q, budget", [(0.0, 0.01), (0.05, 0.2), (0.3, 1e-4), (0.9, 0.05), (0.5, 3.0)])
def test_inverse_kl_agrees_with_an_independent_root_finder(q, budget):
    p = inverse_kl(q, budget)
    if kl_bernoulli(q, 1 - 1e-15) <= budget:
        assert p == 1.0
    else:
        assert p == pytest.approx(brentq(lambda x: kl_bernoulli(q, x) - budget, q, 1 - 1e-15), abs=1e-9)
    assert kl_bernoulli(q, p) <= budget + 1e-9


def test_edge_cases():
    assert kl_bernoulli(0.0, 0.0) == 0.0 and kl_bernoulli(0.2, 0.0) == math.inf
    assert inverse_kl(0.2, 0.0) == pytest.approx(0.2)
    assert occam_bound(0.0, 100, 10**6) < 1e-3  # tiny code, many examples, no training error
    assert occam_bound(0.0, 10**7, 100) == pytest.approx(1.0, abs=1e-9)  # a code longer than the data says nothing
    assert occam_bound(1.0, 10, 10) == 1.0
    with pytest.raises(ValueError, match="0 < delta < 1"):
        occam_bound(0.1, 100, 100, delta=1.5)
    with pytest.raises(ValueError, match="at least 1 bit"):
        prefix_code_kl(0)


def test_a_union_of_single_task_bounds_pays_for_confidence_and_smaller_samples():
    multi = occam_bound(0.1, 3000, 10 * 1000)
    singles = single_task_bounds([0.1] * 10, [3000 / 10] * 10, [1000] * 10)
    # The same total bits spread over ten samples a tenth the size, at delta / 10 each, bound worse.
    assert min(singles) > multi
    assert singles[0] == pytest.approx(occam_bound(0.1, 300, 1000, delta=0.005))


def test_search_bits_name_one_of_the_configurations_tried():
    # ceil(log2 N): 1 configuration needs no name, 2 need one bit, 17 need five, 64 exactly six.
    assert [search_bits(n) for n in (1, 2, 3, 16, 17, 64)] == [0, 1, 2, 4, 5, 6]
    with pytest.raises(ValueError, match="search_bits: searched must be a positive integer, got 0"):
        search_bits(0)
