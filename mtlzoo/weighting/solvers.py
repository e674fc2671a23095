"""Solvers for gradient-combination methods, written on the Gram matrix of the task gradients.

Every function takes ``gram`` (shape ``(T, T)``, ``gram[i, j] = g_i . g_j`` for the per-task
gradients ``g_i`` of the shared parameters) and returns task weights ``w`` (shape ``(T,)``,
float32) such that the method's update direction is ``d = sum_i w_i g_i``. Each method's output
is a linear combination of the task gradients, so the solvers track coefficients instead of
vectors and never see the (possibly huge) gradients themselves.

Only ``keras.ops`` is used, with a static T, so the solvers trace inside ``tf.function`` (also
in a ``tf.distribute`` replica context) and ``jax.jit``. The iterative solvers run a
``while_loop`` with a fixed-shape state that stops as soon as a convergence certificate falls
below a tolerance (the ``_*_TOLERANCE`` constants), their ``iterations`` argument being the
maximum; the private ``_*_solve`` helpers also return the iterations used.
"""

from __future__ import annotations

import operator

from keras import ops

# Guards divisions by quantities that are O(1) once the Gram matrix is normalised (below).
_EPS = 1e-12
# Guards the normalisation itself, so an all-zero Gram matrix stays all zero.
_TINY = 1e-30
# Added to the normalised diagonal (mean 1) in Jacobi preconditioning, so a zero gradient's
# coordinate gets a bounded step.
_JACOBI_FLOOR = 1e-3
# Singular values below this fraction of the largest are float32 rounding noise.
_SVD_CUTOFF = 1e-6
# Nash-MTL weights stop here: beyond, a problem has no float32-meaningful solution.
_NASH_MAX = 1e6
_FLOAT32_EPS = 1.1920929e-07
# Stopping rules of the iterative solvers (their iteration arguments are maxima). The
# accelerated projected-gradient solvers stop once the fixed-point residual of their
# projected-gradient step, in gradient units, is at most the tolerance for every problem: the
# KKT residual of the point returned is then at most about twice that.
# - MGDA: in units of the Gram matrix normalised to mean diagonal 1 (where the vertex slopes
#   M w are O(1)); 1e-5 leaves the slopes within a tenth of the 1e-4 the tests allow.
# - UPGrad: per task QP, on T^2 V M (O(1), as v ~ 1/T and M ~ 1/T); its weights need the
#   tighter 1e-6, as the ridge (1e-4) is the only curvature along some directions.
# - CAGrad: relative to |g0| (both terms of its gradient are O(|g0|)); 1e-6 keeps the weights
#   within a few percent of the 1e-3 the tests allow against scipy.
# Nash-MTL stops after a full Newton step taken where the Newton decrement was below its
# tolerance: the step squares the decrement, to about 1e-8, below float32 rounding.
_MGDA_TOLERANCE = 1e-5
_UPGRAD_TOLERANCE = 1e-6
_CAGRAD_TOLERANCE = 1e-6
_NASH_TOLERANCE = 1e-4
# Projected-gradient steps per convergence test (see _accelerated_projected_gradient).
_UNROLL = 4


def _as_gram(gram):
    gram = ops.cast(ops.convert_to_tensor(gram), "float32")
    if len(gram.shape) != 2 or gram.shape[0] is None or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be a (T, T) matrix with a static T, got shape {gram.shape}.")
    return gram, int(gram.shape[0])


def _normalised(gram):
    """The Gram matrix divided by its mean diagonal (mean squared gradient norm), and T.

    All the methods below are invariant to a common rescaling of the gradients, and working on
    an O(1) matrix keeps float32 step sizes and epsilons meaningful whatever the loss scale.
    """
    gram, num_tasks = _as_gram(gram)
    scale = ops.sum(ops.diagonal(gram)) / num_tasks
    return gram / (ops.maximum(scale, 0.0) + _TINY), num_tasks


