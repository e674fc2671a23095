"""Gradient-combination solvers: the published update on hard inputs, against exact float64
references computed another way (``solver_references``), for tasks absent from a batch, and
the same numbers from a tf.function, a tf.distribute replica and jax.jit."""

import functools
import json

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import solver_references as ref
from mtlzoo.weighting import solvers

SQRT2 = np.sqrt(2.0)
HAND = np.array([[1.0, 0.0], [-1.0, 1.0]])  # g_1 . g_2 = -1: the two tasks conflict
EPS32 = float(np.finfo(np.float32).eps)


def compiled(solver):
    """``solver`` under one tf.function (retraced per T), as a train step runs it."""
    return _compiled(solver)


@functools.lru_cache(maxsize=None)
def _compiled(solver):
    return tf.function(solver, autograph=False)


def run(solver, grads, *args, present=None, **kwargs):
    """The solver's weights for the float32 Gram matrix of ``grads``, as float64 numpy."""
    gram = tf.constant(ref.gram_of(grads))
    if present is not None:
        kwargs["present"] = tf.constant(np.asarray(present, "float32"))
    weights = compiled(solver)(gram, *args, **kwargs)
    assert weights.dtype == "float32" and tuple(weights.shape) == (len(grads),)
    return ops.convert_to_numpy(weights).astype("float64")


def random_orders(seed, num_tasks):
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(num_tasks) for _ in range(num_tasks)]).astype("int32")


# -- the four defects, before -> after ----------------------------------------------


def test_mgda_reaches_the_min_norm_point_when_norms_differ_by_orders_of_magnitude():
    # Rows scaled by 0.5, 1000 and 5: the old stopping test, in units where the small tasks
    # barely register, stopped at w = [0.848, 0, 0.152] (cosine 0.55 with the answer).
    grads = np.random.default_rng(0).normal(size=(3, 50)) * np.array([[0.5], [1000.0], [5.0]])
    grads = grads.astype(np.float32).astype(np.float64)
    want_weights, want = ref.min_norm_point(grads)
    np.testing.assert_allclose(want_weights, [0.9932, 0.0, 0.0068], atol=1e-4)
    assert np.linalg.norm(want) == pytest.approx(3.2283, abs=1e-4)
    weights = run(solvers.min_norm_weights, grads)
    np.testing.assert_allclose(weights, want_weights, atol=1e-5)
    one_minus_cos, norm = ref.direction_error(weights @ grads, want)
    assert one_minus_cos < 1e-6 and abs(norm) < 1e-5


def test_cagrad_on_collinear_conflicting_gradients_takes_the_monotone_end():
    # F is linear on each side of its kink here, with slope -4 +- 1.6: the minimum is gamma = 1,
    # d = g0 + 0.4 |g0| g_1 / |g_1| = (-0.6, 0), divided by 1 + c^2. The old closed form took
    # the kink (weights 115659 and 38553, d = (-0.863, 0)).
    grads = np.array([[1.0, 0.0], [-3.0, 0.0]])
    weights = run(solvers.cagrad_weights, grads, c=0.4)
    np.testing.assert_allclose(weights, [0.9 / 1.16, 0.5 / 1.16], rtol=1e-6)
    np.testing.assert_allclose(weights @ grads, [-0.6 / 1.16, 0.0], atol=1e-6)
    np.testing.assert_allclose(weights @ grads * 1.16, ref.cagrad_direction(grads, 0.4), atol=1e-6)


def test_imtl_g_balances_the_others_around_a_zero_gradient():
    # The zero gradient of a task without labels used to zero the whole update (w = [0, 0, 1]).
    grads = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    weights = run(solvers.imtl_g_weights, grads)
    np.testing.assert_allclose(weights, [2 / 3, 1 / 3, 0.0], atol=1e-6)
    d = weights @ grads  # projections 2/3 on both unit gradients
    np.testing.assert_allclose([d[0], d[1] / 1.0], [2 / 3, 2 / 3], atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 10.0, 1e-3])
