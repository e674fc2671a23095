"""Gradient-combination solvers: hand-computed cases, each method's defining property, edge
cases, and the same numbers from a tf.function, a tf.distribute replica and jax.jit."""

import json

import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from scipy.optimize import minimize

from mtlzoo.weighting import solvers

P = 8
SQRT2 = np.sqrt(2.0)
HAND = np.array([[1.0, 0.0], [-1.0, 1.0]])  # g_1 . g_2 = -1: the two tasks conflict


def gradients(seed, num_tasks, kind="random"):
    """Task gradients (T, P) in float64: Gaussian; 'conflict' makes task 1 oppose task 0;
    'scaled' gives the tasks norms over two orders of magnitude; 'aligned' has no conflict."""
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(num_tasks, P))
    if kind == "conflict":
        grads[1] = -0.8 * grads[0] + 0.5 * grads[1]
    elif kind == "scaled":
        grads *= 10.0 ** rng.uniform(-1.0, 1.0, size=(num_tasks, 1))
    elif kind == "aligned":
        grads = np.abs(grads)
    return grads


CASES = [(seed, t, kind) for t in (2, 3, 5) for seed, kind in enumerate(("random", "conflict", "scaled"))]
CASE_IDS = [f"T{t}-{kind}" for _, t, kind in CASES]


def run(solver, grads, *args, **kwargs):
    """The solver's weights for the Gram matrix of ``grads``, as float64 numpy."""
    gram = ops.convert_to_tensor((grads @ grads.T).astype("float32"))
    weights = solver(gram, *args, **kwargs)
    assert weights.dtype == "float32" and tuple(weights.shape) == (grads.shape[0],)
    return ops.convert_to_numpy(weights).astype("float64")


def random_orders(seed, num_tasks):
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(num_tasks) for _ in range(num_tasks)]).astype("int32")