def _eigenvalue_bound(matrix):
    # The largest absolute row sum bounds the spectral radius (Gershgorin) and needs no eigh.
    return ops.max(ops.sum(ops.abs(matrix), axis=-1)) + _EPS


def _jacobi(matrix, floor=0.0):
    """Diagonal preconditioner ``D = diag(M) + floor`` and the Lipschitz bound in its metric.

    Task gradients often differ in norm by orders of magnitude, which makes ``M`` badly scaled;
    gradient steps measured in the metric ``D`` (Jacobi preconditioning) see the correlation
    matrix ``D^-1/2 M D^-1/2`` instead, whose largest eigenvalue is at most T (Gershgorin).
    """
    diagonal = ops.maximum(ops.diagonal(matrix), 0.0) + floor
    root = ops.sqrt(diagonal)
    correlation = matrix / (root[:, None] * root[None, :] + _EPS)
    return diagonal, _eigenvalue_bound(correlation)


def _accelerated_projected_gradient(x0, step, project, iterations, metric, tolerance):
    """FISTA (Beck & Teboulle 2009) with gradient-based adaptive restart (O'Donoghue & Candes 2015).

    ``step(y)`` returns ``(gradient, curvature)``: the gradient of the objective at ``y`` and the
    diagonal ``D L`` of the (Jacobi) metric times the Lipschitz bound in it, so the update is
    ``project(y - gradient / curvature)``; ``project`` maps onto the feasible set in the metric
    ``D`` (``metric``, the diagonal). The last axis of ``x0`` holds one problem's variables,
    leading axes independent problems, each with its own momentum. The restart keeps
    convergence linear on strongly convex problems, where plain FISTA oscillates.

    The loop stops after ``iterations`` steps (a Python int), or as soon as the last step, from
    ``y``, moved every problem by at most ``tolerance`` in gradient units (``max |curvature (y -
    x)|``): ``y`` is then a near fixed point of the projected-gradient map, and the KKT residual
    of the returned ``x`` is at most about twice that. The test runs every ``_UNROLL`` steps (a
    while-loop iteration costs about as much as a step on small problems), then step by step for
    the remainder of ``iterations``. Returns ``x`` and the steps taken (int32).
    """

    def fista(x_prev, y, t):
        gradient, curvature = step(y)
        x = project(y - gradient / curvature)
        moved = y - x
        restart = ops.sum(metric * moved * (x - x_prev), axis=-1, keepdims=True) > 0
        t_next = ops.where(restart, ops.ones_like(t), (1.0 + ops.sqrt(1.0 + 4.0 * t * t)) / 2.0)
        beta = ops.where(restart, ops.zeros_like(t), (t - 1.0) / t_next)
        return (x, x + beta * (x - x_prev), t_next), curvature * moved

    def loop(state, unroll, count):
        def cond(x_prev, y, t, residual, used):
            return residual > tolerance

        def body(x_prev, y, t, residual, used):
            inner = (x_prev, y, t)
            for _ in range(unroll):
                inner, moved = fista(*inner)
            return inner + (ops.max(ops.abs(moved)), used + unroll)

        return ops.while_loop(cond, body, state, maximum_iterations=count) if count else state

    t0 = ops.ones(tuple(x0.shape[:-1]) + (1,), dtype="float32")
    state = (x0, x0, t0, ops.convert_to_tensor(float("inf"), dtype="float32"),
             ops.convert_to_tensor(0, dtype="int32"))
    blocks, rest = divmod(operator.index(iterations), _UNROLL)
    state = loop(loop(state, _UNROLL, blocks), 1, rest)
    return state[0], state[4]


