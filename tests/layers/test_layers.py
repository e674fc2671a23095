"""Every mtlzoo layer keeps the harness's layer contract (config round trip, same outputs)."""

import keras
import numpy as np
import pytest
from harness import check_layer_round_trip

from mtlzoo.layers import (
    Confusion, CrossStitch, GradientReversal, MixtureOfExperts, PerTaskConv2D, PerTaskDense,
    ProgressiveLayeredExtraction, StopGradient,
)
from mtlzoo.layers.regularizers import GroupLasso
from mtlzoo.muir import HypermoduleBank, Reparameterized
from mtlzoo.subspace import OutputSlice, SubspaceColumns

RNG = np.random.default_rng(0)


def vectors(n=2, width=5):
    return [RNG.normal(size=(4, width)).astype("float32") for _ in range(n)]


def subspace_columns():
    start = keras.Input((5,))
    column = keras.Model(start, keras.layers.Dense(3)(keras.layers.Dense(4, activation="relu")(start)))
    layer = SubspaceColumns(column, [3, 1], intrinsic_dim=6, task_dim=2, expansion="sparse", seed=1, levels=3)
    layer.build((None, 5))
    layer.coordinates.assign(RNG.normal(size=(2, 2)))  # off theta_0, so the subspace shows in the outputs
    layer.codebook.assign([-0.5, 0.1, 0.7])
    return layer


CASES = {
    "PerTaskDense": (lambda: PerTaskDense(2, 3, activation="relu", kernel_regularizer=GroupLasso(0.01)), vectors()),
    "PerTaskConv2D": (lambda: PerTaskConv2D(2, 3, kernel_size=2),
                      [RNG.normal(size=(4, 6, 6, 1)).astype("float32") for _ in range(2)]),
    "CrossStitch": (lambda: CrossStitch(2, 0.8, 0.2, alpha_lr_multiplier=10.0), vectors()),
    "MixtureOfExperts": (lambda: MixtureOfExperts(2, 3, [4]), vectors(1)[0]),
    "ProgressiveLayeredExtraction": (lambda: ProgressiveLayeredExtraction(2, 1, 1, [4, 3]), vectors(1)[0]),
    "HypermoduleBank": (lambda: HypermoduleBank(6, (2, 2), context_size=2, num_candidates=2), None),
    "Reparameterized": (lambda: Reparameterized(keras.layers.Dense(4), offset=1, block_shape=(2, 2)),
                        [vectors(1)[0][:, :4], RNG.normal(size=(5, 2, 2)).astype("float32")]),
    "SubspaceColumns": (subspace_columns, vectors(1)[0]),
    "OutputSlice": (lambda: OutputSlice(1, 2), vectors(1)[0]),
    "GradientReversal": (lambda: GradientReversal("constant", strength=0.5), vectors(1)[0]),
    "Confusion": (lambda: Confusion("ramp", strength=2.0), vectors(2, width=3)),
    "StopGradient": (StopGradient, vectors(1)[0]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_keeps_its_config_and_outputs(name):
    make, inputs = CASES[name]
    keras.utils.set_random_seed(0)
    check_layer_round_trip(make(), inputs)


def test_every_registered_mtlzoo_layer_is_covered():
    import mtlzoo  # noqa: F401  (registers everything)

    registered = {key.split(">")[1] for key in keras.saving.get_custom_objects() if key.startswith("mtlzoo>")}
    layers = {name for name in registered
              if isinstance(keras.saving.get_registered_object(f"mtlzoo>{name}"), type)
              and issubclass(keras.saving.get_registered_object(f"mtlzoo>{name}"), keras.layers.Layer)
              and not issubclass(keras.saving.get_registered_object(f"mtlzoo>{name}"), keras.Model)}
    layers = {n for n in layers if not _is_weighting(n)}  # weighting methods are layers too; see tests/weighting
    assert layers == set(CASES)


def _is_weighting(name):
    from mtlzoo.weighting import Weighting

    return issubclass(keras.saving.get_registered_object(f"mtlzoo>{name}"), Weighting)