def test_nash_mtl_step_has_the_papers_scale_whatever_the_gradient_scale(scale):
    # The paper and the official code solve G alpha = 1/alpha on the raw Gram matrix, so
    # |d| = sqrt(T); the old normalisation gave |d| = 2.87 at scale 1 and 28.7 at scale 10.
    grads = scale * np.array([[1.0, 0.0], [0.0, 2.0]])
    alpha = run(solvers.nash_mtl_weights, grads)
    np.testing.assert_allclose(alpha, [1 / scale, 1 / (2 * scale)], rtol=1e-5)
    assert np.linalg.norm(alpha @ grads) == pytest.approx(SQRT2, rel=1e-5)
    # The official max_norm clip (default 1) bounds the combined update.
    clipped = ops.convert_to_numpy(solvers.clip_norm(alpha.astype("float32"), ref.gram_of(grads), 1.0))
    assert np.linalg.norm(clipped @ grads) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(clipped / np.linalg.norm(clipped), alpha / np.linalg.norm(alpha), rtol=1e-6)
    unclipped = ops.convert_to_numpy(solvers.clip_norm(alpha.astype("float32"), ref.gram_of(grads), 0.0))
    np.testing.assert_array_equal(unclipped, alpha.astype("float32"))


# -- exact references on hard inputs ---------------------------------------------------------


def conditioning(method, grads):
    """How much float32 rounding the method's answer amplifies (1 where it stays O(eps)).

    Aligned-MTL scales by ``1/sqrt(lambda)`` down to the smallest kept eigenvalue of M, IMTL-G
    inverts the correlation matrix of the gradients and UPGrad's QPs have the curvature of
    ``M / tr M + 1e-4 I``: a float32 eigendecomposition or fixed point resolves eigenvalues
    only to about ``eps lambda_max``.
    """
    gram = grads @ grads.T
    if method == "aligned_mtl":
        values = np.linalg.eigvalsh(gram)
        kept = values[values > values.max() * len(gram) * EPS32]
        return values.max() / kept.min()
    if method == "imtl_g":
        rows = np.unique(grads[np.linalg.norm(grads, axis=1) > 0], axis=0)
        units = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return np.linalg.cond(units @ units.T)
    if method == "upgrad":
        return np.linalg.cond(gram / np.trace(gram) + 1e-4 * np.eye(len(gram)))
    return 1.0


def pcgrad(gram, present=None):
    num_tasks = gram.shape[0]
    return solvers.pcgrad_weights(gram, tf.constant(random_orders(num_tasks, num_tasks)), present=present)


# name: (solver on a Gram matrix, reference direction from the gradients). CAGrad's reference is
# divided by the official rescaling 1 + c^2; where 0 is in its hull (an opposite pair, a zero
# gradient) the optimal directions form a set and both sides take the one nearest g0.
METHODS = {
    "mgda": (solvers.min_norm_weights, lambda g: ref.min_norm_point(g)[1]),
    "pcgrad": (pcgrad, lambda g: ref.pcgrad_direction(g, random_orders(len(g), len(g)))),
    "cagrad": (solvers.cagrad_weights, lambda g: ref.cagrad_direction(g, 0.4) / 1.16),
    "imtl_g": (solvers.imtl_g_weights, ref.imtl_g_direction),
    "aligned_mtl": (solvers.aligned_mtl_weights, ref.aligned_mtl_direction),
    "nash_mtl": (solvers.nash_mtl_weights, lambda g: ref.nash_weights(g) @ g),
    "upgrad": (solvers.upgrad_weights, ref.upgrad_direction),
}
CASES = [(method, kind, size) for method in METHODS for kind in ref.FAMILIES for size in ref.SIZES
         if kind not in ref.NO_UNIQUE_ANSWER.get(method, ())]