def pcgrad_reference(grads, orders):
    """PCGrad on the vectors themselves (float64), and for each task the other tasks met from its
    last projection on."""
    projected, settled = [], []
    for i, order in enumerate(orders):
        g = grads[i].copy()
        last = 0
        for position, j in enumerate(order):
            if j != i and g @ grads[j] < 0:
                g -= (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
                last = position
        projected.append(g)
        settled.append([j for j in order[last:] if j != i])
    return np.array(projected), settled


def aligned_matrix(gram):
    """Aligned-MTL's B in float64, straight from the paper, and lambda_min."""
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    keep = eigenvalues > eigenvalues.max() * len(gram) * np.finfo(np.float32).eps
    smallest = eigenvalues[keep].min()
    v = eigenvectors[:, keep]
    return np.sqrt(smallest) * (v / np.sqrt(eigenvalues[keep])) @ v.T, smallest, keep.sum()


# -- hand-computed ------------------------------------------------------------------------


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
    pcgrad = run(solvers.pcgrad_weights, HAND, np.array([[0, 1], [1, 0]], "int32"))
    np.testing.assert_allclose(pcgrad, [2.0, 1.5], atol=1e-6)
    np.testing.assert_allclose(pcgrad @ HAND, [0.5, 1.5], atol=1e-6)
    # MGDA: gamma = (M22 - M12) / (M11 + M22 - 2 M12) = 3/5; the min-norm point is (1/5, 2/5).
    mgda = run(solvers.min_norm_weights, HAND)
    np.testing.assert_allclose(mgda, [0.6, 0.4], atol=1e-6)
    np.testing.assert_allclose(mgda @ HAND, [0.2, 0.4], atol=1e-6)
    # The iterative solver (T=2 has a closed form) reaches the same point when given 3 tasks
    # where the third repeats the second.
    np.testing.assert_allclose(run(solvers.min_norm_weights, HAND[[0, 1, 1]]) @ HAND[[0, 1, 1]], [0.2, 0.4],
                               atol=1e-5)
    # IMTL-G: u_1 = (1, 0), u_2 = (-1, 1)/sqrt2; g_1 U^T = 1 + 1/sqrt2, D U^T = 2 + 3/sqrt2, so
    # alpha_2 = (sqrt2 + 1)/(sqrt2 + 1)^2 = sqrt2 - 1 and alpha_1 = 2 - sqrt2;
    # d = (3 - 2 sqrt2, sqrt2 - 1) and d . u_1 = d . u_2 = 3 - 2 sqrt2.
    imtl = run(solvers.imtl_g_weights, HAND)
    np.testing.assert_allclose(imtl, [2 - SQRT2, SQRT2 - 1], atol=1e-6)
    np.testing.assert_allclose(imtl @ HAND, [3 - 2 * SQRT2, SQRT2 - 1], atol=1e-6)
    # UPGrad: M / tr M + r I = [[1/3 + r, -1/3], [-1/3, 2/3 + r]]. For task 1 (v >= (1/2, 0)) the
    # first bound is active and v_2 = (1/3)(1/2)/(2/3 + r); for task 2 symmetrically
    # v_1 = (1/3)(1/2)/(1/3 + r). Both KKT checks hold: the remaining gradients are positive.
    r = 1e-4
    want = np.array([0.5, (1 / 6) / (2 / 3 + r)]) + np.array([(1 / 6) / (1 / 3 + r), 0.5])
    np.testing.assert_allclose(run(solvers.upgrad_weights, HAND, reg=r), want, atol=1e-6)
    np.testing.assert_allclose(run(solvers.upgrad_weights, HAND, reg=0.0), [1.0, 0.75], atol=1e-6)


# -- defining properties ------------------------------------------------------------------


@pytest.mark.parametrize("seed,num_tasks,kind", CASES, ids=CASE_IDS)
def test_mgda_is_the_min_norm_point_of_the_simplex(seed, num_tasks, kind):
    grads = gradients(seed, num_tasks, kind)
    gram = grads @ grads.T
    w = run(solvers.min_norm_weights, grads)
    tol = 1e-4 * np.trace(gram) / num_tasks
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-5
    # KKT: every vertex's directional derivative is at least the value, with equality on the support.
    value, slopes = w @ gram @ w, gram @ w
    assert np.all(slopes >= value - tol)
    np.testing.assert_allclose(slopes[w > 1e-6], value, atol=tol)
    others = np.random.default_rng(seed).dirichlet(np.full(num_tasks, 0.5), size=2000)
    assert np.einsum("ni,ij,nj->n", others, gram, others).min() >= value - tol


@pytest.mark.parametrize("seed,num_tasks,kind", CASES, ids=CASE_IDS)
def test_pcgrad_matches_the_vector_algorithm(seed, num_tasks, kind):
    grads = gradients(seed, num_tasks, kind)
    orders = random_orders(seed, num_tasks)
    w = run(solvers.pcgrad_weights, grads, orders)
    projected, settled = pcgrad_reference(grads, orders)
    scale = np.abs(grads).max()
    np.testing.assert_allclose(w @ grads, projected.sum(0), atol=1e-4 * scale)
    # After its last projection a gradient conflicts with none of the tasks that followed.
    tol = 1e-6 * (grads ** 2).sum(1).max()
    for i, later in enumerate(settled):
        assert all(projected[i] @ grads[j] >= -tol for j in later)
    if num_tasks == 2:
        assert projected[0] @ grads[1] >= -tol and projected[1] @ grads[0] >= -tol


def test_pcgrad_leaves_non_conflicting_gradients_alone():
    for num_tasks in (2, 3, 5):
        grads = gradients(num_tasks, num_tasks, "aligned")
        np.testing.assert_array_equal(run(solvers.pcgrad_weights, grads, random_orders(0, num_tasks)), 1.0)


def cagrad_reference(gram, c):
    """The official CAGrad solve (scipy SLSQP on F over the simplex) and the weights of d."""
    num_tasks = len(gram)
    radius = c * np.sqrt(gram.mean())

    def objective(w):
        return w @ gram.mean(1) + radius * np.sqrt(w @ gram @ w + 1e-12)

    result = minimize(objective, np.full(num_tasks, 1 / num_tasks), method="SLSQP", bounds=[(0, 1)] * num_tasks,
                      constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
                      options={"ftol": 1e-14, "maxiter": 500})
    w = result.x
    return (1 / num_tasks + radius / np.sqrt(w @ gram @ w) * w) / (1 + c * c)


@pytest.mark.parametrize("seed,num_tasks,kind", CASES, ids=CASE_IDS)
def test_cagrad_improves_the_worst_task_within_the_ball(seed, num_tasks, kind):
    grads = gradients(seed, num_tasks, kind)
    c = 0.4
    w = run(solvers.cagrad_weights, grads, c=c)
    g0 = grads.mean(0)
    d = w @ grads
    tol = 1e-4 * (g0 @ g0)
    assert d @ g0 >= 0
    # Undo the rescaling: the direction lies in the ball |d - g0| <= c |g0| and its worst task
    # improvement is at least the mean gradient's.
    unscaled = d * (1 + c * c)
    assert np.linalg.norm(unscaled - g0) <= c * np.linalg.norm(g0) * (1 + 1e-4)
    assert (grads @ unscaled).min() >= (grads @ g0).min() - tol
    np.testing.assert_allclose(run(solvers.cagrad_weights, grads, c=0.0), 1 / num_tasks, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cagrad_matches_scipy(seed):
    grads = gradients(seed, 3, ("random", "conflict", "scaled")[seed])
    gram = grads @ grads.T
    w = run(solvers.cagrad_weights, grads)
    want = cagrad_reference(gram, 0.4)
    np.testing.assert_allclose(w, want, atol=1e-3)
    g0_norm = np.linalg.norm(grads.mean(0))
    assert np.linalg.norm((w - want) @ grads) <= 1e-3 * g0_norm


@pytest.mark.parametrize("seed,num_tasks,kind", CASES, ids=CASE_IDS)
def test_imtl_g_projects_equally_on_every_unit_gradient(seed, num_tasks, kind):
    grads = gradients(seed, num_tasks, kind)
    w = run(solvers.imtl_g_weights, grads)
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    projections = units @ (w @ grads)
    np.testing.assert_allclose(projections, projections[0], rtol=1e-4)
    assert abs(w.sum() - 1) < 1e-5


@pytest.mark.parametrize("seed,num_tasks,kind", CASES + [(7, 5, "low_rank")], ids=CASE_IDS + ["T5-rank3"])
def test_aligned_mtl_aligns_the_gradients(seed, num_tasks, kind):
    if kind == "low_rank":  # five tasks spanning only three directions
        rng = np.random.default_rng(seed)
        grads = rng.normal(size=(num_tasks, 3)) @ rng.normal(size=(3, P))
    else:
        grads = gradients(seed, num_tasks, kind)
    gram = grads @ grads.T
    w = run(solvers.aligned_mtl_weights, grads)
    b, smallest, rank = aligned_matrix(gram)
    assert rank == min(num_tasks, 3 if kind == "low_rank" else P)
    # The aligned gradients B G are orthogonal with squared norm lambda_min (on the kept
    # subspace), and d is their sum, so d projects equally (lambda_min) on each of them.
    kept = b @ np.linalg.pinv(b) if rank < num_tasks else np.eye(num_tasks)
    np.testing.assert_allclose(b @ gram @ b, smallest * kept, atol=1e-8 * np.trace(gram))
    np.testing.assert_allclose(w, b.sum(1), atol=1e-4 * np.abs(b).max())
    aligned = b @ grads
    if rank == num_tasks:
        np.testing.assert_allclose(aligned @ (w @ grads), smallest, rtol=1e-4)
        np.testing.assert_allclose(w @ gram @ w, num_tasks * smallest, rtol=1e-4)
    # Not a property: d's projections on the raw gradients, (M B 1)_i = sqrt(lambda_min)
    # (M^1/2 1)_i, differ from task to task in general.
    if kind == "random" and num_tasks > 2:
        raw = gram @ w
        assert raw.max() - raw.min() > 0.1 * np.abs(raw).max()


@pytest.mark.parametrize("seed,num_tasks,kind", CASES, ids=CASE_IDS)
def test_nash_mtl_solves_the_bargaining_equation(seed, num_tasks, kind):
    grads = gradients(seed, num_tasks, kind)
    gram = grads @ grads.T
    alpha = run(solvers.nash_mtl_weights, grads)
    assert np.all(alpha > 0)
    normalised = gram / np.linalg.norm(gram)
    np.testing.assert_allclose(normalised @ alpha, 1 / alpha, rtol=1e-4)


def upgrad_reference(gram, reg=1e-4):
    """Each task's box-constrained QP solved by scipy (L-BFGS-B), summed."""
    num_tasks = len(gram)
    matrix = gram / np.trace(gram) + reg * np.eye(num_tasks)
    total = np.zeros(num_tasks)
    for i in range(num_tasks):
        lower = np.eye(num_tasks)[i] / num_tasks
        result = minimize(lambda v: v @ matrix @ v, lower, jac=lambda v: 2 * matrix @ v, method="L-BFGS-B",
                          bounds=[(low, None) for low in lower], options={"ftol": 1e-15, "gtol": 1e-12})
        total += result.x
    return total


@pytest.mark.parametrize("seed,num_tasks,kind", CASES, ids=CASE_IDS)
def test_upgrad_conflicts_with_no_task(seed, num_tasks, kind):
    grads = gradients(seed, num_tasks, kind)
    gram = grads @ grads.T
    w = run(solvers.upgrad_weights, grads)
    # Exactly >= 0 without the ridge; with it, up to reg times the weight (trace-normalised units).
    assert np.all(gram @ w >= -(1e-4 * np.abs(w).max() + 1e-5) * np.trace(gram))
    assert np.all(w >= 1 / num_tasks - 1e-6)
    if seed == 1:
        np.testing.assert_allclose(w, upgrad_reference(gram), rtol=1e-4, atol=1e-5)


def test_upgrad_is_the_mean_without_conflicts():
    for num_tasks in (2, 3, 5):
        grads = gradients(num_tasks, num_tasks, "aligned")
        np.testing.assert_allclose(run(solvers.upgrad_weights, grads), 1 / num_tasks, atol=1e-7)


# -- T = 2 closed forms and early stopping ------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["random", "conflict", "scaled", "aligned"])
def test_two_task_closed_forms_match_scipy(seed, kind):
    grads = gradients(seed, 2, kind)
    gram = grads @ grads.T
    for c in (0.1, 0.4, 0.9):
        np.testing.assert_allclose(run(solvers.cagrad_weights, grads, c=c), cagrad_reference(gram, c), atol=1e-5)
    np.testing.assert_allclose(run(solvers.upgrad_weights, grads), upgrad_reference(gram), rtol=1e-4, atol=1e-5)
    gram32 = gram.astype("float32")
    for solve in (solvers._min_norm_solve, solvers._cagrad_solve, solvers._upgrad_solve):
        assert int(solve(gram32)[1]) == 0  # no iterations


# Each iterative solver's private helper (returning the weights and the iterations used) and
# its maximum, the public default.
ITERATIVE = {
    "mgda": (solvers._min_norm_solve, 250),
    "cagrad": (solvers._cagrad_solve, 50),
    "upgrad": (solvers._upgrad_solve, 100),
    "nash_mtl": (solvers._nash_mtl_solve, 20),
}


def easy_gradients():
    """Six well-conditioned gradients (Gram eigenvalues 0.4-1.7 times the mean), one pair in conflict."""
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(6, 64))
    grads[1] = -0.5 * grads[0] + grads[1]
    return grads


def test_iterative_solvers_stop_early_on_an_easy_case():
    grads = easy_gradients()
    gram = grads @ grads.T
    gram32 = tf.constant(gram.astype("float32"))
    used = {}
    for name, (solve, maximum) in ITERATIVE.items():
        weights, iterations = solve(gram32)
        compiled = tf.function(lambda g, solve=solve: solve(g))(gram32)
        assert iterations.dtype == "int32"
        used[name] = int(iterations)
        assert 0 < used[name] < maximum, name
        # The same stop in a compiled graph, and the maximum is respected.
        assert int(compiled[1]) == used[name], name
        np.testing.assert_allclose(compiled[0].numpy(), ops.convert_to_numpy(weights), rtol=1e-5, atol=1e-6)
        assert int(solve(gram32, iterations=2)[1]) == 2, name
        # The public function returns the same weights.
        public = {"mgda": solvers.min_norm_weights, "cagrad": solvers.cagrad_weights,
                  "upgrad": solvers.upgrad_weights, "nash_mtl": solvers.nash_mtl_weights}[name]
        np.testing.assert_allclose(run(public, grads), ops.convert_to_numpy(weights), rtol=1e-6, atol=1e-7)
    # ... and each still meets its defining property at the tests' tolerances.
    num_tasks = len(gram)
    mgda = run(solvers.min_norm_weights, grads)
    value, slopes, tol = mgda @ gram @ mgda, gram @ mgda, 1e-4 * np.trace(gram) / num_tasks
    assert np.all(slopes >= value - tol)
    np.testing.assert_allclose(slopes[mgda > 1e-6], value, atol=tol)
    np.testing.assert_allclose(run(solvers.cagrad_weights, grads), cagrad_reference(gram, 0.4), atol=1e-4)
    upgrad = run(solvers.upgrad_weights, grads)
    assert np.all(gram @ upgrad >= -(1e-4 * np.abs(upgrad).max() + 1e-5) * np.trace(gram))
    np.testing.assert_allclose(upgrad, upgrad_reference(gram), rtol=1e-4, atol=1e-5)
    alpha = run(solvers.nash_mtl_weights, grads)
    np.testing.assert_allclose((gram / np.linalg.norm(gram)) @ alpha, 1 / alpha, rtol=1e-4)


# -- edge cases and execution modes -------------------------------------------------------

SOLVERS = {
    "mgda": solvers.min_norm_weights,
    "pcgrad": lambda gram: solvers.pcgrad_weights(
        gram, ops.tile(ops.arange(gram.shape[0], dtype="int32")[None, :], (gram.shape[0], 1))),
    "cagrad": solvers.cagrad_weights,
    "imtl_g": solvers.imtl_g_weights,
    "aligned_mtl": solvers.aligned_mtl_weights,
    "nash_mtl": solvers.nash_mtl_weights,
    "upgrad": solvers.upgrad_weights,
}
EDGE_CASES = {
    "one_task": np.array([[1.0, 2.0, 0.5]]),
    "one_zero_task": np.zeros((1, 3)),
    "zero_task": np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]),
    "all_zero": np.zeros((3, 3)),
    "same_direction": np.array([[1.0, 2.0], [2.0, 4.0]]),
    "opposite": np.array([[1.0, 2.0], [-2.0, -4.0]]),
    "collinear_three": np.array([[1.0, 1.0], [3.0, 3.0], [-1.0, -1.0]]),
    "duplicate": np.array([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]),
    "tiny_scale": 1e-12 * gradients(0, 3),
}


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("case", EDGE_CASES)
def test_degenerate_gradients_give_finite_weights(name, case):
    assert np.all(np.isfinite(run(SOLVERS[name], EDGE_CASES[case])))


