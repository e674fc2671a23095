"""Solvers for gradient-combination methods, written on the Gram matrix of the task gradients.

Every function takes ``gram`` (shape ``(T, T)``, ``gram[i, j] = g_i . g_j`` for the per-task
gradients ``g_i`` of the shared parameters) and returns task weights ``w`` (shape ``(T,)``,
float32) such that the method's update direction is ``d = sum_i w_i g_i``. Each method's output
is a linear combination of the task gradients, so the solvers track coefficients instead of
vectors and never see the (possibly huge) gradients themselves.

**Absent tasks.** ``present`` (shape ``(T,)``: 1 for a task with at least one labelled example
in the batch, 0 for one without; ``None``: every task) takes tasks out of the problem: each
solver answers the sub-problem of the present tasks and gives the absent ones weight 0. A
task without labels has a zero loss and a zero gradient, which would otherwise change the
answer: MGDA's convex hull would contain 0 (no update at all), means over tasks (CAGrad's
``g0``, UPGrad's average) would shrink, and IMTL-G would divide by a zero norm. A *present*
task whose gradient happens to be zero keeps the published behaviour (MGDA then stops, as a
Pareto-stationary point should).

**Accuracy.** The iterative solvers (MGDA, CAGrad, UPGrad) run accelerated projected
gradient in a ``while_loop``, Jacobi-preconditioned so that gradient norms spread over orders
of magnitude cost nothing, and after every few steps solve the face the iterate is on exactly
(conjugate gradients on its free variables): once the active tasks are identified the answer
is exact. They stop on a certificate of optimality in scale-free units: MGDA's Frank-Wolfe
duality gap relative to ``|d|^2``, CAGrad's primal-dual gap, UPGrad's KKT residuals relative
to each projected gradient; its floor is the float32 rounding of the products it evaluates,
and an iterate that no longer moves in float32 stops the loop too, so a solver never spins on
noise. Their ``iterations`` argument is a maximum that bounds the worst case
(``bench/solver_speed.py`` reports iterations and times on hard inputs). The answers match
exact float64 references in direction to 1e-5 and in norm to 1e-4 except where float32 itself
cannot resolve them: ill-conditioned Gram matrices lose about ``eps * condition`` in the methods
that invert them (Aligned-MTL, IMTL-G, UPGrad's ridge), see ``tests/weighting/test_solvers.py``.

Only ``keras.ops`` is used, with a static T, so the solvers trace inside ``tf.function`` (also
in a ``tf.distribute`` replica context) and ``jax.jit``. The private ``_*_solve`` helpers also
return the iterations used.
"""

from __future__ import annotations

import operator

from keras import ops

# Guards divisions by quantities that are O(1) once the Gram matrix is normalised (below).
_EPS = 1e-12
# Guards the normalisation itself, so an all-zero Gram matrix stays all zero.
_TINY = 1e-30
_FLOAT32_EPS = 1.1920929e-07
# Floors of the certificates: the float32 rounding of ``(M w)_i``, relative to the size of its
# terms ``|g_i| sum_j w_j |g_j|``. Slopes that must all meet one value (MGDA, CAGrad) take the
# worst case of a sum of T terms, ``max(16, T) eps`` (``_rounding``); UPGrad's one-sided
# conditions and MGDA's test for d = 0 take a tighter floor, as their errors average out (at
# 16 eps UPGrad stops at 1e-3 relative error on rank-deficient Gram matrices, and MGDA at
# |d| = 1e-3 |g| where d* = 0).
_ROUNDING_TIGHT = 2 * _FLOAT32_EPS
# Certificates of the iterative solvers, relative to the scale of their answers (see each).
_MGDA_TOLERANCE = 1e-6
_UPGRAD_TOLERANCE = 1e-6
_CAGRAD_TOLERANCE = 1e-6
_NASH_TOLERANCE = 1e-4
# Default maxima: never reached on well-posed inputs, they bound the cost on degenerate ones.
_MGDA_ITERATIONS = 2000
_UPGRAD_ITERATIONS = 2000
_CAGRAD_ITERATIONS = 2000
_NASH_ITERATIONS = 30
# Nash-MTL weights (in units of the normalised Gram matrix) stop here: beyond, a task's
# gradient is too small to be balanced in float32.
_NASH_MAX = 1e6
# Projected-gradient steps per convergence test (see _accelerated_projected_gradient), and
# conjugate-gradient steps per polish of a bounded QP (see _bounded_qp).
_UNROLL = 4
_CG_STEPS = 12


def _rounding(num_tasks: int) -> float:
    return max(16, num_tasks) * _FLOAT32_EPS


def _as_gram(gram):
    gram = ops.cast(ops.convert_to_tensor(gram), "float32")
    if len(gram.shape) != 2 or gram.shape[0] is None or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be a (T, T) matrix with a static T, got shape {gram.shape}.")
    return gram, int(gram.shape[0])


def _symmetric(matrix):
    # eigh reads one triangle; a Gram matrix from a float32 matmul is symmetric only up to rounding.
    return (matrix + ops.transpose(matrix)) / 2.0