def assert_same_direction(got, want, grads, method, label):
    """1 - cos below 1e-5 and the norm within 1e-4 relative, widened only by the float32
    conditioning of the method's answer. Where the answer is the zero vector, |d| / max|g_i|
    below 2 sqrt(max(16, T) eps): |d|^2 = w^T M w is a sum of T^2 float32 products of size
    |g|^2 that cancel, so smaller |d| cannot be told from 0 (about 3e-3 at T <= 16)."""
    scale = np.linalg.norm(grads, axis=1).max()
    if np.linalg.norm(want) <= 1e-4 * scale:
        resolution = 2 * np.sqrt(max(16, len(grads)) * EPS32)
        assert np.linalg.norm(got) <= resolution * scale, f"{label}: |d| = {np.linalg.norm(got):.3g}, expected 0"
        return
    amplified = EPS32 * conditioning(method, grads)
    assert amplified < 1.0, f"{label}: beyond float32 (eps kappa = {amplified:.2g}); no exact answer to test"
    one_minus_cos, norm = ref.direction_error(got, want)
    assert one_minus_cos < max(1e-5, amplified ** 2), f"{label}: 1 - cos = {one_minus_cos:.3g}"
    assert abs(norm) < max(1e-4, amplified), f"{label}: |d| / |d*| - 1 = {norm:.3g} (eps kappa {amplified:.2g})"


@pytest.mark.parametrize("method,kind,size", CASES, ids=[f"{m}-{k}-T{t}" for m, k, t in CASES])
def test_exact_reference(method, kind, size):
    solver, reference = METHODS[method]
    grads = ref.family(kind, size)
    got = run(solver, grads) @ grads
    assert np.all(np.isfinite(got))
    if method == "imtl_g" and EPS32 * conditioning(method, grads) >= 1.0:
        # Forty gradients at cosine 0.9999: their correlation matrix has condition 1e7, so the
        # float32 answer is not the exact vector, but it keeps IMTL-G's defining property.
        projections = (grads / np.linalg.norm(grads, axis=1, keepdims=True)) @ got
        assert np.ptp(projections) <= 1e-4 * projections.mean()
        return
    assert_same_direction(got, reference(grads), grads, method, f"{method} on {kind}, T={size}")


# -- tasks absent from a batch ---------------------------------------------------------------

ABSENT_CASES = [(method, size) for method in METHODS for size in (3, 5, 10)]


@pytest.mark.parametrize("method,size", ABSENT_CASES, ids=[f"{m}-T{t}" for m, t in ABSENT_CASES])
def test_absent_tasks_take_no_part(method, size):
    """With ``present``, a solver answers the sub-problem of the present tasks, whatever the
    absent rows hold, and gives the absent tasks weight 0."""
    solver, reference = METHODS[method]
    grads = ref.family("conflicting", size, seed=1)
    present = np.ones(size, dtype=bool)
    present[[0, size - 1]] = False  # the first and the last task have no labels in this batch
    if method == "pcgrad":
        # PCGrad's orders are those of all T tasks; the present ones keep their relative order.
        orders = random_orders(size, size)
        want = ref.pcgrad_direction(grads * present[:, None], orders)
    else:
        want = reference(grads[present])
    for absent_rows in (np.zeros_like(grads[~present]), grads[~present]):  # zero, or anything
        held = grads.copy()
        held[~present] = absent_rows
        weights = run(solver, held, present=present)
        assert np.all(weights[~present] == 0)
        assert_same_direction(weights @ held, want, grads[present], method, f"{method}, 2 of {size} absent")


@pytest.mark.parametrize("method", METHODS)
def test_one_or_no_present_task(method):
    solver = METHODS[method][0]
    grads = ref.family("random", 3)
    one = run(solver, grads, present=[0, 1, 0])
    assert one[0] == 0 and one[2] == 0 and one[1] > 0  # the present task's own gradient
    none = run(solver, grads, present=[0, 0, 0])
    np.testing.assert_array_equal(none, 0.0)
    two = run(solver, ref.family("random", 2), present=[1, 0])
    assert two[1] == 0 and two[0] > 0


# -- hand-computed cases and defining properties ----------------------------------------------


