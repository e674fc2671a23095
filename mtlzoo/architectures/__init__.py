"""Registered architectures, one module per family; importing this package registers them all."""

from mtlzoo.architectures import cross_stitch, deep_mts, experts, hard_sharing, muir, soft_sharing, subspace  # noqa: F401
