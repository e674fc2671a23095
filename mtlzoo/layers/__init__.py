"""Reusable Keras layers for multi-task models; importing this package registers them all."""

from mtlzoo.layers.columns import PerTaskConv2D, PerTaskDense
from mtlzoo.layers.cross_stitch import CrossStitch
from mtlzoo.layers.experts import MixtureOfExperts, ProgressiveLayeredExtraction
from mtlzoo.layers.hypermodules import HypermoduleBank, Reparameterized

__all__ = [
    "CrossStitch",
    "HypermoduleBank",
    "MixtureOfExperts",
    "PerTaskConv2D",
    "PerTaskDense",
    "ProgressiveLayeredExtraction",
    "Reparameterized",
]
