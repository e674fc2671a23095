"""Reusable Keras layers for multi-task models; importing this package registers them all."""

from mtlzoo.layers.columns import PerTaskConv2D, PerTaskDense
from mtlzoo.layers.cross_stitch import CrossStitch
from mtlzoo.layers.experts import MixtureOfExperts, ProgressiveLayeredExtraction

__all__ = ["CrossStitch", "MixtureOfExperts", "PerTaskConv2D", "PerTaskDense", "ProgressiveLayeredExtraction"]
