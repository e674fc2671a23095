"""Methods that combine the per-task gradients; the algebra is in ``solvers``."""

from __future__ import annotations

import keras
from keras import ops

from mtlzoo.validation import number_at_least
from mtlzoo.weighting import solvers
from mtlzoo.weighting.base import AdamState, GradientWeighting, Seeded, masked_mean, register_weighting


@register_weighting("pcgrad")
class PCGrad(Seeded, GradientWeighting):
    """Projecting conflicting gradients (Yu et al., NeurIPS 2020): each task gradient drops its
    component along every other task gradient it conflicts with, in a random order per step."""

    def gradient_weights(self, gram, losses, present):
        noise = keras.random.uniform((self.num_tasks, self.num_tasks), seed=self.seed_generator)
        return solvers.pcgrad_weights(gram, ops.argsort(noise, axis=1), present)


@register_weighting("mgda")
class MGDA(GradientWeighting):
    """Multiple-gradient descent (Sener & Koltun, NeurIPS 2018): the min-norm point of the
    convex hull of the task gradients, a common descent direction."""

    def gradient_weights(self, gram, losses, present):
        return solvers.min_norm_weights(gram, present)


@register_weighting("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB: MGDA on the gradients of the shared representation (its upper bound)."""

    def __init__(self, gradients: str = "features", **kwargs):
        super().__init__(gradients=gradients, **kwargs)


@register_weighting("cagrad")
class CAGrad(GradientWeighting):
    """Conflict-averse gradient descent (Liu et al., NeurIPS 2021): the direction that most
    improves the worst task within a ball of radius ``c * |mean gradient|``."""

    def __init__(self, c: float = 0.4, **kwargs):
        super().__init__(**kwargs)
        self.c = number_at_least("c", c)

    def gradient_weights(self, gram, losses, present):
        return solvers.cagrad_weights(gram, c=self.c, present=present)

    def get_config(self):
        return {**super().get_config(), "c": self.c}


@register_weighting("imtl_g")
class IMTLG(GradientWeighting):
    """Impartial MTL, gradient part (Liu et al., ICLR 2021): the update has equal projections
    on every task's unit gradient."""

    def gradient_weights(self, gram, losses, present):
        return solvers.imtl_g_weights(gram, present)


@register_weighting("aligned_mtl")
class AlignedMTL(GradientWeighting):
    """Aligned-MTL (Senushkin et al., CVPR 2023): re-weights the task gradients so that their
    matrix has condition number 1 (all principal components scaled to the smallest)."""

    def gradient_weights(self, gram, losses, present):
        return solvers.aligned_mtl_weights(gram, present)


@register_weighting("nash_mtl")
class NashMTL(GradientWeighting):
    """Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution ``G G^T a = 1 / a`` on the
    raw gradients (so ``|d| = sqrt(T)``), then the combined update clipped to norm ``max_norm``
    as in the official code (default 1; 0 disables the clip)."""

    def __init__(self, max_norm: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.max_norm = number_at_least("max_norm", max_norm)

    def gradient_weights(self, gram, losses, present):
        return solvers.clip_norm(solvers.nash_mtl_weights(gram, present), gram, self.max_norm)

    def get_config(self):
        return {**super().get_config(), "max_norm": self.max_norm}


@register_weighting("upgrad")
class UPGrad(GradientWeighting):
    """UPGrad (Quinton & Layne, 2024, TorchJD): the mean of the task gradients each projected
    onto the dual cone of all of them, so the update conflicts with no task."""

    def gradient_weights(self, gram, losses, present):
        return solvers.upgrad_weights(gram, present=present)


@register_weighting("gradnorm")
class GradNorm(GradientWeighting):
    """GradNorm (Chen et al., ICML 2018): task weights learnt so that each weighted task
    gradient norm tracks the mean norm times ``(relative inverse training rate) ** alpha``.

    The norms are those of the gradients the step already has (the shared parameters, or
    the representation with ``gradients="features"``); the weights take an Adam step on the
    GradNorm loss and are renormalised to sum to T. Means over tasks and the step run over the
    tasks present in the batch; an absent task keeps its weight (and the present ones their
    sum), and a task's initial loss is taken from the first batch that had it.
    """

    def __init__(self, alpha: float = 1.5, learning_rate: float = 0.025, **kwargs):
        super().__init__(**kwargs)
        self.alpha = number_at_least("alpha", alpha)
        self.learning_rate = number_at_least("learning_rate", learning_rate, strict=True)

    def build(self, num_tasks):
        self.task_weights = self.state_variable("task_weights", (num_tasks,), initializer="ones")
        self.initial_losses = self.state_variable("initial_losses", (num_tasks,))
        self.started = self.state_variable("started", (num_tasks,))
        self.adam = AdamState(self, num_tasks, self.learning_rate, "weights")
        super().build(num_tasks)

    def gradient_weights(self, gram, losses, present):
        losses = ops.cast(losses, "float32")
        # A task's reference loss is its loss in the first batch that had labels for it.
        initial = self.started * self.initial_losses + (1.0 - self.started) * present * losses
        self.initial_losses.assign(initial)
        self.started.assign(ops.maximum(self.started, present))
        w = self.task_weights.value * 1.0  # a copy: the weights before this step's update
        norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
        weighted_norms = w * norms
        ratio = losses / (initial + 1e-8)
        inverse_rate = ratio / (masked_mean(ratio, present) + 1e-8)
        target = masked_mean(weighted_norms, present) * ops.power(inverse_rate, self.alpha)
        # d/dw_t of sum |w_t n_t - target_t| over the present tasks, the target held constant.
        grad = ops.sign(weighted_norms - target) * norms
        updated = ops.maximum(w + self.adam.step(grad, present), 1e-4)
        # The present tasks share what they had, so the weights keep summing to T.
        share = ops.sum(present * w) / ops.maximum(ops.sum(present * updated), 1e-30)
        self.task_weights.assign(present * updated * share + (1.0 - present) * w)
        return w * present

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "learning_rate": self.learning_rate}


@register_weighting("gradient_similarity")
class GradientSimilarity(GradientWeighting):
    """Auxiliary gating by gradient similarity (Du et al., 2018, "Adapting Auxiliary Losses
    Using Gradient Similarity"): each auxiliary task's gradient joins the update only as far as
    it points the way of the main tasks' gradient ``g_main`` (the sum over the main tasks).

    With ``variant="gate"`` (the paper's main rule) an auxiliary task's weight is 1 where
    ``cos(g_main, g_aux) > 0`` and 0 otherwise; with ``"weighted"`` it is ``max(0, cos)``.
    Main and adversarial tasks keep weight 1. Without a main task in the batch ``g_main`` is 0
    and every auxiliary task is left out of that step (its head still trains on its own loss).
    """

    VARIANTS = ("gate", "weighted")

    def __init__(self, variant: str = "gate", **kwargs):
        if variant not in self.VARIANTS:
            raise ValueError(f"gradient_similarity: variant must be one of {list(self.VARIANTS)}, got {variant!r}.")
        super().__init__(**kwargs)
        self.variant = variant

    def check_tasks(self, task_names, roles=None):
        names = super().check_tasks(task_names, roles)
        if roles is not None and "auxiliary" not in tuple(roles):
            raise ValueError("gradient_similarity gates auxiliary tasks, and none of the tasks has role 'auxiliary'.")
        return names

    def gradient_weights(self, gram, losses, present):
        roles = self.task_roles or ("main",) * self.num_tasks
        main = ops.convert_to_tensor([1.0 if r == "main" else 0.0 for r in roles]) * present
        auxiliary = ops.convert_to_tensor([1.0 if r == "auxiliary" else 0.0 for r in roles]) * present
        gram = ops.cast(gram, "float32")
        main_dots = ops.matmul(gram, main)  # g_t . g_main for every task t
        main_norm = ops.sqrt(ops.maximum(ops.sum(main * main_dots), 0.0))
        norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
        cosine = main_dots / ops.maximum(norms * main_norm, 1e-30)
        gate = ops.cast(cosine > 0, "float32") if self.variant == "gate" else ops.maximum(cosine, 0.0)
        others = present * (1.0 - auxiliary)  # main and adversarial tasks, when present
        return others + auxiliary * gate

    def get_config(self):
        return {**super().get_config(), "variant": self.variant}
