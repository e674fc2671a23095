"""mtlzoo: a model zoo for deep multi-task learning in Keras 3.

Importing ``mtlzoo`` registers every architecture, layer and dataset.
"""

from mtlzoo.training.native_log import quiet_startup_log

with quiet_startup_log():  # TensorFlow's C++ start-up notices (set TF_CPP_MIN_LOG_LEVEL to see them)
    import keras  # noqa: F401  (the import that loads TensorFlow)

from mtlzoo import architectures, data, finetune, layers, muir, regularizers  # noqa: F401  (registration)
from mtlzoo.config import ConfigError, Recipe, load_recipe, recipe_from_dict
from mtlzoo.evaluation import evaluate
from mtlzoo.export import export_saved_model
from mtlzoo.models import MultiTaskModel
from mtlzoo.presets import PresetError, list_pretrained, load, save_preset
from mtlzoo.registry import create_model, list_architectures, list_models, register_architecture
from mtlzoo.tasks import Task
from mtlzoo.training.trainer import load_run, train

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "MultiTaskModel",
    "PresetError",
    "Recipe",
    "Task",
    "create_model",
    "evaluate",
    "export_saved_model",
    "list_architectures",
    "list_models",
    "list_pretrained",
    "load",
    "load_recipe",
    "load_run",
    "recipe_from_dict",
    "register_architecture",
    "save_preset",
    "train",
]