def project_to_simplex(v):
    """Euclidean projection of a vector ``(T,)`` onto the probability simplex.

    Sort-based algorithm (Held, Wolfe & Crowder 1974; Duchi et al., ICML 2008). The threshold
    is ``max_k (sum of the k largest entries - 1) / k``: that sequence increases exactly while
    the k-th largest entry stays in the support, so its maximum is the usual threshold and no
    index has to be gathered.
    """
    v = ops.cast(ops.convert_to_tensor(v), "float32")
    num = int(v.shape[-1])
    descending = ops.flip(ops.sort(v, axis=-1), axis=-1)
    ranks = ops.arange(1, num + 1, dtype="float32")
    theta = ops.max((ops.cumsum(descending, axis=-1) - 1.0) / ranks, axis=-1, keepdims=True)
    return ops.maximum(v - theta, 0.0)


def _project_to_simplex_in_metric(v, diagonal):
    """The simplex point nearest to ``v`` in the norm ``sum_i D_i x_i^2`` (D = ``diagonal``).

    Its entries are ``max(v_i - theta / D_i, 0)``; with entries sorted by ``v_i D_i``, the
    same maximum-of-thresholds argument as in ``project_to_simplex`` gives theta.
    """
    spread = 1.0 / diagonal
    order = ops.argsort(-v * diagonal)
    sums = ops.cumsum(ops.take(v, order)) - 1.0
    theta = ops.max(sums / ops.cumsum(ops.take(spread, order)))
    return ops.maximum(v - theta * spread, 0.0)


def min_norm_weights(gram, iterations=250):
    """MGDA (Sener & Koltun, NeurIPS 2018): the point of the simplex minimising ``w^T M w``.

    ``d`` is then the min-norm element of the convex hull of the task gradients. T=2 uses the
    exact closed form; otherwise Jacobi-preconditioned accelerated projected gradient (step 1/L,
    L a Gershgorin bound on the largest eigenvalue of the correlation matrix) runs from the
    uniform weights for at most ``iterations`` steps, until the residual of its projected-gradient
    step (about its KKT residual, in units of the Gram matrix normalised to mean diagonal 1) is
    below ``_MGDA_TOLERANCE``.
    """
    return _min_norm_solve(gram, iterations)[0]


def _min_norm_solve(gram, iterations=250):
    """``min_norm_weights`` and the iterations it used (0 for the closed forms)."""
    gram, num_tasks = _normalised(gram)
    none = ops.convert_to_tensor(0, dtype="int32")
    if num_tasks == 1:
        return ops.ones((1,), dtype="float32"), none
    if num_tasks == 2:
        # gamma minimises |gamma g_1 + (1 - gamma) g_2|^2; the eps terms give 1/2 for identical gradients.
        numerator = gram[1, 1] - gram[0, 1]
        denominator = gram[0, 0] + gram[1, 1] - 2.0 * gram[0, 1]
        gamma = ops.clip((numerator + 0.5 * _EPS) / (ops.maximum(denominator, 0.0) + _EPS), 0.0, 1.0)
        return ops.stack([gamma, 1.0 - gamma]), none
    # The floor keeps the metric finite along zero gradients.
    diagonal, lipschitz = _jacobi(gram, floor=_JACOBI_FLOOR)
    w0 = ops.full((num_tasks,), 1.0 / num_tasks, dtype="float32")
    return _accelerated_projected_gradient(
        w0, lambda w: (ops.matmul(gram, w), diagonal * lipschitz),
        lambda w: _project_to_simplex_in_metric(w, diagonal), iterations, diagonal, _MGDA_TOLERANCE)


