"""Reusable Keras layers for multi-task models; importing this package registers them all."""

from mtlzoo.layers import columns, cross_stitch  # noqa: F401
from mtlzoo.layers.columns import PerTaskConv2D, PerTaskDense  # noqa: F401
from mtlzoo.layers.cross_stitch import CrossStitch  # noqa: F401
from mtlzoo.layers import experts  # noqa: F401
