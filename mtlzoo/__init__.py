"""mtlzoo: a model zoo for deep multi-task learning in Keras 3.

Importing ``mtlzoo`` registers every architecture, layer and dataset (so ``keras.saving.load_model``
revives mtlzoo models); ``mtlzoo.serving`` and ``mtlzoo.data.tfds_builders`` load when first used.
"""

from mtlzoo.training.native_log import quiet_startup_log

with quiet_startup_log():  # TensorFlow's C++ start-up notices (set TF_CPP_MIN_LOG_LEVEL to see them)
    import keras  # noqa: F401  (the import that loads TensorFlow)

from mtlzoo import architectures, data, layers, muir  # noqa: F401  (registration)
from mtlzoo.architectures.registry import list_architectures, list_models, register_architecture
from mtlzoo.errors import ConfigError, MtlzooError, PresetError
from mtlzoo.evaluation import evaluate
from mtlzoo.models import MultiTaskModel, create_model
from mtlzoo.presets import list_pretrained, load, save_preset
from mtlzoo.recipes import Recipe, load_recipe, recipe_from_dict
from mtlzoo.tasks import Task
from mtlzoo.training.trainer import load_run, train

__version__ = "0.1.0"


def __getattr__(name):
    # Serving code is loaded when first used, not by `import mtlzoo`.
    if name == "export_saved_model":
        from mtlzoo.serving.export import export_saved_model

        return export_saved_model
    raise AttributeError(f"module 'mtlzoo' has no attribute {name!r}")

__all__ = [
    "ConfigError",
    "MtlzooError",
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
