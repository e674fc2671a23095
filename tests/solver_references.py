"""Exact float64 references for the gradient-combination methods, computed another way.

``mtlzoo.weighting.solvers`` works on the Gram matrix ``M = G G^T`` in float32 with iterative
solvers; every reference here works on the task gradients ``G`` themselves (rows, float64)
with a different, finite or self-certifying algorithm, and returns the update direction
``d`` in parameter space:

- MGDA: Wolfe's (1976) nearest-point algorithm, a combinatorial active-set method on the
  points themselves, certified by ``min_i g_i . d >= |d|^2`` at the end.
- UPGrad: each task's projection onto the dual cone ``{d : G d >= 0}`` as a least-distance
  programme (Lawson & Hanson 1974, ch. 23, through ``scipy.optimize.nnls``), in the primal.
- CAGrad: the primal problem of the paper, ``max_d min_i g_i . d`` subject to
  ``|d - g0| <= c |g0|``, by bisection on the level ``t`` with one least-distance programme
  per level: the paper's dual over the simplex is never formed.
- IMTL-G: the paper's closed form on the vectors (``u_i = g_i / |g_i|``).
- Nash-MTL: the bargaining equation ``M a = 1 / a`` by root finding (``scipy.optimize.root``).
- Aligned-MTL: the SVD of ``G`` (the method uses the eigendecomposition of ``M``).
- PCGrad: the projections on the vectors, in the given orders.

Tasks that are ``absent`` (no labelled example in the batch) take no part: every reference
is computed on the present rows alone, and their directions are those of the sub-problem.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, nnls, root

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def present_rows(grads, present=None):
    grads = np.asarray(grads, dtype=np.float64)
    if present is None:
        return grads
    return grads[np.asarray(present, dtype=bool)]


def min_norm_point(points, tol=1e-13):
    """Wolfe's algorithm: the point of the convex hull of ``points`` (rows) nearest the origin.

    Returns ``(weights, d)`` with ``d = weights @ points``, ``weights`` on the simplex.
    """
    points = np.asarray(points, dtype=np.float64)
    num = len(points)
    scale = max(float(np.max(np.sum(points * points, axis=1))), 1e-300)
    norms = np.sum(points * points, axis=1)
    first = int(np.argmin(norms))
    corral, weights = [first], np.array([1.0])
    for _ in range(50 * num + 50):
        d = weights @ points[corral]
        if d @ d <= tol * scale:
            break
        slopes = points @ d
        j = int(np.argmin(slopes))
        if slopes[j] >= d @ d - tol * scale or j in corral:
            break
        corral.append(j)
        weights = np.append(weights, 0.0)
        while True:  # minor cycle: the affine minimiser of the corral, kept inside the hull
            sub = points[corral]
            k = len(corral)
            system = np.block([[sub @ sub.T, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
            rhs = np.append(np.zeros(k), 1.0)
            affine = np.linalg.lstsq(system, rhs, rcond=None)[0][:k]
            if np.all(affine > 1e-15):
                weights = affine
                break
            shrink = weights - affine
            ratios = np.where(shrink > 0, weights / np.where(shrink > 0, shrink, 1.0), np.inf)
            theta = min(1.0, float(np.min(ratios)))
            weights = weights + theta * (affine - weights)
            keep = weights > 1e-15
            corral = [c for c, k_ in zip(corral, keep) if k_]
            weights = weights[keep] / weights[keep].sum()
    full = np.zeros(num)
    full[corral] = weights
    return full, full @ points


def least_distance(constraints, bounds):
    """Least-distance programming: the shortest ``x`` with ``constraints @ x >= bounds``.

    Lawson & Hanson's reduction to one non-negative least-squares problem. Returns None where
    the constraints are infeasible.
    """
    constraints = np.asarray(constraints, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.float64)
    num_vars = constraints.shape[1]
    lifted = np.vstack([constraints.T, bounds[None, :]])
    target = np.zeros(num_vars + 1)
    target[-1] = 1.0
    u, _ = nnls(lifted, target, maxiter=100 * lifted.shape[1])
    residual = lifted @ u - target
    if residual[-1] >= 0:
        return None
    x = -residual[:num_vars] / residual[-1]
    # Infeasible constraints leave a residual of (rounding-)zero; check the answer instead.
    slack = constraints @ x - bounds
    size = np.abs(constraints).max() * np.abs(x).max() + np.abs(bounds).max()
    return x if slack.min() >= -1e-9 * size else None


def project_on_dual_cone(vector, grads):
    """The projection of ``vector`` onto ``{d : grads @ d >= 0}``."""
    return vector + least_distance(grads, -grads @ vector)


def upgrad_direction(grads, reg=1e-4, present=None):
    """UPGrad's update: the mean of every present task gradient projected onto the dual cone.

    The ridge ``reg`` of the method (on the Gram matrix divided by its trace) is the Gram
    matrix of gradients lifted by ``sqrt(reg)`` times a private unit coordinate each, so the
    lifted problem is the plain projection, solved in the primal.
    """
    grads = present_rows(grads, present)
    num, dims = grads.shape
    scale = np.sqrt(np.sum(grads * grads))
    lifted = np.hstack([grads / scale, np.sqrt(reg) * np.eye(num)])
    total = sum(project_on_dual_cone(lifted[i] / num, lifted) for i in range(num))
    return scale * total[:dims]


def cagrad_direction(grads, c=0.4, present=None, iterations=200):
    """CAGrad's update before the official rescaling: ``argmax_d min_i g_i . d`` over the ball
    ``|d - g0| <= c |g0|``, with ``g0`` the mean of the present gradients.

    For a level t, the distance from g0 to ``{d : G d >= t}`` is a least-distance programme,
    non-decreasing in t; the optimal level is where it reaches the radius, found by bisection.
    """
    grads = present_rows(grads, present)
    g0 = grads.mean(axis=0)
    radius = c * np.linalg.norm(g0)
    base = grads @ g0
    low, high = float(base.min()), float(base.min() + radius * np.linalg.norm(grads, axis=1).max())

    def step(level):
        return least_distance(grads, level - base)

    best = np.zeros_like(g0)
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        x = step(middle)
        if x is not None and np.linalg.norm(x) <= radius:
            low, best = middle, x
        else:
            high = middle
        if high - low <= 1e-15 * max(abs(low), abs(high), 1e-300):
            break
    return g0 + best


def imtl_g_direction(grads, present=None):
    """IMTL-G's update from the paper's closed form on the vectors: ``alpha_{2..T} = g_1 U^T
    (D U^T)^{-1}``, ``alpha_1 = 1 - sum``. Only the present tasks with a non-zero gradient
    take part, and duplicated gradients count once (their weights only ever appear summed)."""
    grads = present_rows(grads, present)
    grads = np.unique(grads[np.linalg.norm(grads, axis=1) > 0], axis=0)
    if len(grads) == 1:
        return grads[0]
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    differences = grads[:1] - grads[1:]
    unit_differences = units[:1] - units[1:]
    rest = grads[0] @ unit_differences.T @ np.linalg.inv(differences @ unit_differences.T)
    alpha = np.concatenate([[1.0 - rest.sum()], rest])
    return alpha @ grads


def nash_weights(grads, present=None):
    """The positive solution of ``M a = 1 / a`` (Nash-MTL's bargaining equation, raw scale).

    Minimises the convex potential ``a^T M a / 2 - sum log a`` in ``x = log a`` with BFGS,
    then polishes ``a * (M a) = 1`` by root finding (``scipy.optimize.root``).
    """
    grads = present_rows(grads, present)
    gram = grads @ grads.T

    def potential(log_alpha):
        alpha = np.exp(log_alpha)
        slopes = gram @ alpha
        return 0.5 * alpha @ slopes - log_alpha.sum(), alpha * slopes - 1.0

    start = -0.5 * np.log(np.maximum(np.diag(gram), 1e-300))
    coarse = minimize(potential, start, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 10000})
    result = root(lambda x: potential(x)[1], coarse.x, method="hybr", options={"xtol": 1e-15})
    alpha = np.exp(result.x)
    residual = np.max(np.abs(alpha * (gram @ alpha) - 1.0))
    if not residual <= 1e-9:  # NaN too: no positive solution
        raise ArithmeticError(f"root finding did not solve M a = 1/a (residual {residual:.2e})")
    return alpha


def aligned_mtl_direction(grads, present=None):
    """Aligned-MTL's update ``(B 1) G`` from the SVD ``G = U S V^T``: ``B = s_min U S^-1 U^T``,
    so ``d = s_min 1^T U V^T``, over the singular values kept by the method's rank rule."""
    grads = present_rows(grads, present)
    left, singular, right = np.linalg.svd(grads, full_matrices=False)
    eigenvalues = singular ** 2
    keep = eigenvalues > eigenvalues.max() * len(grads) * FLOAT32_EPS
    smallest = singular[keep].min()
    return smallest * np.ones(len(grads)) @ left[:, keep] @ right[keep]


def pcgrad_direction(grads, orders):
    """PCGrad on the vectors: each gradient loses its component along every later gradient
    (in its order) that it conflicts with; the update is the sum."""
    grads = np.asarray(grads, dtype=np.float64)
    total = np.zeros(grads.shape[1])
    for i, order in enumerate(orders):
        g = grads[i].copy()
        for j in order:
            if j != i and g @ grads[j] < 0:
                g -= (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
        total += g
    return total


# -- hard input families ------------------------------------------------------------------

DIMENSIONS = 50


def family(kind: str, num_tasks: int, seed: int = 0, dims: int = DIMENSIONS) -> np.ndarray:
    """Task gradients ``(T, dims)`` of one hard family, float32-representable."""
    rng = np.random.default_rng([seed, num_tasks, sum(map(ord, kind))])
    grads = rng.normal(size=(num_tasks, dims))
    if kind == "random":
        pass
    elif kind == "conflicting":  # every other task along or against a shared direction
        shared = rng.normal(size=dims)
        signs = np.where(np.arange(num_tasks) % 2 == 0, 1.0, -1.0)[:, None]
        grads = 0.8 * signs * shared + 0.6 * grads
    elif kind == "nearly_parallel":  # cosines about 0.9999
        grads = rng.normal(size=dims) + 1e-2 * grads
    elif kind == "duplicated":  # the first half of the tasks repeated
        half = max(1, num_tasks // 2)
        grads[half:2 * half] = grads[:half]
    elif kind == "dominant":  # one gradient 1000x the others
        grads[0] *= 1000.0
    elif kind == "scaled":  # norms log-uniform over 1e-2 ... 1e2
        grads *= 10.0 ** rng.uniform(-2.0, 2.0, size=(num_tasks, 1))
    elif kind == "rank_deficient":  # all tasks in a plane (T > 2) or on a line (T = 2)
        rank = 1 if num_tasks == 2 else 2
        grads = rng.normal(size=(num_tasks, rank)) @ rng.normal(size=(rank, dims))
    elif kind == "zero_row":
        grads[-1] = 0.0
    elif kind == "opposite_pair":  # the last task exactly opposes the first
        grads[-1] = -grads[0]
    else:
        raise ValueError(f"unknown family {kind!r}")
    return grads.astype(np.float32).astype(np.float64)


def typical_conflicting(num_tasks: int, parameters: int = 5000, seed: int = 0) -> np.ndarray:
    """The benchmarks' typical task gradients ``(T, parameters)``: each a mix of a Gaussian and
    a shared direction taken along or against it (so about half the pairs conflict), with norms
    spread over one order of magnitude."""
    rng = np.random.default_rng(seed)
    signs = np.where(np.arange(num_tasks) % 2 == 0, 1.0, -1.0)[:, None]  # every other task opposes
    grads = 0.6 * signs * rng.normal(size=parameters) + 0.4 * rng.normal(size=(num_tasks, parameters))
    return grads * 10.0 ** rng.uniform(-0.5, 0.5, size=(num_tasks, 1))


# Families where a method's answer is not unique or does not exist: equal projections on
# linearly dependent unit vectors (a plane of five, or u and -u) hold on a whole line of
# directions; M a = 1/a has no positive solution for a zero gradient, an opposite pair, or
# gradients in a plane whose hull contains 0.
NO_UNIQUE_ANSWER = {"imtl_g": ("rank_deficient", "opposite_pair"),
                    "nash_mtl": ("zero_row", "opposite_pair", "rank_deficient")}

FAMILIES = ("random", "conflicting", "nearly_parallel", "duplicated", "dominant", "scaled", "rank_deficient",
            "zero_row", "opposite_pair")
SIZES = (2, 3, 5, 10, 40)


def gram_of(grads) -> np.ndarray:
    """The float32 Gram matrix a train step would hand the solvers (products in float64,
    rounded once)."""
    grads = np.asarray(grads, dtype=np.float64)
    return (grads @ grads.T).astype(np.float32)


def direction_error(got, want):
    """``(1 - cos, |got| / |want| - 1)`` of two directions; zero when both vanish."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    norm_got, norm_want = np.linalg.norm(got), np.linalg.norm(want)
    if norm_want == 0.0:
        return (0.0 if norm_got == 0.0 else 1.0), norm_got
    cosine = got @ want / (norm_got * norm_want) if norm_got > 0 else 0.0
    return 1.0 - cosine, norm_got / norm_want - 1.0
