"""Serving with TensorFlow Serving.

- ``export``: the SavedModel export (signatures, warmup records, atomic versions) and reading
  exports back (``predict_exported``, request files).
- ``server_config``: the server's ``models.config``, batching and monitoring files.
- ``clients``: an alias of the ``mtlzoo_client`` package, the REST and gRPC clients for a
  running server (a package of its own, which imports neither Keras nor TensorFlow).

``import mtlzoo`` does not load the serving code, and each part loads only what it needs.
"""

from mtlzoo_client import SERVING_DEFAULT  # noqa: F401  (the signature TF Serving answers by default)
