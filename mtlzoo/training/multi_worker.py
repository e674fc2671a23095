"""``MultiWorkerMirroredStrategy`` for ``Model.fit``: the strategy from ``TF_CONFIG``, and the two
fixes Keras 3.15 needs to train under it.

Keras 3.15's TensorFlow trainer fails under the multi-worker strategy twice:

1. Before the first step it builds the model symbolically from one batch, which it first
   reduces across replicas with ``strategy.reduce`` on the whole (nested) batch; the
   collective reduce cannot take a dict (keras-team/keras#20585). A batch only has to give
   shapes there, so the fix builds from the first replica's part of it, leaf by leaf.
2. After every step it averages the logs across workers with ``reduce("MEAN", axis=0)``,
   which fails on the scalar logs (tensorflow/tensorflow#72388). The fix averages them with
   ``axis=None``; other strategies keep Keras's own reduction.

Both are installed, once, by ``make_strategy`` and act only under a multi-worker strategy.
"""

from __future__ import annotations

import json
import os

_INSTALLED = False


def cluster_spec() -> dict:
    """``TF_CONFIG``, parsed and checked: ``{"cluster": {"worker": [...]}, "task": {...}}``."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "Strategy 'multi_worker' needs TF_CONFIG describing the cluster, e.g. "
            '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}} '
            "on the first machine (index 1 on the second)."
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a valid cluster description ({e!r}): {raw[:200]}") from None
    if task.get("type") not in ("worker", "chief") or not isinstance(workers, list) or not workers:
        raise ValueError(f"TF_CONFIG must name a worker task and a non-empty worker list; got {raw[:200]}.")
    if task["type"] == "worker" and not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG task index {index} is outside the {len(workers)} workers.")
    return config


def is_chief() -> bool:
    """Whether this process is the cluster's chief: the "chief" task if there is one, else worker 0."""
    config = cluster_spec()
    if "chief" in config["cluster"]:
        return config["task"]["type"] == "chief"
    return int(config["task"]["index"]) == 0


def make_multi_worker_strategy():
    import tensorflow as tf

    cluster_spec()
    install_keras_fixes()
    return tf.distribute.MultiWorkerMirroredStrategy()


def shard_by_data(dataset):
    """Each worker reads every n-th example of each global batch (``AutoShardPolicy.DATA``).

    In-memory datasets have no files to shard by, which AUTO would try first; DATA also makes
    an unshuffled run see exactly the global batches of a one-process run.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def install_keras_fixes() -> None:
    """Patch the two Keras functions above, keeping their behaviour for every other strategy."""
    global _INSTALLED
    if _INSTALLED:
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
