"""Serving with TensorFlow Serving.

- ``export``: the SavedModel export (signatures, warmup records, atomic versions) and reading
  exports back (``predict_exported``, request files).
- ``server_config``: the server's ``models.config``, batching and monitoring files.
- ``clients``: REST and gRPC clients for a running server.

Nothing is imported here, so that ``import mtlzoo`` does not load the serving code and each
part loads only what it needs.
"""

SERVING_DEFAULT = "serving_default"  # the signature key TF Serving answers when none is named
