"""An alias of ``mtlzoo_client``, where the REST and gRPC clients live (importing this module
loads mtlzoo, and so Keras; import ``mtlzoo_client`` on machines that only send requests)."""

from mtlzoo_client import GrpcClient, RestClient, ServingError, ServingInputError  # noqa: F401