def pcgrad_weights(gram, orders):
    """PCGrad (Yu et al., NeurIPS 2020): project each gradient off the ones it conflicts with.

    ``orders[i]`` (int, ``(T, T)``) is the order in which task i's gradient is projected against
    the others (entries equal to i are skipped). For each task, ``g_i'`` starts at ``g_i`` and,
    for each j in turn, loses its component along ``g_j`` when ``g_i' . g_j < 0``. Returns the
    weights of ``sum_i g_i'``. ``g_i'`` is kept as row i of a coefficient matrix C, so that
    ``g_i' . g_j = (C M)[i, j]``; all tasks are projected at once.
    """
    gram, num_tasks = _normalised(gram)
    orders = ops.cast(ops.convert_to_tensor(orders), "int32")
    squared_norms = ops.diagonal(gram)
    own = ops.arange(num_tasks, dtype="int32")
    coefficients = ops.eye(num_tasks, dtype="float32")
    for position in range(num_tasks):
        others = orders[:, position]
        selector = ops.one_hot(others, num_tasks, dtype="float32")  # row i picks task j_i
        dots = ops.sum(ops.matmul(coefficients, gram) * selector, axis=1)
        norms = ops.sum(selector * squared_norms[None, :], axis=1)
        project = ops.logical_and(dots < 0, ops.not_equal(others, own))
        shift = ops.where(project, dots / (norms + _EPS), ops.zeros_like(dots))
        coefficients = coefficients - shift[:, None] * selector
    return ops.sum(coefficients, axis=0)


def cagrad_weights(gram, c=0.4, iterations=50):
    """CAGrad (Liu et al., NeurIPS 2021): the best worst-case improvement near the mean gradient.

    With ``g0`` the mean gradient, ``w`` minimises ``F(w) = w^T M 1/T + sqrt(phi) |g_w|`` on the
    simplex, ``phi = c^2 |g0|^2``, and ``d = (g0 + sqrt(phi) / |g_w| g_w) / (1 + c^2)`` (the
    official code's default rescaling). ``F`` is convex but its curvature grows as ``|g_w|``
    shrinks, so the (Jacobi-preconditioned) accelerated projected-gradient solver takes steps
    ``1/L`` with the local bound ``L = sqrt(phi) lambda_max / |g_w|``, for at most ``iterations``
    steps, until the residual of its projected-gradient step (about its KKT residual) is below
    ``_CAGRAD_TOLERANCE |g0|``. T=2 is a 1-D problem
    solved exactly (``_cagrad_two_tasks``).
    """
    return _cagrad_solve(gram, c, iterations)[0]


def _cagrad_two_tasks(gram, mean_dots, radius):
    """The minimiser of CAGrad's ``F`` over ``w = (gamma, 1 - gamma)``, in closed form.

    With ``u = a gamma + b`` (``a = |g_1 - g_2|^2``, ``b = g_2 . (g_1 - g_2)``), ``|g_w|^2 =
    (u^2 + h) / a`` where ``h = det M``, and ``F = s gamma + radius |g_w|`` up to a constant,
    ``s = (M 1/T)_1 - (M 1/T)_2``. ``F`` is convex in gamma and ``dF/dgamma = s + radius sqrt(a)
    u / sqrt(u^2 + h)`` vanishes at ``u = -s sqrt(h / (radius^2 a - s^2))`` when ``s^2 <
    radius^2 a``; otherwise ``F`` is monotone and the clip picks the end the sign of s points to
    (the floored denominator sends u to that side). Collinear gradients (``h = 0``) give the
    kink ``u = 0``, where ``g_w`` vanishes.
    """
    a = ops.maximum(gram[0, 0] + gram[1, 1] - 2.0 * gram[0, 1], 0.0)
    b = gram[0, 1] - gram[1, 1]
    h = ops.maximum(gram[0, 0] * gram[1, 1] - gram[0, 1] * gram[0, 1], 0.0)
    s = mean_dots[0] - mean_dots[1]
    u = -s * ops.sqrt(h) / ops.sqrt(ops.maximum(radius * radius * a - s * s, _TINY))
    gamma = ops.clip((u - b) / (a + _EPS), 0.0, 1.0)
    return ops.stack([gamma, 1.0 - gamma])


