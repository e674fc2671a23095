"""Multi-task models: ``MultiTaskModel`` and how one is built, shared and changed.

- ``model``: ``MultiTaskModel`` (its tasks, its declared shared trunk, compile defaults) and
  ``create_model`` (a registered architecture -> a model).
- ``inputs``: named inputs, raw dtypes and the in-model rescaling.
- ``sharing``: which variables the tasks share; the plan a gradient weighting method follows.
- ``surgery``: ``retask`` (add, drop, replace heads), ``drop_auxiliary``, ``freeze`` / ``unfreeze``.
"""

from mtlzoo.models.inputs import make_inputs
from mtlzoo.models.model import MultiTaskModel, create_model
from mtlzoo.models.sharing import gradient_plan, shared_variables
from mtlzoo.models.surgery import drop_auxiliary, for_recipe, freeze, retask, trunk_layer, unfreeze

__all__ = [
    "MultiTaskModel", "create_model", "drop_auxiliary", "for_recipe", "freeze", "gradient_plan", "make_inputs", "retask",
    "shared_variables", "trunk_layer", "unfreeze",
]
