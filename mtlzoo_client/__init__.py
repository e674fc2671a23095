"""Clients for mtlzoo models served by TensorFlow Serving: ``{input: array}`` in, ``{output: array}`` out.

    from mtlzoo_client import GrpcClient, RestClient
    rest = RestClient("http://127.0.0.1:8501", model="kang_hard_sharing")
    answer = rest.predict({"features": x})                # {"task_00": array (n, 1), ...}
    rest.predict({"features": x}, format="inputs")        # TF Serving's columnar request format
    with GrpcClient("127.0.0.1:8500", model="kang_hard_sharing", version=2) as client:
        answer = client.predict({"features": x})          # the same arrays, over gRPC

A package of its own, shipped with mtlzoo, so that a machine that only sends requests needs
neither Keras nor TensorFlow: ``RestClient`` uses the standard library and numpy alone, and
``import mtlzoo_client`` never imports ``mtlzoo`` (which loads Keras to register its layers).
``GrpcClient`` needs ``tensorflow-serving-api``, whose message types load TensorFlow.

Both clients read the signature from the server (``metadata()``, fetched once per client) and
check inputs with ``check_inputs`` before sending, the same check ``mtlzoo predict`` applies
to an export on disk: a mistake is a ``ServingInputError`` naming the input and what was
expected; pass ``validate=False`` to skip that round trip. Whatever the server refuses is a
``ServingError`` carrying its message. Outputs are every output the signature returns, sorted
by name, batch axis first; string outputs are object arrays of ``bytes``.
"""

from mtlzoo_client.clients import SERVING_DEFAULT, GrpcClient, RestClient
from mtlzoo_client.errors import MtlzooError, ServingError, ServingInputError
from mtlzoo_client.inputs import check_inputs

__all__ = ["GrpcClient", "MtlzooError", "RestClient", "SERVING_DEFAULT", "ServingError", "ServingInputError",
           "check_inputs"]
