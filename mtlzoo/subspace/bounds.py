"""PAC-Bayes generalisation bounds from a model's compressed size (Occam bounds).

A hypothesis that a prefix code describes in C bits has prior mass at least
2^-(C + 2 log2 C) under the universal prior over prefix-code lengths (Lotfi et al., NeurIPS
2022), so a point-mass posterior on it has

    KL = (C + 2 log2 C) ln 2   nats.

With n training examples and probability at least 1 - delta over the sample, the kl form of the
PAC-Bayes bound (Langford & Seeger 2001; Maurer 2004) gives

    kl(err_train || err_test) <= (KL + ln(2 sqrt(n) / delta)) / n,

so err_test <= kl^-1(err_train, (KL + ln(2 sqrt(n) / delta)) / n), the largest p >= err_train
with kl(err_train || p) within that budget. For a multi-task model, err is the average error
over the T tasks and n the total number of training examples over all tasks (Zakerinia,
Ghobadi & Lampert, 2025); the single-task alternative bounds each task on its own n_t
examples at confidence delta / T (a union bound) and averages.
"""

from __future__ import annotations

import math
from typing import Sequence

from mtlzoo.validation import positive_int


def kl_bernoulli(q: float, p: float) -> float:
    """kl(q || p) between Bernoulli(q) and Bernoulli(p), in nats (0 log 0 = 0)."""
    if not (0.0 <= q <= 1.0 and 0.0 <= p <= 1.0):
        raise ValueError(f"kl_bernoulli: q and p must lie in [0, 1], got q={q!r}, p={p!r}.")
    total = 0.0
    for a, b in ((q, p), (1.0 - q, 1.0 - p)):
        if a > 0.0:
            if b <= 0.0:
                return math.inf
            total += a * math.log(a / b)
    return total


def inverse_kl(q: float, budget: float) -> float:
    """The largest p in [q, 1] with kl(q || p) <= budget (bisection, to 1e-12)."""
    if budget < 0:
        raise ValueError(f"inverse_kl: budget must be >= 0, got {budget!r}.")
    low, high = q, 1.0
    if kl_bernoulli(q, high) <= budget:
        return 1.0
    while high - low > 1e-12:
        middle = (low + high) / 2
        if kl_bernoulli(q, middle) <= budget:
            low = middle
        else:
            high = middle
    return low


def prefix_code_kl(bits: float) -> float:
    """KL in nats of a point mass on a hypothesis coded in ``bits``: (C + 2 log2 C) ln 2."""
    if bits < 1:
        raise ValueError(f"prefix_code_kl: a code has at least 1 bit, got {bits!r}.")
    return (bits + 2 * math.log2(bits)) * math.log(2)


def search_bits(searched: int) -> int:
    """Bits naming one of ``searched`` configurations tried on the same training data: added to the
    message, they make the bound a union bound over all of them, ceil(log2(searched))."""
    return math.ceil(math.log2(positive_int("search_bits", "searched", searched)))


def occam_bound(train_error: float, bits: float, n: int, delta: float = 0.05) -> float:
    """Upper bound on the test error that holds with probability 1 - ``delta`` (module docstring)."""
    if n < 1 or not 0 < delta < 1:
        raise ValueError(f"occam_bound: need n >= 1 and 0 < delta < 1, got n={n!r}, delta={delta!r}.")
    budget = (prefix_code_kl(bits) + math.log(2 * math.sqrt(n) / delta)) / n
    return inverse_kl(train_error, budget)


def single_task_bounds(train_errors: Sequence[float], bits: Sequence[float], ns: Sequence[int],
                       delta: float = 0.05) -> list[float]:
    """Each task's own bound, at confidence ``delta / T`` so that all hold together."""
    tasks = len(train_errors)
    return [occam_bound(e, c, n, delta / tasks) for e, c, n in zip(train_errors, bits, ns, strict=True)]
