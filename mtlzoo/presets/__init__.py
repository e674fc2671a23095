"""Pretrained presets: a trained model, its config and its model card, in one directory.

- ``store``: save a run or a model as a preset (with its measured model card), load one by
  shipped name, directory, gfile path or URL, and the table of shipped presets.
- ``download``: fetching a preset URL, bounded (``DownloadLimits``) and verified.
- ``pretrained/``: the shipped presets.
"""

from mtlzoo.presets.download import DownloadLimits
from mtlzoo.presets.store import (
    BUILTIN_DIR, list_pretrained, load, read_card, resolve, save_model_preset, save_preset, sync_readme, zoo_table,
)

__all__ = [
    "BUILTIN_DIR", "DownloadLimits", "list_pretrained", "load", "read_card", "resolve", "save_model_preset",
    "save_preset", "sync_readme", "zoo_table",
]
