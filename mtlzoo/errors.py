"""Every error mtlzoo raises on purpose, under one base, ``MtlzooError``.

The message names the file, key or value at fault and what was expected, so the command line
prints it as one line and exits with ``exit_code``: 2 for bad input (a recipe, argument, run
directory, data file, preset, request or export location), 1 for a run that failed. Each class
also derives from the built-in error it stands for (``ValueError``, ``RuntimeError``), so code
that catches those keeps working.

Plain Python only. ``MtlzooError``, ``ServingError`` and ``ServingInputError`` are defined in
``mtlzoo_client.errors`` (the clients import them without Keras or TensorFlow) and re-exported here.
"""

from __future__ import annotations

from mtlzoo_client.errors import MtlzooError, ServingError, ServingInputError  # noqa: F401  (defined there)


def one_line(error: BaseException) -> str:
    """An error's message on one line (tarfile's and Keras's span several), as the CLI prints it."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


class ConfigError(MtlzooError, ValueError):
    """A recipe that cannot be used, with the file and the key at fault."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key = source, key
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class TuningError(MtlzooError, ValueError):
    """A recipe's ``tuning`` section that cannot be searched (checked before any trial runs)."""


class RunDirError(MtlzooError, ValueError):
    """A run directory that cannot be used as asked, or whose files are damaged."""


class TrainingDiverged(MtlzooError, RuntimeError):
    """The loss became NaN or infinite; the run keeps its last finite checkpoint."""

    exit_code = 1


class CompareError(MtlzooError, ValueError):
    """A comparison that cannot run as asked (checked before anything trains)."""


class DataIntegrityError(MtlzooError, ValueError):
    """A data or checksum file is malformed, a file's digest is not the expected one, or data
    holds values it must not (NaN, infinity).

    Attributes ``path``, ``expected`` and ``actual`` are set for digest mismatches.
    """

    def __init__(self, message: str, *, path: str | None = None, expected: str | None = None,
                 actual: str | None = None):
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


class PresetError(MtlzooError, ValueError):
    """A preset that cannot be found, read or trusted."""


class ExportError(MtlzooError, ValueError):
    """A model, input or location that cannot be exported or served as asked."""


class ServingConfigError(ExportError):
    """A TF Serving configuration that is invalid or cannot be built from what is on disk."""
