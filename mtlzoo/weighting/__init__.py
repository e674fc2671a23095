"""Loss weighting and gradient combination methods for multi-task training.

Every method is a small ``Weighting`` object with one interface (see ``base``): it sees the
per-task losses and, only if it declares ``uses_gradients``, the Gram matrix of the per-task
gradients, and returns task weights; the update is the weighted sum of the task gradients.
Pick one by name in a recipe (``training.weighting``) or with ``model.compile(weighting=...)``;
``chain(...)`` composes a loss weighting with a gradient method.
"""

from mtlzoo.weighting.base import Chain, Weighting, chain, get, list_weightings, register_weighting
from mtlzoo.weighting import gradient_methods, loss_methods  # noqa: F401  (registration)

__all__ = ["Chain", "Weighting", "chain", "get", "list_weightings", "register_weighting"]