def _problem(gram, present=None):
    """The Gram matrix restricted to the present tasks, normalised: ``(M, T, mask, count, scale)``.

    ``M`` is zero in the rows and columns of absent tasks and divided by ``scale``, the mean
    squared gradient norm of the present tasks. All the methods are invariant to a common
    rescaling of the gradients (Nash-MTL rescales its answer back), and working on an O(1)
    matrix keeps float32 step sizes and epsilons meaningful whatever the loss scale.
    """
    gram, num_tasks = _as_gram(gram)
    if present is None:  # every task: a static count, and nothing to mask
        mask, count = ops.ones((num_tasks,), dtype="float32"), float(num_tasks)
    else:
        mask = ops.cast(ops.convert_to_tensor(present), "float32")
        if tuple(mask.shape) != (num_tasks,):
            raise ValueError(f"present must have shape ({num_tasks},) like the tasks, got {tuple(mask.shape)}.")
        mask = ops.cast(mask > 0, "float32")
        gram = gram * mask[:, None] * mask[None, :]
        count = ops.sum(mask)
    scale = ops.maximum(ops.sum(ops.diagonal(gram)), 0.0) / ops.maximum(count, 1.0)
    return gram / (scale + _TINY), num_tasks, mask, count, scale


def _norms(matrix):
    return ops.sqrt(ops.maximum(ops.diagonal(matrix), 0.0))


def _eigenvalue_bound(matrix):
    # The largest absolute row sum bounds the spectral radius (Gershgorin) and needs no eigh.
    return ops.max(ops.sum(ops.abs(matrix), axis=-1)) + _EPS


def _jacobi(matrix, centre=None):
    """Diagonal preconditioner ``D`` and the Lipschitz bound in its metric.

    ``D`` holds the squared gradient norms, with 1 for zero gradients (whose coordinates have
    no curvature); gradient steps measured in the metric ``D`` see the correlation matrix
    ``D^-1/2 M D^-1/2``, whose largest eigenvalue is at most T (Gershgorin), whatever the
    spread of the gradient norms. For a problem on the simplex, ``centre`` (see
    ``_simplex_centre``) offers a second bound, of ``M - centre 11^T``; the smaller one is used.
    """
    diagonal = ops.maximum(ops.diagonal(matrix), 0.0)
    metric = ops.where(diagonal > _EPS, diagonal, ops.ones_like(diagonal))
    root = ops.sqrt(metric)
    outer = root[:, None] * root[None, :]
    bound = _eigenvalue_bound(matrix / outer)
    if centre is not None:
        present = ops.cast(diagonal > 0, "float32")
        centred = matrix - centre * present[:, None] * present[None, :]
        bound = ops.minimum(bound, _eigenvalue_bound(centred / outer))
    return metric, bound


