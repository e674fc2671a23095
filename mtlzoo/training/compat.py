"""The only place mtlzoo touches Keras internals: patches for bugs of the pinned Keras that have
no public workaround, each gated on ``keras.version()``.

- ``untrack``: a recompiled model swaps its ``weighting`` layer; Keras tracks layer attributes
  but has no public way to forget one, and the old method's variables would stay in the model
  (and in its weights file).
- ``install_multi_worker_fixes``: Keras 3.15's TensorFlow trainer fails under
  ``MultiWorkerMirroredStrategy`` twice:

  1. Before the first step it builds the model symbolically from one batch, which it first
     reduces across replicas with ``strategy.reduce`` on the whole (nested) batch; the
     collective reduce cannot take a dict (keras-team/keras#20585). A batch only has to give
     shapes there, so the fix builds from the first replica's part of it, leaf by leaf.
  2. After every step it averages the logs across workers with ``reduce("MEAN", axis=0)``,
     which fails on the scalar logs (tensorflow/tensorflow#72388). The fix averages them with
     ``axis=None``; other strategies keep Keras's own reduction.

``tests/test_package.py`` checks that each patched internal still exists and still
carries the bug, so a Keras upgrade that fixes or moves one fails there, loudly, first.
"""

from __future__ import annotations

import keras

PATCHED_KERAS = "3.15."  # the Keras minor version these patches were written against and tested on

_INSTALLED = False


def keras_is_patched_version() -> bool:
    return keras.version().startswith(PATCHED_KERAS)


def untrack(layer, value) -> None:
    """Make ``layer`` forget the tracked attribute value ``value`` (its variables go with it)."""
    layer._tracker.untrack(value)


def install_multi_worker_fixes() -> None:
    """Patch the two Keras functions above, keeping their behaviour for every other strategy.

    On a Keras other than the patched minor version nothing is patched: the upstream code may
    have changed, and a patch written against other code could silently do the wrong thing.
    """
    global _INSTALLED
    if _INSTALLED or not keras_is_patched_version():
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    keras_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    keras_reduce = tf_trainer.reduce_per_replica
    # Keras's own test for the multi-worker case: the fixes act exactly where its broken paths run.
    is_multi_worker = tf_trainer._collective_all_reduce_multi_worker

    def symbolic_build(self, iterator=None, data_batch=None):
        if not is_multi_worker(self._distribute_strategy) or iterator is None:
            return keras_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda v: self.distribute_strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v,
                batch,
            )
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction="auto"):
        if is_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return keras_reduce(values, strategy, reduction=reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _INSTALLED = True