def _cagrad_solve(gram, c=0.4, iterations=50):
    """``cagrad_weights`` and the iterations it used (0 for T=2)."""
    gram, num_tasks = _normalised(gram)
    mean_dots = ops.mean(gram, axis=1)  # M 1/T
    mean_norm = ops.sqrt(ops.maximum(ops.mean(gram), 0.0))  # |g0|, as |g0|^2 = 1^T M 1 / T^2
    radius = c * mean_norm  # sqrt(phi)

    def norm_of(w):
        return ops.sqrt(ops.maximum(ops.sum(w * ops.matmul(gram, w)), 0.0) + _EPS)

    if num_tasks <= 2:
        w = ops.ones((1,), dtype="float32") if num_tasks == 1 else _cagrad_two_tasks(gram, mean_dots, radius)
        used = ops.convert_to_tensor(0, dtype="int32")
    else:
        diagonal, bound = _jacobi(gram, floor=_JACOBI_FLOOR)

        def step(w):
            norm = norm_of(w)
            gradient = mean_dots + radius * ops.matmul(gram, w) / norm
            return gradient, diagonal * (radius * bound / norm + _EPS)

        w0 = ops.full((num_tasks,), 1.0 / num_tasks, dtype="float32")
        w, used = _accelerated_projected_gradient(
            w0, step, lambda w: _project_to_simplex_in_metric(w, diagonal), iterations, diagonal,
            _CAGRAD_TOLERANCE * mean_norm)
    return (1.0 / num_tasks + radius / norm_of(w) * w) / (1.0 + c * c), used


def imtl_g_weights(gram):
    """IMTL-G (Liu et al., ICLR 2021): ``d`` has equal projections on all unit task gradients.

    Closed form of the paper: with ``u_i = g_i / |g_i|``, D the rows ``g_1 - g_i`` and U the
    rows ``u_1 - u_i`` (i = 2..T), ``alpha_{2..T} = g_1 U^T (D U^T)^-1`` and ``alpha_1 = 1 -
    sum alpha_{2..T}``. Products with u are gram entries divided by norms; a zero gradient gets
    a zero unit vector, and collinear gradients a least-squares (pseudo-inverse) solution.
    """
    gram, num_tasks = _normalised(gram)
    if num_tasks == 1:
        return ops.ones((1,), dtype="float32")
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    inverse_norms = ops.where(norms > _EPS, 1.0 / ops.maximum(norms, _EPS), ops.zeros_like(norms))
    dots = gram * inverse_norms[None, :]  # dots[i, j] = g_i . u_j
    rhs = dots[0, 0] - dots[0, 1:]  # g_1 U^T
    # (D U^T)^T, so that alpha_{2..T} solves system @ alpha = (g_1 U^T)^T. It is singular for
    # collinear gradients, where linalg.solve raises on TensorFlow; a pseudo-inverse through the
    # SVD never does, and drops the directions that are only float32 noise.
    system = ops.transpose(dots[1:, 1:] - dots[1:, :1] - dots[:1, 1:] + dots[0, 0])
    left, singular, right = ops.linalg.svd(system)
    keep = singular > ops.max(singular) * _SVD_CUTOFF + _EPS
    inverse = ops.where(keep, 1.0 / ops.where(keep, singular, 1.0), 0.0)

    def pseudo_solve(b):
        return ops.matmul(ops.transpose(right), inverse * ops.matmul(ops.transpose(left), b))

    rest = pseudo_solve(rhs)
    # One step of iterative refinement: the float32 SVD alone loses digits on these systems.
    rest = rest + pseudo_solve(rhs - ops.matmul(system, rest))
    return ops.concatenate([1.0 - ops.sum(rest, keepdims=True), rest])


