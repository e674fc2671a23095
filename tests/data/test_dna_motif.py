"""The generated DNA motif-binding task."""

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.data.dna_motif import BASES


def test_sequences_are_one_hot_and_half_carry_the_planted_motif():
    dataset = mtlzoo.data.load_dataset("dna_motif", num_train=200, length=40, motif_length=6)
    bases, binds, starts = dataset.examples("train")
    assert bases.shape == (200, 40) and binds.sum() == 100
    assert np.all((starts >= 0) == (binds == 1)) and starts.max() <= 40 - 6
    data = dataset.load("train")
    assert data.inputs["sequence"].shape == (200, 40, len(BASES))
    np.testing.assert_array_equal(data.inputs["sequence"].argmax(-1), bases)
    np.testing.assert_array_equal(data.inputs["sequence"].sum(-1), 1.0)
    # The planted windows follow the motif: base frequencies per column match its probabilities
    # (100 windows: a standard error of at most 0.05).
    windows = np.stack([bases[i, s:s + 6] for i, s in enumerate(starts) if s >= 0])
    frequencies = np.stack([np.bincount(column, minlength=4) / len(windows) for column in windows.T])
    np.testing.assert_allclose(frequencies, dataset.motif(), atol=0.15)


def test_generation_is_deterministic_per_seed_and_split():
    a = mtlzoo.data.load_dataset("dna_motif", num_test=50, seed=3)
    b = mtlzoo.data.load_dataset("dna_motif", num_test=50, seed=3)
    np.testing.assert_array_equal(a.examples("test")[0], b.examples("test")[0])
    assert not np.array_equal(a.examples("test")[0], mtlzoo.data.load_dataset("dna_motif", num_test=50).examples("test")[0])
    assert not np.array_equal(a.examples("validation")[0][:50], a.examples("test")[0])


def test_a_small_conv_net_learns_to_detect_the_motif():
    dataset = mtlzoo.data.load_dataset("dna_motif", length=50, num_train=1000, num_test=400)
    train, test = dataset.load("train"), dataset.load("test")
    keras.utils.set_random_seed(0)
    sequence = keras.Input((50, 4), name="sequence")
    hidden = keras.layers.GlobalMaxPooling1D()(keras.layers.Conv1D(16, 10, activation="relu")(sequence))
    model = mtlzoo.MultiTaskModel({"sequence": sequence}, {"binding": keras.layers.Dense(1, name="binding")(hidden)},
                                  tasks=dataset.tasks())
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(dict(train.inputs), dict(train.targets), epochs=8, batch_size=64, verbose=0)
    accuracy = mtlzoo.evaluate(model, test)["binding"]["accuracy"]
    assert accuracy > 0.9


@pytest.mark.parametrize("option, value, message", [
    ("length", 0, "length must be an integer >= 1"),
    ("motif_length", 200, r"motif_length \(200\) cannot exceed length \(101\)"),
    ("concentration", 0, "concentration must be a number > 0"),
])
def test_bad_options(option, value, message):
    with pytest.raises(ValueError, match=message):
        mtlzoo.data.load_dataset("dna_motif", **{option: value})
