"""YAML recipes (``config``: load, validate, dump) and their hyperparameter search (``tuning``)."""

from mtlzoo.recipes.config import Recipe, TrainingConfig, dump_recipe, load_recipe, recipe_from_dict

__all__ = ["Recipe", "TrainingConfig", "dump_recipe", "load_recipe", "recipe_from_dict"]