def aligned_mtl_weights(gram):
    """Aligned-MTL (Senushkin et al., CVPR 2023): align the gradients by a Procrustes rotation.

    With ``M = V diag(lambda) V^T``, ``B = sqrt(lambda_min) V diag(1/sqrt(lambda)) V^T`` over the
    eigenpairs above ``max(lambda) T eps`` (the rank tolerance of the official code), so the
    aligned gradients ``B G`` are orthogonal with equal norms (``B M B = lambda_min I`` on the
    kept subspace). ``d`` is their sum: ``w = B 1``. The rank cut is a mask, not a slice, so the
    shapes stay static under jit. An all-zero M gives zero weights.
    """
    gram, num_tasks = _normalised(gram)
    gram = (gram + ops.transpose(gram)) / 2.0  # eigh reads one triangle; keep rounding symmetric
    eigenvalues, eigenvectors = ops.linalg.eigh(gram)
    largest = ops.max(eigenvalues)
    keep = eigenvalues > ops.maximum(largest, 0.0) * num_tasks * _FLOAT32_EPS + _TINY
    safe = ops.where(keep, eigenvalues, ops.ones_like(eigenvalues))
    smallest = ops.min(ops.where(keep, eigenvalues, ops.full_like(eigenvalues, largest)))
    smallest = ops.where(ops.any(keep), smallest, 0.0)
    scales = ops.where(keep, ops.sqrt(smallest) / ops.sqrt(safe), ops.zeros_like(eigenvalues))
    alignment = ops.matmul(eigenvectors * scales[None, :], ops.transpose(eigenvectors))
    return ops.sum(alignment, axis=1)


def nash_mtl_weights(gram, iterations=20):
    """Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution ``M alpha = 1 / alpha``.

    M is first divided by its Frobenius norm, as in the official code. The positive solution is
    the minimiser of the strictly convex, self-concordant ``f(a) = a^T M a / 2 - sum log a_i``,
    found by at most ``iterations`` damped Newton steps from ``a = 1`` (Hessian ``M +
    diag(1/a^2)``). While the Newton decrement is at least 1/4 the step size is the best of a
    fixed ladder (``2^-10 .. 8``, the classical ``1/(1 + decrement)`` and 0) that keeps ``a >
    0``; below it, full steps, which stay inside the Dikin ellipsoid and converge
    quadratically: the loop stops after the full step taken from a decrement below
    ``_NASH_TOLERANCE``, which leaves one of about its square. A task that cannot be balanced
    (a zero gradient, or one exactly opposed to another) has no finite solution; its weight
    grows until it stops at 1e6.
    """
    return _nash_mtl_solve(gram, iterations)[0]


def _nash_mtl_solve(gram, iterations=20):
    """``nash_mtl_weights`` and the Newton steps it took."""
    gram, num_tasks = _normalised(gram)  # first to O(1), so the squares below cannot underflow
    gram = gram / (ops.sqrt(ops.sum(gram * gram)) + _EPS)
    gram = (gram + ops.transpose(gram)) / 2.0
    ladder = ops.convert_to_tensor([0.0] + [2.0 ** k for k in range(-10, 4)], dtype="float32")
    identity = ops.eye(num_tasks, dtype="float32")

    def cond(alpha, decrement, used):
        return decrement >= _NASH_TOLERANCE

    def body(alpha, _, used):
        # H = diag(1/a) K diag(1/a) with K = diag(a) M diag(a) + I, whose eigenvalues are >= 1:
        # solving with K stays accurate in float32 when the weights spread widely. K is solved
        # through eigh with the eigenvalues floored at 1: rounding can make a huge K singular,
        # and linalg.solve raises on TensorFlow where eigh does not.
        residual = alpha * ops.matmul(gram, alpha) - 1.0  # a * grad f
        values, vectors = ops.linalg.eigh(gram * alpha[:, None] * alpha[None, :] + identity)
        scaled = ops.matmul(vectors, ops.matmul(residual, vectors) / ops.maximum(values, 1.0))
        direction = -alpha * scaled
        decrement = ops.sqrt(ops.maximum(ops.sum(residual * scaled), 0.0))
        sizes = ops.concatenate([ladder, ops.reshape(1.0 / (1.0 + decrement), (1,))])
        # f(a + t d) - f(a) for every size t at once; log1p keeps the small changes exact.
        relative = sizes[:, None] * (direction / alpha)[None, :]
        feasible = ops.all(relative > -0.99, axis=1)
        logs = ops.sum(ops.log1p(ops.maximum(relative, -0.99)), axis=1)
        slope = ops.sum(direction * ops.matmul(gram, alpha))
        curvature = ops.sum(direction * ops.matmul(gram, direction))
        change = sizes * slope + 0.5 * sizes * sizes * curvature - logs
        best = ops.take(sizes, ops.argmin(ops.where(feasible, change, 1e30)))
        full = decrement < 0.25
        size = ops.where(full, 1.0, best)
        # The lower clip only matters if rounding pushes a full step across the boundary.
        alpha = ops.clip(alpha + size * direction, 0.01 * alpha, _NASH_MAX)
        # Only a full step certifies convergence (a damped step far out can have any decrement).
        return alpha, ops.where(full, decrement, float("inf")), used + 1

    state = (ops.ones((num_tasks,), dtype="float32"), ops.convert_to_tensor(float("inf"), dtype="float32"),
             ops.convert_to_tensor(0, dtype="int32"))
    alpha, _, used = ops.while_loop(cond, body, state, maximum_iterations=iterations)
    return alpha, used