def _accelerated_projected_gradient(x0, step, project, metric, converged, iterations, polish=None):
    """FISTA (Beck & Teboulle 2009) with gradient-based adaptive restart (O'Donoghue & Candes 2015).

    ``step(y)`` returns ``(gradient, curvature)``: the gradient of the objective at ``y`` and the
    diagonal ``D L`` of the (Jacobi) metric times the Lipschitz bound in it, so the update is
    ``project(y - gradient / curvature)``; ``project`` maps onto the feasible set in the metric
    ``D`` (``metric``, the diagonal). The last axis of ``x0`` holds one problem's variables,
    leading axes independent problems, each with its own momentum. The restart keeps
    convergence linear on strongly convex problems, where plain FISTA oscillates.

    ``converged(x)`` (a boolean scalar: a certificate of optimality for every problem) is
    tested on the start and after every ``_UNROLL`` steps (a while-loop iteration costs about
    as much as a step on small problems); the loop stops there, when a block of steps left
    ``x`` where it was to float32 precision (a fixed point of the projected-gradient map:
    optimal as far as float32 can tell), or after ``iterations`` steps rounded up to a
    multiple of ``_UNROLL``. ``polish(x)``, if given, returns ``(candidate, better)`` after each
    block: a point that may finish the problem in one go (see ``_bounded_qp``), taken, with a
    momentum restart, by the problems where ``better``. Returns ``x`` and the steps taken (int32).
    """

    def fista(x_prev, y, t):
        gradient, curvature = step(y)
        x = project(y - gradient / curvature)
        restart = ops.sum(metric * (y - x) * (x - x_prev), axis=-1, keepdims=True) > 0
        t_next = ops.where(restart, ops.ones_like(t), (1.0 + ops.sqrt(1.0 + 4.0 * t * t)) / 2.0)
        beta = ops.where(restart, ops.zeros_like(t), (t - 1.0) / t_next)
        return x, x + beta * (x - x_prev), t_next

    def cond(x, y, t, done, used):
        return ops.logical_not(done)

    def body(x, y, t, done, used):
        start = x
        for _ in range(_UNROLL):
            x, y, t = fista(x, y, t)
        if polish is not None:
            candidate, better = polish(x)
            x = ops.where(better, candidate, x)
            y = ops.where(better, candidate, y)
            t = ops.where(better, ops.ones_like(t), t)
        still = ops.all(ops.abs(x - start) <= _FLOAT32_EPS * ops.max(ops.abs(x), axis=-1, keepdims=True))
        return x, y, t, ops.logical_or(converged(x), still), used + _UNROLL

    t0 = ops.ones(tuple(x0.shape[:-1]) + (1,), dtype="float32")
    blocks = -(-operator.index(iterations) // _UNROLL)
    state = (x0, x0, t0, converged(x0), ops.convert_to_tensor(0, dtype="int32"))
    x, _, _, _, used = ops.while_loop(cond, body, state, maximum_iterations=blocks) if blocks else state
    return x, used


def _conjugate_gradients(gram, x, residual, free, metric):
    """``_CG_STEPS`` Jacobi-preconditioned conjugate-gradient steps on ``M x = b`` restricted to
    the variables where ``free`` is 1 (the others held), for each row, from ``x`` with its
    residual ``b - M x`` (zero outside ``free``). Only products with M: nothing to raise on a
    singular face, where the steps stop once the residual vanishes."""
    preconditioned = residual / metric
    direction = preconditioned
    product = ops.sum(residual * preconditioned, axis=-1, keepdims=True)
    for _ in range(min(int(x.shape[-1]), _CG_STEPS)):
        image = free * ops.matmul(direction, gram)
        along = ops.sum(direction * image, axis=-1, keepdims=True)
        size = ops.where(along > _TINY, product / ops.maximum(along, _TINY), 0.0)
        x = x + size * direction
        residual = residual - size * image
        preconditioned = residual / metric
        updated = ops.sum(residual * preconditioned, axis=-1, keepdims=True)
        direction = preconditioned + ops.where(product > _TINY, updated / ops.maximum(product, _TINY), 0.0) * direction
        product = updated
    return x


def _bounded_qp(gram, linear, lower, x0, converged, iterations):
    """``argmin_x x^T M x / 2 - linear . x`` subject to ``x >= lower``, for each row of ``x0``.

    Jacobi-preconditioned accelerated projected gradient (a bound is a clip in any diagonal
    metric) identifies which bounds are active; after every block of steps, conjugate
    gradients on the free variables (``x > lower``), the active ones held, solve the equality
    problem of that face (the classic pairing of projected gradients and CG for bound
    constraints, Moré & Toraldo 1991), so once the face is right the answer is exact in a few
    steps instead of converging linearly. The CG point is clipped to the bounds and kept where
    it lowers the objective.
    """
    metric, lipschitz = _jacobi(gram)
    curvature = metric * lipschitz

    def objective(x):
        return ops.sum(x * (0.5 * ops.matmul(x, gram) - linear), axis=-1, keepdims=True)

    def polish(x):
        free = ops.cast(x > lower, "float32")
        candidate = _conjugate_gradients(gram, x, free * (linear - ops.matmul(x, gram)), free, metric)
        candidate = ops.maximum(candidate, lower)
        return candidate, objective(candidate) < objective(x)

    return _accelerated_projected_gradient(
        x0, lambda x: (ops.matmul(x, gram) - linear, curvature), lambda x: ops.maximum(x, lower), metric,
        converged, iterations, polish)


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


def _project_to_simplex_in_metric(v, metric, mask):
    """The point of the simplex over the present tasks nearest to ``v`` in the norm
    ``sum_i D_i x_i^2`` (D = ``metric``).

    Its entries are ``max(v_i - theta / D_i, 0)``; with entries sorted by ``v_i D_i``, the
    same maximum-of-thresholds argument as in ``project_to_simplex`` gives theta. Absent
    tasks enter as ``-1e30``, sorted last, so they never join the support.
    """
    spread = 1.0 / metric
    v = ops.where(mask > 0, v, -1e30)
    order = ops.argsort(-v * metric)
    sums = ops.cumsum(ops.take(v, order)) - 1.0
    theta = ops.max(sums / ops.cumsum(ops.take(spread, order)))
    return ops.maximum(v - theta * spread, 0.0) * mask


def _zero_gradients(norms, mask):
    """The present tasks whose gradient is zero (float32 0/1) and whether there is one."""
    zero = mask * ops.cast(norms <= _EPS, "float32")
    return zero, ops.sum(zero) > 0


def _zero_iterations():
    return ops.convert_to_tensor(0, dtype="int32")


def _few_tasks(count, weights, mask):
    """``weights`` (a closed form for two present tasks) where two are present, else the
    present task's unit weight (or nothing)."""
    if isinstance(count, float):
        return weights if count > 1.5 else mask
    return ops.where(count > 1.5, weights, mask)


def min_norm_weights(gram, present=None, iterations=_MGDA_ITERATIONS):
    """MGDA (Sener & Koltun, NeurIPS 2018, Alg. 2's problem): the simplex point minimising
    ``w^T M w``, so ``d`` is the min-norm element of the convex hull of the task gradients.

    T=2 uses the paper's closed form (its Alg. 1). Otherwise Jacobi-preconditioned accelerated
    projected gradient on the simplex runs from the uniform weights, its step bounded by the
    curvature along the simplex (``_simplex_centre``: nearly parallel gradients would otherwise
    take thousands of steps), each block finished by the exact minimiser of the current face,
    until the Frank-Wolfe duality gap ``w^T M w - min_i (M w)_i`` (which bounds ``|d|^2 -
    |d*|^2``, and hence ``|d - d*|^2``) is at most ``_MGDA_TOLERANCE |d|^2`` plus float32
    rounding, or ``|d|`` is 0 to float32 precision.
    """
    return _min_norm_solve(gram, present, iterations)[0]


def _min_norm_solve(gram, present=None, iterations=_MGDA_ITERATIONS):
    """``min_norm_weights`` and the iterations it used (0 for the closed forms)."""
    gram, num_tasks, mask, count, _ = _problem(gram, present)
    if num_tasks == 1:
        return mask, _zero_iterations()
    if num_tasks == 2:
        # gamma minimises |gamma g_1 + (1 - gamma) g_2|^2; the eps terms give 1/2 for identical gradients.
        numerator = gram[1, 1] - gram[0, 1]
        denominator = gram[0, 0] + gram[1, 1] - 2.0 * gram[0, 1]
        gamma = ops.clip((numerator + 0.5 * _EPS) / (ops.maximum(denominator, 0.0) + _EPS), 0.0, 1.0)
        return _few_tasks(count, ops.stack([gamma, 1.0 - gamma]), mask), _zero_iterations()
    norms = _norms(gram)
    # A present task with a zero gradient puts 0 in the hull: d = 0, the weight on that task.
    zero, has_zero = _zero_gradients(norms, mask)
    metric, lipschitz = _jacobi(gram, _simplex_centre(gram, mask))

    def objective(w):
        return ops.sum(w * ops.matmul(gram, w))

    def converged(w):
        # Every present task's slope (M w)_i is at least w^T M w, up to the tolerance and the
        # float32 rounding of that slope's terms, |g_i| sum_j w_j |g_j|. Or |d|^2 = w^T M w is
        # itself below the rounding: |d - d*|^2 <= |d|^2 - |d*|^2, so d = 0 to float32 precision.
        slopes = ops.matmul(gram, w)
        value = ops.sum(w * slopes)
        size = ops.sum(w * norms)
        slack = value - slopes - _MGDA_TOLERANCE * value - _rounding(num_tasks) * norms * size
        optimal = ops.all(ops.logical_or(slack <= 0, mask == 0))
        return ops.logical_or(ops.logical_or(has_zero, optimal), value <= _ROUNDING_TIGHT * size * size)

    def polish(w):
        # On the face of w's support S the minimiser is M_SS^-1 1, normalised (its KKT conditions).
        free = mask * ops.cast(w > 0, "float32")
        a = _conjugate_gradients(gram, ops.zeros_like(w), free, free, metric)
        candidate = ops.maximum(a, 0.0) * free
        candidate = candidate / ops.maximum(ops.sum(candidate), _TINY)
        return candidate, ops.logical_and(ops.sum(a) > 0, objective(candidate) < objective(w))

    w, used = _accelerated_projected_gradient(
        mask / ops.maximum(count, 1.0), lambda w: (ops.matmul(gram, w), metric * lipschitz),
        lambda w: _project_to_simplex_in_metric(w, metric, mask), metric, converged, iterations, polish)
    return ops.where(has_zero, zero / ops.maximum(ops.sum(zero), 1.0), w), used


def _simplex_centre(gram, mask):
    """A multiple c of the all-ones matrix to take out of M when bounding its curvature on the
    simplex: ``w^T (M - c 11^T) w = w^T M w - c`` there, so the two have the same minimiser
    and the same curvature along the simplex, and nearly parallel gradients (every entry of M
    close to ``|g|^2``) leave a far smaller bound with c = the smallest entry (if positive)."""
    smallest = ops.min(ops.where(mask[:, None] * mask[None, :] > 0, gram, float("inf")))
    return ops.where(ops.isfinite(smallest), ops.maximum(smallest, 0.0), 0.0)


def pcgrad_weights(gram, orders, present=None):
    """PCGrad (Yu et al., NeurIPS 2020, Alg. 1): project each gradient off the ones it
    conflicts with.

    ``orders[i]`` (int, ``(T, T)``) is the order in which task i's gradient is projected against
    the others (entries equal to i are skipped). For each task, ``g_i'`` starts at ``g_i`` and,
    for each j in turn, loses its component along ``g_j`` when ``g_i' . g_j < 0``. Returns the
    weights of ``sum_i g_i'`` (the paper sums; some implementations average). ``g_i'`` is kept
    as row i of a coefficient matrix C, so that ``g_i' . g_j = (C M)[i, j]``; all tasks are
    projected at once. An absent task's zero gradient conflicts with nothing.
    """
    gram, num_tasks, mask, _, _ = _problem(gram, present)
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
    weights = ops.sum(coefficients, axis=0)
    return weights if present is None else weights * mask


def cagrad_weights(gram, c=0.4, present=None, iterations=_CAGRAD_ITERATIONS):
    """CAGrad (Liu et al., NeurIPS 2021): the best worst-case improvement near the mean gradient.

    With ``g0`` the mean gradient of the present tasks, ``w`` minimises the dual of the paper's
    problem (its Alg. 1), ``F(w) = w^T M 1/T + sqrt(phi) |g_w|`` on the simplex, ``phi = c^2
    |g0|^2``, and ``d = (g0 + sqrt(phi) / |g_w| g_w) / (1 + c^2)``: Alg. 1's update divided by
    ``1 + c^2``, the official code's default rescaling (``rescale=1``; TorchJD does not rescale). T=2 is a 1-D problem solved
    exactly (``_cagrad_two_tasks``). Otherwise the (Jacobi-preconditioned) accelerated
    projected-gradient solver, with the local Lipschitz bound ``sqrt(phi) lambda_max / |g_w|``
    (F's curvature grows as ``|g_w|`` shrinks), each block finished by the exact minimiser of F
    on the current face, runs until the gap between ``F(w)`` and the primal value ``min_i g_i .
    d(w)`` (which ``F`` bounds from above) is at most ``_CAGRAD_TOLERANCE |g0| (|g0| +
    sqrt(phi))`` plus float32 rounding. Where F's minimum has ``g_w = 0`` (0 in the hull of the
    gradients) d is not unique and the paper leaves the update undefined (the official code
    divides by ``|g_w| + 1e-8``, TorchJD returns no update); the solver returns the optimal
    direction nearest ``g0`` (see ``degenerate`` below).
    """
    return _cagrad_solve(gram, c, present, iterations)[0]


def _cagrad_two_tasks(gram, mean_dots, radius):
    """The minimiser of CAGrad's ``F`` over ``w = (gamma, 1 - gamma)``, in closed form.

    With ``u = a gamma + b`` (``a = |g_1 - g_2|^2``, ``b = g_2 . (g_1 - g_2)``), ``|g_w|^2 =
    (u^2 + h) / a`` where ``h = det M``, and ``F = s gamma + radius |g_w|`` up to a constant,
    ``s = (M 1/T)_1 - (M 1/T)_2``. ``F`` is convex in gamma with ``dF/dgamma = s + radius
    sqrt(a) u / sqrt(u^2 + h)``. If ``s^2 < radius^2 a`` it vanishes at ``u = -s sqrt(h /
    (radius^2 a - s^2))`` (the kink ``u = 0`` for collinear gradients, ``h = 0``); otherwise
    ``F`` is monotone and its minimum is the end the sign of s points to.
    """
    a = ops.maximum(gram[0, 0] + gram[1, 1] - 2.0 * gram[0, 1], 0.0)
    b = gram[0, 1] - gram[1, 1]
    h = ops.maximum(gram[0, 0] * gram[1, 1] - gram[0, 1] * gram[0, 1], 0.0)
    s = mean_dots[0] - mean_dots[1]
    room = radius * radius * a - s * s
    u = -s * ops.sqrt(h) / ops.sqrt(ops.maximum(room, _TINY))
    inside = ops.clip((u - b) / (a + _EPS), 0.0, 1.0)
    gamma = ops.where(room > 0, inside, ops.where(s > 0, 0.0, 1.0))
    return ops.stack([gamma, 1.0 - gamma])


def _cagrad_solve(gram, c=0.4, present=None, iterations=_CAGRAD_ITERATIONS):
    """``cagrad_weights`` and the iterations it used (0 for T=2)."""
    gram, num_tasks, mask, count, _ = _problem(gram, present)
    share = mask / ops.maximum(count, 1.0)  # g0 = share @ G
    mean_dots = ops.matmul(gram, share)  # g_i . g0
    mean_norm = ops.sqrt(ops.maximum(ops.sum(share * mean_dots), 0.0))  # |g0|
    radius = c * mean_norm  # sqrt(phi)

    def norm_of(w):
        return ops.sqrt(ops.maximum(ops.sum(w * ops.matmul(gram, w)), 0.0) + _EPS)

    def combine(w):
        return share + radius / norm_of(w) * w

    if num_tasks <= 2:
        w = mask if num_tasks == 1 else _few_tasks(count, _cagrad_two_tasks(gram, mean_dots, radius), mask)
        return combine(w) / (1.0 + c * c), _zero_iterations()
    metric, bound = _jacobi(gram)
    norms = _norms(gram)
    _, has_zero = _zero_gradients(norms, mask)
    scale = mean_norm * (mean_norm + radius)

    def step(w):
        norm = norm_of(w)
        gradient = mean_dots + radius * ops.matmul(gram, w) / norm
        return gradient, metric * (radius * bound / norm + _EPS)

    def objective(w):  # F(w)
        return ops.sum(w * mean_dots) + radius * norm_of(w)

    def certified(w):
        # F(w) bounds every task's improvement g_i . d(w) from above, with equality at the
        # optimum; the slack of each task is allowed its own float32 rounding.
        norm = norm_of(w)
        improvements = mean_dots + radius * ops.matmul(gram, w) / norm
        rounding = norms * (ops.sum(share * norms) + radius * ops.sum(w * norms) / norm)
        slack = objective(w) - improvements - _CAGRAD_TOLERANCE * scale - _rounding(num_tasks) * rounding
        return ops.all(ops.logical_or(slack <= 0, mask == 0))

    def polish(w):
        # On the face of w's support S, F's stationarity (mean_dots + radius M w / |g_w| = F* on
        # S) makes q = w / |g_w| affine in F*: q = (F* a - b) / radius with M_SS a = 1 and
        # M_SS b = mean_dots_S, and q^T M q = 1 is a quadratic in F*; of its roots, the one with
        # the lower F is the face's minimiser.
        free = mask * ops.cast(w > 0, "float32")
        rhs = ops.stack([free, free * mean_dots])
        a, b = ops.unstack(_conjugate_gradients(gram, ops.zeros_like(rhs), rhs, free, metric))
        sum_a, sum_b, dot_b = ops.sum(a), ops.sum(b), ops.sum(b * mean_dots)
        root = ops.sqrt(ops.maximum(sum_b * sum_b - sum_a * (dot_b - radius * radius), 0.0))
        best, lowest = w, objective(w)
        for sign in (-1.0, 1.0):
            q = ops.maximum((sum_b + sign * root) / ops.maximum(sum_a, _TINY) * a - b, 0.0) * free
            candidate = q / ops.maximum(ops.sum(q), _TINY)
            value = ops.where(ops.sum(q) > 0, objective(candidate), float("inf"))
            better = value < lowest
            best, lowest = ops.where(better, candidate, best), ops.where(better, value, lowest)
        return best, lowest < objective(w)

    def at_kink(w):
        # g_w = 0 to float32 precision (or a zero gradient: F = 0 on its vertex): 0 is in the
        # hull, and g_w / |g_w| would be rounding noise.
        tiny = ops.sum(w * ops.matmul(gram, w)) <= _rounding(num_tasks) * ops.square(ops.sum(w * norms))
        return ops.logical_or(has_zero, tiny)

    def solve(stop):
        return _accelerated_projected_gradient(
            share, step, lambda w: _project_to_simplex_in_metric(w, metric, mask), metric, stop, iterations, polish)

    w, used = solve(lambda w: ops.logical_or(certified(w), at_kink(w)))

    def degenerate():
        # F's minimum is at g_w = 0 exactly when g0 is within the radius of the dual cone
        # {d : g_i . d >= 0}: every direction there within the ball is optimal (F* = 0), and
        # the one nearest g0 is g0's projection onto the cone. Otherwise the kink was only on
        # the way, and the solve goes on without stopping there.
        v, more = _project_on_dual_cone(gram, share[None, :], iterations)
        moved = v[0] - share
        inside = ops.sum(moved * ops.matmul(gram, moved)) <= ops.square(radius) * (1.0 + _CAGRAD_TOLERANCE)
        return ops.cond(inside, lambda: (v[0], used + more), lambda: resume(used + more))

    def resume(spent):
        w, more = solve(certified)
        return combine(w), spent + more

    weights, used = ops.cond(at_kink(w), degenerate, lambda: (combine(w), used))
    return weights / (1.0 + c * c), used


def _symmetric_pseudo_inverse(matrix, rank_size):
    """``matrix^+`` for a symmetric PSD matrix, through eigh, dropping eigenvalues below
    ``lambda_max * rank_size * float32_eps`` (float32 rounding, as in Aligned-MTL's rank rule)."""
    values, vectors = ops.linalg.eigh(_symmetric(matrix))
    keep = values > ops.maximum(ops.max(values), 0.0) * rank_size * _FLOAT32_EPS + _TINY
    inverse = ops.where(keep, 1.0 / ops.where(keep, values, 1.0), 0.0)
    return ops.matmul(vectors * inverse[None, :], ops.transpose(vectors))


def imtl_g_weights(gram, present=None):
    """IMTL-G (Liu et al., ICLR 2021): ``d`` has equal projections on all unit task gradients.

    The paper's closed form (``alpha_{2..T} = g_1 U^T (D U^T)^-1``, ``alpha_1 = 1 -
    sum``) is, for linearly independent gradients, ``alpha = M^-1 n / (1^T M^-1 n)`` with ``n``
    the gradient norms: ``(M alpha)_i / n_i`` is the projection of ``d`` on ``u_i``, the same for
    every task. It is computed as ``N^-1 C^+ 1`` normalised, with ``C`` the correlation matrix
    (``M = N C N``, ``N = diag(n)``), so gradient norms spread over orders of magnitude cost no
    precision. A zero gradient (or an absent task) has a zero row in ``C`` and gets weight 0
    while the others are balanced among themselves; linearly dependent gradients get the
    least-squares (pseudo-inverse) solution, as in TorchJD's generalisation. If the weights sum
    to about zero (no direction projects positively on every task), they are all 0.
    """
    gram, num_tasks, mask, _, _ = _problem(gram, present)
    norms = _norms(gram)
    nonzero = norms > _EPS
    inverse_norms = ops.where(nonzero, 1.0 / ops.where(nonzero, norms, 1.0), 0.0)
    correlation = gram * inverse_norms[:, None] * inverse_norms[None, :]
    units = ops.cast(nonzero, "float32")
    pseudo = _symmetric_pseudo_inverse(correlation, num_tasks)

    def solve(rhs):
        return ops.matmul(pseudo, rhs)

    x = solve(units)
    # One step of iterative refinement: eigh in float32 alone loses digits on these systems.
    x = x + solve(units - ops.matmul(correlation, x))
    alpha = x * inverse_norms
    total = ops.sum(alpha)
    ok = ops.abs(total) > _EPS * ops.sum(ops.abs(alpha)) + _TINY
    return ops.where(ok, alpha / ops.where(ok, total, 1.0), ops.zeros_like(alpha))


def aligned_mtl_weights(gram, present=None):
    """Aligned-MTL (Senushkin et al., CVPR 2023, Alg. 1): align the gradients by a Procrustes
    rotation.

    With ``M = V diag(lambda) V^T``, ``B = sqrt(lambda_min) V diag(1/sqrt(lambda)) V^T`` over the
    eigenpairs above ``max(lambda) T eps`` (the rank tolerance of the official code, T the
    present tasks), so the aligned gradients ``B G`` are orthogonal with equal norms (``B M B =
    lambda_min I`` on the kept subspace). ``d`` is their sum, ``w = B 1``: T times the update
    with the paper's uniform preference ``B 1 / T`` (TorchJD's default), the sum matching the
    scale of unitary scalarization. The rank cut is a mask, not a slice, so the shapes stay
    static under jit. ``lambda_min`` is the smallest kept eigenvalue of a float32 matrix, so its
    relative error is about ``T eps lambda_max / lambda_min``. An all-zero M gives zero weights.
    """
    gram, _, mask, count, _ = _problem(gram, present)
    eigenvalues, eigenvectors = ops.linalg.eigh(_symmetric(gram))
    largest = ops.max(eigenvalues)
    keep = eigenvalues > ops.maximum(largest, 0.0) * count * _FLOAT32_EPS + _TINY
    safe = ops.where(keep, eigenvalues, ops.ones_like(eigenvalues))
    smallest = ops.min(ops.where(keep, eigenvalues, ops.full_like(eigenvalues, largest)))
    smallest = ops.where(ops.any(keep), smallest, 0.0)
    scales = ops.where(keep, ops.sqrt(smallest) / ops.sqrt(safe), ops.zeros_like(eigenvalues))
    alignment = ops.matmul(eigenvectors * scales[None, :], ops.transpose(eigenvectors))
    return ops.sum(alignment, axis=1) * mask


def nash_mtl_weights(gram, present=None, iterations=_NASH_ITERATIONS):
    """Nash-MTL (Navon et al., ICML 2022, Alg. 1): the Nash bargaining solution ``M alpha = 1/alpha``.

    On the raw Gram matrix, as the paper and the official code (whose normalisation by
    ``|M|_F`` cancels in its constraints) solve it, so ``|d|^2 = alpha^T M alpha = T`` whatever
    the scale of the gradients; ``clip_norm`` applies the official code's ``max_norm``. It is
    solved on the normalised M (mean squared norm 1) and rescaled: ``alpha`` scales as one over
    the gradient norm. The positive solution minimises the strictly convex, self-concordant
    ``f(a) = a^T M a / 2 - sum log a_i``, found by at most ``iterations`` damped Newton steps
    from ``a_i = 1 / |g_i|`` (Hessian ``M + diag(1/a^2)``). While the Newton decrement is at
    least 1/4 the step size is the best of a fixed ladder (``2^-10 .. 8``, the classical ``1/(1
    + decrement)`` and 0) that keeps ``a > 0``; below it, full steps, which stay inside the Dikin
    ellipsoid and converge quadratically: the loop stops after the full step taken from a
    decrement below ``_NASH_TOLERANCE``, which leaves one of about its square. A present task
    that cannot be balanced (a zero gradient, or one exactly opposed to another) has no finite
    solution; its weight grows until it stops at ``_NASH_MAX`` (normalised units). Absent tasks
    get a decoupled unit row, so the others solve their own sub-problem, and weight 0.
    """
    return _nash_mtl_solve(gram, present, iterations)[0]


def _nash_mtl_solve(gram, present=None, iterations=_NASH_ITERATIONS):
    """``nash_mtl_weights`` and the Newton steps it took."""
    gram, num_tasks, mask, _, scale = _problem(gram, present)
    gram = _symmetric(gram) + ops.diag(1.0 - mask)
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

    diagonal = ops.diagonal(gram)
    start = ops.where(diagonal > _EPS, 1.0 / ops.sqrt(ops.maximum(diagonal, _EPS)), 1.0)
    state = (start, ops.convert_to_tensor(float("inf"), dtype="float32"), _zero_iterations())
    alpha, _, used = ops.while_loop(cond, body, state, maximum_iterations=iterations)
    return alpha * mask / ops.sqrt(scale + _TINY), used


def clip_norm(weights, gram, max_norm):
    """``weights`` scaled down so that ``|d| = sqrt(w^T M w)`` is at most ``max_norm`` (0: no
    clip), as ``torch.nn.utils.clip_grad_norm_`` does to the combined update in Nash-MTL's
    official code."""
    if not max_norm:
        return weights
    gram, _ = _as_gram(gram)
    norm = ops.sqrt(ops.maximum(ops.sum(weights * ops.matmul(gram, weights)), 0.0))
    return weights * ops.minimum(1.0, max_norm / ops.maximum(norm, _TINY))


def upgrad_weights(gram, reg=1e-4, present=None, iterations=_UPGRAD_ITERATIONS):
    """UPGrad (Quinton & Layne 2024, Eq. 3 and Prop. 1; TorchJD): the average of the gradients
    each projected onto the dual cone of all of them.

    M is divided by its trace and regularised by ``reg I`` (TorchJD's defaults). For each
    present task i, ``v_i = argmin_v v^T M v`` subject to ``v >= e_i / T`` are the weights of the
    projection of ``g_i / T`` onto the dual cone ``{d : d . g_j >= 0 for all j}``; ``w = sum_i
    v_i``, so ``d`` conflicts with no task and is the mean gradient when no two gradients
    conflict (T counts the present tasks). The T box-constrained QPs are solved together, as
    the rows of a (T, T) matrix (``_project_on_dual_cone``). T=2 has a closed form: for task i,
    ``v_i = 1/2`` and ``v_j = max(0, -M_ij / (2 M_jj))``.
    """
    return _upgrad_solve(gram, reg, present, iterations)[0]


def _upgrad_solve(gram, reg=1e-4, present=None, iterations=_UPGRAD_ITERATIONS):
    """``upgrad_weights`` and the iterations it used (0 for T <= 2)."""
    gram, num_tasks, mask, count, _ = _problem(gram, present)
    gram = gram / ops.maximum(count, 1.0) + reg * ops.eye(num_tasks, dtype="float32")
    if num_tasks == 1:
        return mask, _zero_iterations()
    if num_tasks == 2:
        # Task j's bound is active (v_j > 1/2 would need (M v)_j = 0, so v = 0), and its other
        # weight v_i minimises the 1-D quadratic over v_i >= 0: w_i = 1/2 + max(0, -M_ij / (2 M_ii)).
        # M_ii = 0 (a zero gradient without the ridge) has M_ij = 0, and gets 1/2.
        diagonal = ops.maximum(ops.diagonal(gram), 0.0)
        weights = 0.5 + ops.maximum(-gram[0, 1] / (2.0 * diagonal + _EPS), 0.0)
        return _few_tasks(count, weights, mask), _zero_iterations()
    solution, used = _project_on_dual_cone(gram, ops.diag(mask) / ops.maximum(count, 1.0), iterations)
    return ops.sum(solution, axis=0) * mask, used


def _project_on_dual_cone(gram, lower, iterations):
    """The weights of the projections of ``lower @ G`` (one row per problem) onto the dual cone
    ``{d : G d >= 0}``, and the iterations used.

    Row i is ``argmin_v v^T M v`` subject to ``v >= lower_i`` (Quinton & Layne 2024, Prop. 1),
    solved from ``lower`` by ``_bounded_qp`` until every row's KKT residuals, the violation
    ``max_j -(M v)_j / |g_j|`` of the cone and the complementarity ``(v - lower_i)^T M v``, are
    at most ``_UPGRAD_TOLERANCE`` times ``|lower_i @ G|`` and its square, plus float32 rounding.
    """
    norms = _norms(gram)
    inverse_norms = ops.where(norms > 0, 1.0 / ops.where(norms > 0, norms, 1.0), 0.0)
    targets = ops.sqrt(ops.maximum(ops.sum(ops.matmul(lower, gram) * lower, axis=1), 0.0))

    def converged(v):
        slopes = ops.matmul(v, gram)  # row i: M v_i
        violation = ops.max(ops.maximum(-slopes * inverse_norms[None, :], 0.0), axis=1)
        complementarity = ops.abs(ops.sum((v - lower) * slopes, axis=1))
        rounding = ops.sum(v * norms[None, :], axis=1)  # the size of the terms in (M v)_j / |g_j|
        ok = ops.logical_and(
            violation <= _UPGRAD_TOLERANCE * targets + _ROUNDING_TIGHT * rounding,
            complementarity <= _UPGRAD_TOLERANCE * targets * targets + _ROUNDING_TIGHT * rounding * rounding)
        return ops.all(ok)

    return _bounded_qp(gram, ops.zeros_like(lower), lower, lower, converged, iterations)
