"""Survival outcomes: the Cox partial-likelihood loss, Harrell's C-index, and its bootstrap interval.

A survival target is ``(time, event)`` per example, shape ``(N, 2)``: the follow-up time (> 0)
and 1 where the event was observed at that time, 0 where the example was censored then. The
model's output is one risk score per example (a log hazard ratio; higher means earlier events).

**Loss.** The negative Cox partial log-likelihood of the batch, divided by its number of
events. With risk scores ``r``, sample weights ``w`` (0 removes an example from the risk sets
too), and for each distinct event time ``tau`` the tied events ``D``, their count ``d`` and the
risk set ``R = {j : t_j >= tau}``:

    Efron:    -log L = sum_tau [ sum_{l=0}^{d-1} log( S_R - (l/d) S_D ) - sum_{i in D} r_i ]
    Breslow:  -log L = sum_tau [ d log S_R - sum_{i in D} r_i ]

where ``S_A = sum_{j in A} w_j exp(r_j)``. A batch without events has loss 0 (no information,
no gradient). The risk sets are the batch, so the loss estimates the full-data partial
likelihood better with larger batches; 64 or more examples per replica are a sensible floor.
Under a ``tf.distribute`` strategy (``mirrored``, ``multi_worker``) every replica gathers the
whole global batch, so the risk sets and the gradient are those of one-device training on that
batch (tested); the C-index metric gathers likewise.

**C-index.** Harrell's concordance: a pair ``(i, j)`` is comparable when ``i`` had an event
and ``t_i < t_j``, or ``t_i == t_j`` and ``j`` was censored; it is concordant when
``r_i > r_j`` and counts one half when ``r_i == r_j`` (the convention of
``sksurv.metrics.concordance_index_censored`` and ``lifelines.utils.concordance_index``).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops

TIES = ("efron", "breslow")


def _split_target(y_true):
    shape = tuple(getattr(y_true, "shape", np.shape(y_true)))
    if len(shape) != 2 or shape[-1] not in (2, None):
        raise ValueError(f"A survival target is (examples, 2) = (time, event) per example; got shape {shape}.")
    y_true = ops.cast(y_true, "float32")
    return y_true[:, 0], y_true[:, 1]


def cox_negative_log_likelihood(time, event, risk, weight=None, ties: str = "efron"):
    """The batch's negative Cox partial log-likelihood divided by its (weighted) number of
    events, as a float32 scalar (module docstring: the formula). ``weight`` 0 drops an example."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {list(TIES)}, got {ties!r}.")
    time = ops.cast(ops.reshape(time, (-1,)), "float32")
    event = ops.cast(ops.reshape(event, (-1,)), "float32")
    risk = ops.cast(ops.reshape(risk, (-1,)), "float32")
    weight = ops.ones_like(risk) if weight is None else ops.cast(ops.reshape(weight, (-1,)), "float32")
    event = event * ops.cast(weight > 0, "float32")
    # Shift by the largest risk so exp never overflows; the shift cancels in the log-sum.
    shift = ops.stop_gradient(ops.max(ops.where(weight > 0, risk, ops.min(risk))))
    scaled = weight * ops.exp(risk - shift)
    at_or_after = ops.cast(time[None, :] >= time[:, None], "float32")  # [i, j]: j is in i's risk set
    risk_sum = ops.sum(at_or_after * scaled[None, :], axis=1)
    if ties == "efron":
        tied = ops.cast(time[None, :] == time[:, None], "float32") * event[None, :]  # j ties with i, j an event
        tied_sum = ops.sum(tied * scaled[None, :], axis=1)
        tied_count = ops.sum(tied * weight[None, :], axis=1)
        # l: the weight of the tied events listed before i, so the d tied events take l = 0..d-1.
        earlier = ops.cast(ops.arange(ops.shape(risk)[0])[None, :] < ops.arange(ops.shape(risk)[0])[:, None],
                           "float32")
        rank = ops.sum(tied * earlier * weight[None, :], axis=1)
        risk_sum = risk_sum - ops.divide_no_nan(rank, tied_count) * tied_sum
    terms = event * weight * (ops.log(ops.maximum(risk_sum, 1e-30)) + shift - risk)
    return ops.divide_no_nan(ops.sum(terms), ops.sum(event * weight))


