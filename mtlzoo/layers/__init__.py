"""Reusable Keras layers for multi-task models; importing this package registers them all."""

from mtlzoo.layers.columns import PerTaskConv2D, PerTaskDense
from mtlzoo.layers.cross_stitch import CrossStitch
from mtlzoo.layers.experts import MixtureOfExperts, ProgressiveLayeredExtraction
from mtlzoo.layers.adversary import Confusion, GradientReversal, StopGradient
from mtlzoo.layers.regularizers import GroupLasso, MeanRegularizer, TraceNormRegularizer

# MUiR's layers (HypermoduleBank, Reparameterized) live in mtlzoo.muir.

__all__ = [
    "Confusion",
    "CrossStitch",
    "GradientReversal",
    "GroupLasso",
    "MixtureOfExperts",
    "PerTaskConv2D",
    "PerTaskDense",
    "MeanRegularizer",
    "ProgressiveLayeredExtraction",
    "StopGradient",
    "TraceNormRegularizer",
]