def test_project_to_simplex():
    def reference(v):  # bisection on the threshold of sum(max(v - theta, 0)) = 1
        lo, hi = v.min() - 1.0, v.max()
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > 1 else (lo, mid)
        return np.maximum(v - lo, 0)

    def project(v):
        return ops.convert_to_numpy(solvers.project_to_simplex(np.asarray(v, "float32")))

    np.testing.assert_allclose(project([0.5, 2.0, -1.0, 0.7]), [0, 1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(project([0.2, 0.3, 0.5]), [0.2, 0.3, 0.5], atol=1e-7)
    rng = np.random.default_rng(0)
    for size in (1, 2, 5, 40):
        v = rng.normal(size=size) * 2
        np.testing.assert_allclose(project(v), reference(v), atol=1e-6)


def test_hand_computed_two_task_case():
    # PCGrad: g_1' = g_1 + 1/2 g_2 = (1/2, 1/2), g_2' = g_2 + g_1 = (0, 1); d = (1/2, 3/2).
    pcgrad_weights = run(solvers.pcgrad_weights, HAND, np.array([[0, 1], [1, 0]], "int32"))
    np.testing.assert_allclose(pcgrad_weights, [2.0, 1.5], atol=1e-6)
    # MGDA: gamma = (M22 - M12) / (M11 + M22 - 2 M12) = 3/5; the min-norm point is (1/5, 2/5).
    mgda = run(solvers.min_norm_weights, HAND)
    np.testing.assert_allclose(mgda, [0.6, 0.4], atol=1e-6)
    # The iterative solver (T=2 has a closed form) reaches the same point when given 3 tasks
    # where the third repeats the second.
    np.testing.assert_allclose(run(solvers.min_norm_weights, HAND[[0, 1, 1]]) @ HAND[[0, 1, 1]], [0.2, 0.4],
                               atol=1e-6)
    # IMTL-G: u_1 = (1, 0), u_2 = (-1, 1)/sqrt2; alpha_2 = sqrt2 - 1 and alpha_1 = 2 - sqrt2;
    # d = (3 - 2 sqrt2, sqrt2 - 1) and d . u_1 = d . u_2 = 3 - 2 sqrt2.
    imtl = run(solvers.imtl_g_weights, HAND)
    np.testing.assert_allclose(imtl, [2 - SQRT2, SQRT2 - 1], atol=1e-6)
    # UPGrad: M / tr M + r I = [[1/3 + r, -1/3], [-1/3, 2/3 + r]]. For task 1 (v >= (1/2, 0)) the
    # first bound is active and v_2 = (1/3)(1/2)/(2/3 + r); for task 2 symmetrically
    # v_1 = (1/3)(1/2)/(1/3 + r).
    r = 1e-4
    want = np.array([0.5, (1 / 6) / (2 / 3 + r)]) + np.array([(1 / 6) / (1 / 3 + r), 0.5])
    np.testing.assert_allclose(run(solvers.upgrad_weights, HAND, reg=r), want, atol=1e-6)
    np.testing.assert_allclose(run(solvers.upgrad_weights, HAND, reg=0.0), [1.0, 0.75], atol=1e-6)


@pytest.mark.parametrize("size", [2, 3, 5])
def test_non_conflicting_gradients_are_left_alone(size):
    grads = np.abs(ref.family("random", size))
    np.testing.assert_array_equal(run(solvers.pcgrad_weights, grads, random_orders(0, size)), 1.0)
    np.testing.assert_allclose(run(solvers.upgrad_weights, grads), 1 / size, atol=1e-7)
    np.testing.assert_allclose(run(solvers.cagrad_weights, grads, c=0.0), 1 / size, atol=1e-6)


@pytest.mark.parametrize("kind", ["random", "rank_deficient"])
def test_aligned_mtl_aligns_the_gradients(kind):
    grads = ref.family(kind, 5)
    gram = grads @ grads.T
    w = run(solvers.aligned_mtl_weights, grads)
    values, vectors = np.linalg.eigh(gram)
    keep = values > values.max() * len(gram) * EPS32
    b = np.sqrt(values[keep].min()) * (vectors[:, keep] / np.sqrt(values[keep])) @ vectors[:, keep].T
    # The aligned gradients B G are orthogonal with squared norm lambda_min on the kept subspace,
    # and d is their sum.
    kept = vectors[:, keep] @ vectors[:, keep].T
    np.testing.assert_allclose(b @ gram @ b, values[keep].min() * kept, atol=1e-8 * np.trace(gram))
    np.testing.assert_allclose(w, b.sum(1), rtol=1e-3, atol=1e-4 * np.abs(b).max())


def test_nash_mtl_solves_the_bargaining_equation_on_forty_tasks():
    grads = ref.family("scaled", 40)
    gram = grads @ grads.T
    alpha = run(solvers.nash_mtl_weights, grads)
    assert np.all(alpha > 0)
    np.testing.assert_allclose(gram @ alpha, 1 / alpha, rtol=1e-3)


# -- stopping on certificates ----------------------------------------------------------------

ITERATIVE = {
    "mgda": (solvers._min_norm_solve, solvers._MGDA_ITERATIONS),
    "cagrad": (solvers._cagrad_solve, solvers._CAGRAD_ITERATIONS),
    "upgrad": (solvers._upgrad_solve, solvers._UPGRAD_ITERATIONS),
    "nash_mtl": (solvers._nash_mtl_solve, solvers._NASH_ITERATIONS),
}


def test_iterative_solvers_stop_on_their_certificate_well_before_the_maximum():
    """On the hard families with a unique answer, each solver stops (certificate, or a float32
    fixed point) far below its iteration maximum, in eager mode and compiled alike; the
    maximum is respected."""
    worst = {name: 0 for name in ITERATIVE}
    for kind in ("random", "conflicting", "nearly_parallel", "dominant", "scaled", "rank_deficient"):
        gram = tf.constant(ref.gram_of(ref.family(kind, 10)))
        for name, (solve, maximum) in ITERATIVE.items():
            if name == "nash_mtl" and kind == "rank_deficient":
                continue
            weights, used = compiled(solve)(gram)
            worst[name] = max(worst[name], int(used))
            assert int(used) < maximum / 2, (name, kind, int(used))
    assert all(used > 0 for used in worst.values()), worst
    gram = tf.constant(ref.gram_of(ref.family("conflicting", 6)))
    for name, (solve, _) in ITERATIVE.items():
        eager_weights, eager_used = solve(gram)
        weights, used = compiled(solve)(gram)
        # Graph and eager round differently, so they may stop a block apart, at the same answer.
        assert abs(int(eager_used) - int(used)) <= 2 * solvers._UNROLL, name
        np.testing.assert_allclose(ops.convert_to_numpy(eager_weights), weights.numpy(), rtol=1e-5, atol=1e-6)
        assert int(solve(gram, iterations=4)[1]) <= 4 + (4 if name == "cagrad" else 0), name


# -- degenerate inputs and execution modes ---------------------------------------------------

SOLVERS = {
    "mgda": solvers.min_norm_weights,
    "pcgrad": lambda gram, present=None: solvers.pcgrad_weights(
        gram, ops.tile(ops.arange(gram.shape[0], dtype="int32")[None, :], (gram.shape[0], 1)), present),
    "cagrad": solvers.cagrad_weights,
    "imtl_g": solvers.imtl_g_weights,
    "aligned_mtl": solvers.aligned_mtl_weights,
    "nash_mtl": solvers.nash_mtl_weights,
    "upgrad": solvers.upgrad_weights,
}
EDGE_CASES = {
    "one_task": np.array([[1.0, 2.0, 0.5]]),
    "one_zero_task": np.zeros((1, 3)),
    "all_zero": np.zeros((3, 3)),
    "same_direction": np.array([[1.0, 2.0], [2.0, 4.0]]),
    "opposite": np.array([[1.0, 2.0], [-2.0, -4.0]]),
    "collinear_three": np.array([[1.0, 1.0], [3.0, 3.0], [-1.0, -1.0]]),
    "tiny_scale": 1e-12 * ref.family("random", 3),
    "huge_scale": 1e12 * ref.family("random", 3),
}


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("case", EDGE_CASES)
def test_degenerate_gradients_give_finite_weights(name, case):
    assert np.all(np.isfinite(run(SOLVERS[name], EDGE_CASES[case])))


def test_scale_free_answers():
    """Every method but Nash-MTL gives the same weights for gradients at 1e-12 and 1e12 as at 1;
    Nash-MTL's weights scale as one over the gradients, so that |d| stays sqrt(T)."""
    grads = ref.family("conflicting", 4)
    for name, solver in SOLVERS.items():
        base = run(solver, grads)
        for factor in (1e-12, 1e12):
            scaled = run(solver, factor * grads)
            expected = base / factor if name == "nash_mtl" else base
            np.testing.assert_allclose(scaled, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max(),
                                       err_msg=f"{name} at {factor}")


def test_bad_present_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"present must have shape \(3,\) like the tasks, got \(2,\)"):
        solvers.min_norm_weights(ref.gram_of(ref.family("random", 3)), present=np.ones(2))


GRAPH_GRADS = ref.family("conflicting", 4, seed=1)
GRAPH_PRESENT = np.array([1.0, 1.0, 0.0, 1.0], dtype="float32")


def eager_results():
    gram = ops.convert_to_tensor(ref.gram_of(GRAPH_GRADS))
    return {name: ops.convert_to_numpy(solver(gram, present=GRAPH_PRESENT)) for name, solver in SOLVERS.items()}


@pytest.mark.slow  # traces every solver twice (18 s); .ci/run runs the slow set
def test_tf_function_and_replica_context_match_eager():
    eager = eager_results()
    gram = tf.constant(ref.gram_of(GRAPH_GRADS))
    present = tf.constant(GRAPH_PRESENT)
    every = tf.function(lambda g, p: {name: solver(g, present=p) for name, solver in SOLVERS.items()})
    graph = every(gram, present)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    replicated = tf.function(lambda g, p: strategy.run(
        lambda x, q: {n: s(x, present=q) for n, s in SOLVERS.items()}, args=(g, p)))
    per_replica = replicated(gram, present)
    for name in SOLVERS:
        np.testing.assert_allclose(graph[name].numpy(), eager[name], rtol=1e-5, atol=1e-6, err_msg=name)
        for value in strategy.experimental_local_results(per_replica[name]):
            np.testing.assert_allclose(value.numpy(), eager[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_jax_jit_matches_tensorflow(run_python):
    eager = eager_results()
    proc = run_python(f"""
        import json
        import jax
        import numpy as np
        from keras import ops
        from mtlzoo.weighting import solvers
        grads = np.array({GRAPH_GRADS.tolist()!r})
        gram = jax.numpy.asarray((grads @ grads.T).astype("float32"))
        present = jax.numpy.asarray({GRAPH_PRESENT.tolist()!r}, dtype="float32")
        orders = jax.numpy.tile(jax.numpy.arange(4, dtype="int32")[None, :], (4, 1))
        jitted = {{
            "mgda": jax.jit(lambda g, p: solvers.min_norm_weights(g, p)),
            "pcgrad": jax.jit(lambda g, p: solvers.pcgrad_weights(g, orders, p)),
            "cagrad": jax.jit(lambda g, p: solvers.cagrad_weights(g, present=p)),
            "imtl_g": jax.jit(lambda g, p: solvers.imtl_g_weights(g, p)),
            "aligned_mtl": jax.jit(lambda g, p: solvers.aligned_mtl_weights(g, p)),
            "nash_mtl": jax.jit(lambda g, p: solvers.nash_mtl_weights(g, p)),
            "upgrad": jax.jit(lambda g, p: solvers.upgrad_weights(g, present=p)),
        }}
        out = {{n: np.asarray(f(gram, present)).tolist() for n, f in jitted.items()}}
        print("RESULT" + json.dumps(out))
    """, backend="jax", env={"JAX_PLATFORMS": "cpu"})
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    jax_results = json.loads(line[len("RESULT"):])
    assert set(jax_results) == set(SOLVERS)
    for name, value in jax_results.items():
        np.testing.assert_allclose(value, eager[name], rtol=1e-4, atol=1e-5, err_msg=name)