@keras.saving.register_keras_serializable(package="mtlzoo")
class CoxPartialLikelihood(keras.losses.Loss):
    """Negative Cox partial log-likelihood over the batch, per event (ties: Efron or Breslow).

    ``y_true`` is ``(N, 2)``: time and event; ``y_pred`` the ``(N, 1)`` risk score. Sample
    weight 0 marks a missing label: that example leaves the risk sets as well as the sum.
    """

    def __init__(self, ties: str = "efron", name: str = "cox_partial_likelihood", **kwargs):
        if ties not in TIES:
            raise ValueError(f"CoxPartialLikelihood: ties must be one of {list(TIES)}, got {ties!r}.")
        kwargs.pop("reduction", None)
        super().__init__(name=name, **kwargs)
        self.ties = ties

    def __call__(self, y_true, y_pred, sample_weight=None):
        # The risk sets need the weights, which Loss.__call__ would apply only after call(), and
        # the whole global batch: every replica gathers it and takes its share of the loss.
        from mtlzoo.training.weighted_step import gather_over_replicas, share_for_replicas

        time, event = _split_target(y_true)
        risk = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
        weight = ops.ones_like(risk) if sample_weight is None else ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        time, event, risk, weight = (gather_over_replicas(v) for v in (time, event, risk, weight))
        return share_for_replicas(cox_negative_log_likelihood(time, event, risk, weight, self.ties))

    def call(self, y_true, y_pred):
        time, event = _split_target(y_true)
        return cox_negative_log_likelihood(time, event, y_pred, None, self.ties)

    def get_config(self):
        return {"name": self.name, "ties": self.ties}


# ---------------------------------------------------------------------------------------------
# Harrell's C-index