def test_degenerate_cases_have_the_expected_answers():
    zero = EDGE_CASES["zero_task"]
    np.testing.assert_allclose(run(solvers.min_norm_weights, zero), [0, 1, 0], atol=1e-6)  # d = 0 is min-norm
    assert np.all(np.isfinite(run(solvers.upgrad_weights, zero, reg=0.0)))
    # A zero gradient cannot be balanced: its Nash weight runs to the cap, the others stay finite.
    nash = run(solvers.nash_mtl_weights, zero)
    assert nash[1] == pytest.approx(1e6) and np.all(nash[[0, 2]] < 10)
    for solver in (solvers.min_norm_weights, solvers.imtl_g_weights, solvers.aligned_mtl_weights,
                   solvers.nash_mtl_weights, solvers.upgrad_weights):
        np.testing.assert_allclose(run(solver, EDGE_CASES["one_task"]), [1.0], atol=1e-5)
    # The same scale-free answers for gradients at 1e-12 as at 1.
    for name, solver in SOLVERS.items():
        np.testing.assert_allclose(run(solver, EDGE_CASES["tiny_scale"]), run(solver, gradients(0, 3)),
                                   rtol=1e-4, atol=1e-5, err_msg=name)


def test_forty_badly_scaled_tasks():
    """The iterative solvers at their default iteration counts on T = 40 correlated tasks whose
    gradient norms span two orders of magnitude."""
    rng = np.random.default_rng(3)
    shared = rng.normal(size=400) * rng.choice([-1, 1], size=(40, 1))  # each task along or against it
    grads = 0.5 * shared + 0.5 * rng.normal(size=(40, 400))
    grads *= 10.0 ** rng.uniform(-1, 1, size=(40, 1))
    gram = grads @ grads.T
    scale = np.trace(gram) / 40
    mgda = run(solvers.min_norm_weights, grads)
    value = mgda @ gram @ mgda
    assert np.all(gram @ mgda >= value - 1e-4 * scale)
    upgrad = run(solvers.upgrad_weights, grads)
    assert np.all(gram @ upgrad >= -(1e-4 * np.abs(upgrad).max() + 1e-5) * np.trace(gram))
    alpha = run(solvers.nash_mtl_weights, grads)
    normalised = gram / np.linalg.norm(gram)
    np.testing.assert_allclose(normalised @ alpha, 1 / alpha, rtol=1e-3)
    imtl = run(solvers.imtl_g_weights, grads)
    projections = (grads / np.linalg.norm(grads, axis=1, keepdims=True)) @ (imtl @ grads)
    np.testing.assert_allclose(projections, projections[0], rtol=1e-3)
    c = 0.4
    unscaled = run(solvers.cagrad_weights, grads, c=c) @ grads * (1 + c * c)
    g0 = grads.mean(0)
    assert np.linalg.norm(unscaled - g0) <= c * np.linalg.norm(g0) * (1 + 1e-4)
    assert (grads @ unscaled).min() >= (grads @ g0).min()


