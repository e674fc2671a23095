"""Small recipes for tests: the default recipe cut down to a few tasks and epochs."""

import copy
from pathlib import Path

import pytest
import yaml

import mtlzoo
from mtlzoo.recipes.config import recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "zoo_configs" / "kang_hard_sharing.yaml"


def small_recipe_dict(epochs=2, tasks=("task_00", "task_01", "task_10", "task_20"), **training):
    raw = copy.deepcopy(yaml.safe_load(DEFAULT_RECIPE.read_text()))
    raw["tasks"] = list(tasks)
    raw["training"].update(epochs=epochs, **training)
    return raw


def small_recipe(**kwargs):
    return recipe_from_dict(small_recipe_dict(**kwargs), source="tests/helpers.py")


def write_recipe(path, raw):
    Path(path).write_text(yaml.safe_dump(raw))
    return path


# Every architecture that predicts classification, binary and regression tasks (the zoo's
# general-purpose ones; deep_mts, for segmentation and survival, has its own tests).
GENERAL_ARCHITECTURES = mtlzoo.list_models(task_kinds=("classification", "binary", "regression"))


def default_few(values, keep):
    """Parametrize over every one of ``values``: those in ``keep`` run in the default suite, the
    others are marked slow (.ci/run runs them after it), to keep the default run short."""
    unknown = set(keep) - set(values)
    assert not unknown, f"default_few keeps values that are not parametrized: {sorted(unknown)}"
    return [v if v in keep else pytest.param(v, marks=pytest.mark.slow) for v in values]