def _widest_float() -> str:
    """float64 where the backend computes in it (JAX only with x64 enabled), else float32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX warns when it narrows float64
        return keras.backend.standardize_dtype(ops.zeros((), "float64").dtype)


def _pair_counts(time, event, risk, weight):
    """(concordant, comparable) pair counts between two blocks: rows i, columns j."""
    (ti, tj), (ei, ej), (ri, rj), (wi, wj) = time, event, risk, weight
    comparable = (ei[:, None] > 0) & ((ti[:, None] < tj[None, :]) | ((ti[:, None] == tj[None, :]) & (ej[None, :] <= 0)))
    comparable = ops.cast(comparable & (wi[:, None] > 0) & (wj[None, :] > 0), "float32")
    score = ops.where(ri[:, None] > rj[None, :], 1.0, ops.where(ri[:, None] == rj[None, :], 0.5, 0.0))
    return ops.sum(comparable * score), ops.sum(comparable)


@keras.saving.register_keras_serializable(package="mtlzoo")
class ConcordanceIndex(keras.metrics.Metric):
    """Harrell's C-index over every example seen since the last reset (not a mean of batches).

    It keeps each example's time, event and risk (up to ``capacity`` examples; beyond that the
    result is NaN rather than silently wrong) and running pair counts: each batch is paired
    with itself and, ``block`` stored examples at a time, with every example before it. So an
    update costs O(batch x seen) and ``result`` O(1), which matters because Keras asks for the
    result after every training step. Totals are float64 (float32 on JAX without x64); sample
    weight 0 leaves an example out.
    """

    def __init__(self, name: str = "c_index", capacity: int = 65536, block: int = 512, dtype=None):
        super().__init__(name=name, dtype=dtype)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"ConcordanceIndex: capacity must be a positive integer, got {capacity!r}.")
        self.block = int(block)
        self._wide = _widest_float()
        self.capacity = -(-int(capacity) // self.block) * self.block
        # Every replica keeps the global batch (see update_state), so the first replica's
        # copies answer for all.
        state = {"aggregation": "only_first_replica", "initializer": "zeros"}
        self._columns = [self.add_variable(shape=(self.capacity,), name=n, **state)
                         for n in ("time", "event", "risk", "weight")]
        self.totals = self.add_variable(shape=(2,), dtype=self._wide, name="concordant_comparable", **state)
        self.count = self.add_variable(shape=(), dtype="int32", name="count", **state)
        self.overflow = self.add_variable(shape=(), dtype="int32", name="overflow", **state)

    def update_state(self, y_true, y_pred, sample_weight=None):
        from mtlzoo.training.weighted_step import gather_over_replicas

        time, event = _split_target(y_true)
        risk = ops.cast(ops.reshape(y_pred, (-1,)), "float32")
        weight = ops.ones_like(risk) if sample_weight is None else ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        new = [gather_over_replicas(v) for v in (time, event, risk, weight)]
        n = ops.shape(new[2])[0]
        count = ops.convert_to_tensor(self.count)  # a tensor, not the variable: JAX traces it
        columns = [ops.convert_to_tensor(v) for v in self._columns]
        b = self.block

        def pair_with_block(j, totals):
            # Stored slots past ``count`` hold weight 0 (zeros since the reset), so they pair with nothing.
            old = [ops.slice(v, [j * b], [b]) for v in columns]
            # Both orders: the new example may be the earlier event of the pair, or the old one.
            counts = ops.stack(_pair_counts(*zip(new, old))) + ops.stack(_pair_counts(*zip(old, new)))
            # Block counts are exact in float32; the running totals need more digits.
            return totals + ops.cast(counts, self._wide)

        within = ops.cast(ops.stack(_pair_counts(*zip(new, new))), self._wide)
        added = ops.fori_loop(0, (count + b - 1) // b, pair_with_block, within)
        fits = count + n <= self.capacity
        start = ops.where(fits, count, 0)
        for variable, current, values in zip(self._columns, columns, new):
            variable.assign(ops.where(fits, ops.slice_update(current, [start], values), current))
        self.totals.assign(ops.convert_to_tensor(self.totals) + ops.where(fits, added, ops.zeros_like(added)))
        self.overflow.assign(ops.maximum(ops.convert_to_tensor(self.overflow), 1 - ops.cast(fits, "int32")))
        self.count.assign(ops.minimum(count + n, self.capacity))

    def result(self):
        concordant, comparable = ops.unstack(ops.convert_to_tensor(self.totals))
        value = ops.where(comparable > 0, concordant / ops.maximum(comparable, 1.0), float("nan"))
        return ops.where(ops.convert_to_tensor(self.overflow) > 0, float("nan"), value)

    def reset_state(self):
        for variable in (*self._columns, self.totals, self.count, self.overflow):
            variable.assign(ops.zeros(variable.shape, variable.dtype))

    def get_config(self):
        return {"name": self.name, "capacity": self.capacity, "block": self.block, "dtype": self.dtype}


def _pair_blocks(time, event, risk, rows: int = 1024):
    """Yield ``(row slice, concordance score, comparable)`` blocks of the n x n pair matrices."""
    time, event, risk = (np.asarray(a, dtype="float64").reshape(-1) for a in (time, event, risk))
    if not (time.shape == event.shape == risk.shape):
        raise ValueError(f"time, event and risk must have one value per example; got {time.shape}, "
                         f"{event.shape}, {risk.shape}.")
    for start in range(0, len(time), rows):
        i = slice(start, start + rows)
        comparable = (event[i, None] > 0) & ((time[i, None] < time[None, :])
                                             | ((time[i, None] == time[None, :]) & (event[None, :] <= 0)))
        score = np.where(risk[i, None] > risk[None, :], 1.0, np.where(risk[i, None] == risk[None, :], 0.5, 0.0))
        yield i, score * comparable, comparable.astype("float64")


def concordance_index(time, event, risk) -> float:
    """Harrell's C-index of ``risk`` (higher: earlier events) in NumPy float64; NaN without
    comparable pairs."""
    concordant = comparable = 0.0
    for _, score, pairs in _pair_blocks(time, event, risk):
        concordant, comparable = concordant + score.sum(), comparable + pairs.sum()
    return float(concordant / comparable) if comparable else float("nan")


def _bootstrap_values(time, event, risk, counts):
    """The C-index of each resample, given its (resamples, n) example counts (NaN: no pairs)."""
    concordant, pairs = np.zeros(len(counts)), np.zeros(len(counts))
    for rows, score, comparable in _pair_blocks(time, event, risk):
        concordant += np.einsum("ri,ri->r", counts[:, rows], counts @ score.T)
        pairs += np.einsum("ri,ri->r", counts[:, rows], counts @ comparable.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, concordant / pairs, np.nan)


def concordance_interval(time, event, risk, *, resamples: int = 1000, confidence: float = 0.95,
                         seed: int = 0) -> tuple[float, float, float]:
    """``(C-index, low, high)``: the C-index and its percentile bootstrap interval over examples.

    A resample's C-index is ``c' A c / c' B c``, with ``c`` its count of each example and
    ``A``, ``B`` the concordant and comparable pair matrices, so the pairs are compared once
    for all resamples.
    """
    n = len(np.reshape(time, -1))
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]).astype("float64")
    values = _bootstrap_values(time, event, risk, counts)
    values = values[np.isfinite(values)]
    estimate = concordance_index(time, event, risk)
    if not len(values):
        return estimate, float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return estimate, float(low), float(high)