def upgrad_weights(gram, reg=1e-4, iterations=100):
    """UPGrad (Quinton & Layne 2024, as in TorchJD): average of gradients projected on the dual cone.

    M is divided by its trace and regularised by ``reg I``. For each task i, ``v_i = argmin_v
    v^T M v`` subject to ``v >= e_i / T`` are the weights of the projection of ``g_i / T`` onto
    the dual cone ``{d : d . g_j >= 0 for all j}``; ``w = sum_i v_i``, so ``d`` conflicts with no
    task and is the mean gradient when no two gradients conflict. The T box-constrained QPs are
    solved together, as the rows of a (T, T) matrix, by at most ``iterations``
    Jacobi-preconditioned accelerated projected-gradient steps from ``V = I / T`` (a box
    projection stays a clip in any diagonal metric), until the projected-gradient residual
    (about the KKT residual) of every QP is below ``_UPGRAD_TOLERANCE`` (in units of ``T^2 M v``,
    which is O(1)). T=2 has a closed form: for
    task i, ``v_i = 1/2`` and ``v_j = max(0, -M_ij / (2 M_jj))``.
    """
    return _upgrad_solve(gram, reg, iterations)[0]


def _upgrad_solve(gram, reg=1e-4, iterations=100):
    """``upgrad_weights`` and the iterations it used (0 for T <= 2)."""
    gram, num_tasks = _normalised(gram)
    gram = gram / num_tasks + reg * ops.eye(num_tasks, dtype="float32")
    lower = ops.eye(num_tasks, dtype="float32") / num_tasks
    if num_tasks <= 2:
        if num_tasks == 1:
            return ops.ones((1,), dtype="float32"), ops.convert_to_tensor(0, dtype="int32")
        # Task j's bound is active (v_j > 1/2 would need (M v)_j = 0, so v = 0), and its other
        # weight v_i minimises the 1-D quadratic over v_i >= 0: w_i = 1/2 + max(0, -M_ij / (2 M_ii)).
        # M_ii = 0 (a zero gradient without the ridge) has M_ij = 0, and gets 1/2.
        diagonal = ops.maximum(ops.diagonal(gram), 0.0)
        weights = 0.5 + ops.maximum(-gram[0, 1] / (2.0 * diagonal + _EPS), 0.0)
        return weights, ops.convert_to_tensor(0, dtype="int32")
    # The floor keeps the metric positive along zero gradients when reg is 0.
    diagonal, lipschitz = _jacobi(gram, floor=_JACOBI_FLOOR / num_tasks)
    # Rows are the problems: the gradient of v^T M v / 2 for every row at once is V M, and its
    # Lipschitz bound in the metric D is lipschitz. The residual is measured on T^2 V M.
    units = float(num_tasks * num_tasks)
    solution, used = _accelerated_projected_gradient(
        lower, lambda v: (ops.matmul(v, gram), diagonal * lipschitz), lambda v: ops.maximum(v, lower),
        iterations, diagonal, _UPGRAD_TOLERANCE / units)
    return ops.sum(solution, axis=0), used
