"""Solvers for gradient-combination methods, written on the Gram matrix of the task gradients.

Every function takes ``gram`` (shape ``(T, T)``, ``gram[i, j] = g_i . g_j`` for the per-task
gradients ``g_i`` of the shared parameters) and returns task weights ``w`` (shape ``(T,)``,
float32) such that the method's update direction is ``d = sum_i w_i g_i``. Each method's output
is a linear combination of the task gradients, so the solvers track coefficients instead of
vectors and never see the (possibly huge) gradients themselves.

Only ``keras.ops`` is used, with a static T and fixed iteration counts, so the solvers trace
inside ``tf.function`` (also in a ``tf.distribute`` replica context) and ``jax.jit``.
"""

from __future__ import annotations

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


def _accelerated_projected_gradient(x0, step, project, iterations, metric):
    """FISTA (Beck & Teboulle 2009) with gradient-based adaptive restart (O'Donoghue & Candes 2015).

    ``step(y)`` returns the scaled gradient step ``D^-1 grad f(y) / L`` and ``project`` maps
    onto the feasible set in the metric ``D`` (``metric``, the diagonal). The last axis of
    ``x0`` holds one problem's variables, leading axes independent problems, each with its own
    momentum. The restart keeps convergence linear on strongly convex problems, where plain
    FISTA oscillates.
    """

    def body(_, state):
        x_prev, y, t = state
        x = project(y - step(y))
        restart = ops.sum(metric * (y - x) * (x - x_prev), axis=-1, keepdims=True) > 0
        t_next = ops.where(restart, ops.ones_like(t), (1.0 + ops.sqrt(1.0 + 4.0 * t * t)) / 2.0)
        beta = ops.where(restart, ops.zeros_like(t), (t - 1.0) / t_next)
        return x, x + beta * (x - x_prev), t_next

    t0 = ops.ones(tuple(x0.shape[:-1]) + (1,), dtype="float32")
    x, _, _ = ops.fori_loop(0, iterations, body, (x0, x0, t0))
    return x


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
    L a Gershgorin bound on the largest eigenvalue of the correlation matrix) runs for
    ``iterations`` steps from the uniform weights.
    """
    gram, num_tasks = _normalised(gram)
    if num_tasks == 1:
        return ops.ones((1,), dtype="float32")
    if num_tasks == 2:
        # gamma minimises |gamma g_1 + (1 - gamma) g_2|^2; the eps terms give 1/2 for identical gradients.
        numerator = gram[1, 1] - gram[0, 1]
        denominator = gram[0, 0] + gram[1, 1] - 2.0 * gram[0, 1]
        gamma = ops.clip((numerator + 0.5 * _EPS) / (ops.maximum(denominator, 0.0) + _EPS), 0.0, 1.0)
        return ops.stack([gamma, 1.0 - gamma])
    # The floor keeps the metric finite along zero gradients.
    diagonal, lipschitz = _jacobi(gram, floor=_JACOBI_FLOOR)
    w0 = ops.full((num_tasks,), 1.0 / num_tasks, dtype="float32")
    return _accelerated_projected_gradient(
        w0, lambda w: ops.matmul(gram, w) / (diagonal * lipschitz),
        lambda w: _project_to_simplex_in_metric(w, diagonal), iterations, diagonal)


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
    ``1/L`` with the local bound ``L = sqrt(phi) lambda_max / |g_w|``, for ``iterations`` steps.
    """
    gram, num_tasks = _normalised(gram)
    mean_dots = ops.mean(gram, axis=1)  # M 1/T
    radius = c * ops.sqrt(ops.maximum(ops.mean(gram), 0.0))  # sqrt(phi), as |g0|^2 = 1^T M 1 / T^2
    diagonal, bound = _jacobi(gram, floor=_JACOBI_FLOOR)

    def norm_of(w):
        return ops.sqrt(ops.maximum(ops.sum(w * ops.matmul(gram, w)), 0.0) + _EPS)

    def step(w):
        norm = norm_of(w)
        gradient = mean_dots + radius * ops.matmul(gram, w) / norm
        return gradient / (diagonal * (radius * bound / norm + _EPS))

    w0 = ops.full((num_tasks,), 1.0 / num_tasks, dtype="float32")
    w = _accelerated_projected_gradient(
        w0, step, lambda w: _project_to_simplex_in_metric(w, diagonal), iterations, diagonal)
    return (1.0 / num_tasks + radius / norm_of(w) * w) / (1.0 + c * c)


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
    found by ``iterations`` damped Newton steps from ``a = 1`` (Hessian ``M + diag(1/a^2)``).
    While the Newton decrement is at least 1/4 the step size is the best of a fixed ladder
    (``2^-10 .. 8``, the classical ``1/(1 + decrement)`` and 0) that keeps ``a > 0``; below it,
    full steps, which stay inside the Dikin ellipsoid and converge quadratically. A task that
    cannot be balanced (a zero gradient, or one exactly opposed to another) has no finite
    solution; its weight grows until it stops at 1e6.
    """
    gram, num_tasks = _normalised(gram)  # first to O(1), so the squares below cannot underflow
    gram = gram / (ops.sqrt(ops.sum(gram * gram)) + _EPS)
    gram = (gram + ops.transpose(gram)) / 2.0
    ladder = ops.convert_to_tensor([0.0] + [2.0 ** k for k in range(-10, 4)], dtype="float32")
    identity = ops.eye(num_tasks, dtype="float32")

    def body(_, alpha):
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
        size = ops.where(decrement < 0.25, 1.0, best)
        # The lower clip only matters if rounding pushes a full step across the boundary.
        return ops.clip(alpha + size * direction, 0.01 * alpha, _NASH_MAX)

    return ops.fori_loop(0, iterations, body, ops.ones((num_tasks,), dtype="float32"))


def upgrad_weights(gram, reg=1e-4, iterations=100):
    """UPGrad (Quinton & Layne 2024, as in TorchJD): average of gradients projected on the dual cone.

    M is divided by its trace and regularised by ``reg I``. For each task i, ``v_i = argmin_v
    v^T M v`` subject to ``v >= e_i / T`` are the weights of the projection of ``g_i / T`` onto
    the dual cone ``{d : d . g_j >= 0 for all j}``; ``w = sum_i v_i``, so ``d`` conflicts with no
    task and is the mean gradient when no two gradients conflict. The T box-constrained QPs are
    solved together, as the rows of a (T, T) matrix, by ``iterations`` Jacobi-preconditioned
    accelerated projected-gradient steps from ``V = I / T`` (a box projection stays a clip in
    any diagonal metric).
    """
    gram, num_tasks = _normalised(gram)
    gram = gram / num_tasks + reg * ops.eye(num_tasks, dtype="float32")
    lower = ops.eye(num_tasks, dtype="float32") / num_tasks
    # The floor keeps the metric positive along zero gradients when reg is 0.
    diagonal, lipschitz = _jacobi(gram, floor=_JACOBI_FLOOR / num_tasks)
    # Rows are the problems: the gradient of v^T M v for every row at once is 2 V M, and L = 2 lambda_max.
    solution = _accelerated_projected_gradient(
        lower, lambda v: ops.matmul(v, gram) / (diagonal * lipschitz), lambda v: ops.maximum(v, lower),
        iterations, diagonal)
    return ops.sum(solution, axis=0)
