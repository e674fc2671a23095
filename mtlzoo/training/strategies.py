"""Distribution strategies by name. The TensorFlow-specific part of training lives here."""

from __future__ import annotations

import contextlib
import functools

import keras

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu", "parameter_server")


def make_strategy(name: str = "auto"):
    """The distribution for ``name``: a ``tf.distribute.Strategy``, a ``keras.distribution.DataParallel``
    on JAX, or ``None`` for the backend's default.

    - ``auto``: ``MirroredStrategy`` over all GPUs when there are several, else the default.
    - ``one_device``: ``OneDeviceStrategy`` on the first GPU, or the CPU.
    - ``mirrored``: ``MirroredStrategy`` over all GPUs, or over all logical CPU devices when
      there is no GPU (how the tests run it on two CPU devices).
    - ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the machines in ``TF_CONFIG``
      (``mtlzoo.training.multi_worker``), every worker running the same command.
    - ``tpu``: ``TPUStrategy`` on the TPU this process can reach (a clear error where none is).
    - ``parameter_server``: refused with the reason: Keras 3's ``Model.fit`` cannot drive a
      ``ParameterServerStrategy``; ``multi_worker`` is the synchronous alternative.

    On the JAX backend there is no tf.distribute: ``auto`` and ``mirrored`` give
    ``keras.distribution.DataParallel`` over all local devices when there are several (the
    batch is split across them), ``one_device`` (or a single device) gives ``None``.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {list(STRATEGIES)}.")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        if name in ("multi_worker", "tpu", "parameter_server") or (name == "mirrored" and backend != "jax"):
            raise ValueError(
                f"Strategy {name!r} needs the TensorFlow backend (KERAS_BACKEND is "
                f"{backend!r}); use 'auto' or 'one_device'."
            )
        devices = keras.distribution.list_devices() if backend == "jax" else []
        if name != "one_device" and len(devices) > 1:
            return keras.distribution.DataParallel(devices=devices)
        return None
    import tensorflow as tf

    if name == "multi_worker":
        from mtlzoo.training.multi_worker import make_multi_worker_strategy

        return make_multi_worker_strategy()
    if name == "tpu":
        return _tpu_strategy()
    if name == "parameter_server":
        raise ValueError(
            "Strategy 'parameter_server' cannot train with Keras 3: its Model.fit has no "
            "ParameterServerStrategy support (no ClusterCoordinator). Use 'multi_worker' "
            "(synchronous, all-reduce) across machines instead."
        )
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return _mirrored(tuple(d.name for d in gpus)) if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return _mirrored(tuple(d.name for d in (gpus or tf.config.list_logical_devices("CPU"))))


@functools.lru_cache(maxsize=None)
def _mirrored(devices: tuple[str, ...]):
    """One ``MirroredStrategy`` per device set and process.

    A second instance numbers its all-reduces from the same collective keys as the first, so a
    model trained after another one of different shapes fails ("Shape mismatch in the collective
    instance"); one shared instance keeps counting.
    """
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(devices=list(devices))


def _tpu_strategy():
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise ValueError(
            f"Strategy 'tpu' found no TPU to connect to ({type(e).__name__}: {str(e)[:200]}); run on a TPU VM "
            "or set TPU_NAME, or choose 'mirrored' for GPUs."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def strategy_scope(strategy):
    """The strategy's scope, or a no-op context where there is no strategy."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def fit_scope(strategy):
    """Where ``fit`` runs: inside a JAX distribution's scope (it splits the batches there), but
    outside a tf.distribute scope, where the chief's checkpoint saves under a multi-worker
    strategy would become collectives the other workers never join.
    """
    if isinstance(strategy, keras.distribution.DataParallel):
        return strategy.scope()
    return contextlib.nullcontext()


def num_replicas(strategy) -> int:
    if strategy is None:
        return 1
    if isinstance(strategy, keras.distribution.DataParallel):
        return int(strategy.device_mesh.devices.size)
    return strategy.num_replicas_in_sync


def split_cpu(num_devices: int = 2) -> None:
    """Split the CPU into ``num_devices`` logical devices; must run before TensorFlow starts."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
    )
