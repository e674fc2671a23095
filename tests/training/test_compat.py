"""The compat module: its patches still match the Keras they patch, and what they do holds."""

import inspect


def test_the_compat_patches_still_match_the_keras_they_patch():
    """Fails when Keras is upgraded, fixes a patched bug or moves a patched internal: then
    re-check each patch in ``mtlzoo/training/compat.py`` (and drop the ones no longer needed)."""
    import keras
    from keras.src.backend.tensorflow import trainer as tf_trainer

    from mtlzoo.training import compat

    assert compat.keras_is_patched_version(), f"compat.py patches Keras {compat.PATCHED_KERAS}x, this is {keras.version()}"
    # Bug 1: the symbolic build reduces the whole (nested) first batch across replicas.
    build = inspect.getsource(tf_trainer.TensorFlowTrainer._maybe_symbolic_build)
    assert "self.distribute_strategy.reduce(" in build and "maybe_distributed_data_batch" in build
    assert list(inspect.signature(tf_trainer.TensorFlowTrainer._maybe_symbolic_build).parameters) == [
        "self", "iterator", "data_batch"]
    # Bug 2: per-step logs are averaged with axis=0, which scalar logs do not have.
    assert 'strategy.reduce("MEAN", v, axis=0)' in inspect.getsource(tf_trainer.reduce_per_replica)
    assert callable(tf_trainer._collective_all_reduce_multi_worker)
    # untrack: the tracker Keras layers keep, and its method.
    assert callable(keras.layers.Layer()._tracker.untrack)


def test_recompiling_with_another_weighting_drops_the_old_ones_variables():
    import keras

    import mtlzoo

    tasks = [mtlzoo.Task("a", "regression"), mtlzoo.Task("b", "regression")]
    model = mtlzoo.create_model("hard_sharing", tasks, {"x": (3,)}, shared_units=[4])
    model.compile(weighting="uncertainty")
    with_method = {v.path for v in model.weights}
    model.compile(weighting="unitary")
    gone = with_method - {v.path for v in model.weights}
    assert gone and all(path.startswith("uncertainty/") for path in gone), gone  # the log-variances
    assert isinstance(model.weighting, keras.layers.Layer)
