"""``MultiWorkerMirroredStrategy`` for ``Model.fit``: the strategy from ``TF_CONFIG``, with the
two Keras 3.15 fixes it needs (``mtlzoo.training.compat``), and per-worker data sharding.
"""

from __future__ import annotations

import json
import os

from mtlzoo.training import compat


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
    compat.install_multi_worker_fixes()
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
