"""The base of every mtlzoo error, and the two the serving clients raise.

They live here, not in ``mtlzoo.errors`` (which re-exports them), because this package must
import without Keras or TensorFlow and ``import mtlzoo`` loads both.
"""

from __future__ import annotations


class MtlzooError(Exception):
    """Base of mtlzoo's errors; ``exit_code`` is what ``mtlzoo`` exits with for it."""

    exit_code = 2


class ServingInputError(MtlzooError, ValueError):
    """Inputs that do not fit a signature (names, dtype, shape, batch lengths), or JSON.

    Raised alike by the clients before sending and by ``mtlzoo.serving.export`` for local
    predictions and warmup inputs: one check, one message.
    """


class ServingError(MtlzooError, RuntimeError):
    """TF Serving refused or failed a request, or could not be reached.

    Attributes:
        message: the server's own error message (REST ``{"error": ...}``, gRPC details), or
            what went wrong on the way (connection refused, timeout).
        target: the URL (REST) or ``host:port`` (gRPC) that was asked.
        status: the HTTP status (REST), else ``None``.
        code: the gRPC status code name, e.g. ``"NOT_FOUND"`` (gRPC), else ``None``.
    """

    exit_code = 1

    def __init__(self, message: str, target: str, *, status: int | None = None, code: str | None = None):
        self.message, self.target, self.status, self.code = message, target, status, code
        how = f" (HTTP {status})" if status is not None else f" ({code})" if code else ""
        super().__init__(f"TF Serving at {target}{how}: {message}")