GRAPH_GRADS = gradients(1, 4, "conflict")


def eager_results():
    gram = ops.convert_to_tensor((GRAPH_GRADS @ GRAPH_GRADS.T).astype("float32"))
    return {name: ops.convert_to_numpy(solver(gram)) for name, solver in SOLVERS.items()}


def test_tf_function_and_replica_context_match_eager():
    eager = eager_results()
    gram = tf.constant((GRAPH_GRADS @ GRAPH_GRADS.T).astype("float32"))
    every = tf.function(lambda g: {name: solver(g) for name, solver in SOLVERS.items()}, jit_compile=False)
    graph = every(gram)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    replicated = tf.function(lambda g: strategy.run(lambda x: {n: s(x) for n, s in SOLVERS.items()}, args=(g,)))
    per_replica = replicated(gram)
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
        orders = jax.numpy.tile(jax.numpy.arange(4, dtype="int32")[None, :], (4, 1))
        jitted = {{
            "mgda": jax.jit(solvers.min_norm_weights),
            "pcgrad": jax.jit(solvers.pcgrad_weights),
            "cagrad": jax.jit(solvers.cagrad_weights),
            "imtl_g": jax.jit(solvers.imtl_g_weights),
            "aligned_mtl": jax.jit(solvers.aligned_mtl_weights),
            "nash_mtl": jax.jit(solvers.nash_mtl_weights),
            "upgrad": jax.jit(solvers.upgrad_weights),
        }}
        out = {{n: np.asarray(f(gram, orders) if n == "pcgrad" else f(gram)).tolist()
               for n, f in jitted.items()}}
        print("RESULT" + json.dumps(out))
    """, backend="jax", env={"JAX_PLATFORMS": "cpu"})
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    jax_results = json.loads(line[len("RESULT"):])
    assert set(jax_results) == set(SOLVERS)
    for name, value in jax_results.items():
        np.testing.assert_allclose(value, eager[name], rtol=1e-4, atol=1e-5, err_msg=name)
