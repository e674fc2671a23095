"""TF Serving server-side configuration: ``models.config``, batching and monitoring files.

Everything is built as the protocol buffers TF Serving itself parses and written in their
text format with ``google.protobuf.text_format``, so a file this module writes is a file the
server accepts, and a file it reads back is checked field by field.

- ``find_exports(root)``: the exports under a folder laid out as ``root/NAME/<version>/``.
- ``model_server_config(...)`` / ``write_model_config(...)``: the ``--model_config_file``
  (a ``ModelServerConfig`` with one ``ModelConfig`` per export and a version policy).
- ``batching_parameters(...)``: the ``--batching_parameters_file`` (``BatchingParameters``).
- ``monitoring_config(...)``: the ``--monitoring_config_file`` (``MonitoringConfig``).

``tensorflow-serving-api`` ships ``ModelServerConfig`` but not ``BatchingParameters`` or
``MonitoringConfig``; where its modules are missing, those two messages are rebuilt here from
the upstream ``.proto`` definitions (same package, names and field numbers), in a private
descriptor pool so that they cannot clash with a package that does ship them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping

from google.protobuf import text_format
from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from mtlzoo.errors import ServingConfigError
from mtlzoo.io import atomic_path
from mtlzoo.validation import is_int

VERSION_POLICIES = ("latest", "all", "specific")
MODEL_PLATFORM = "tensorflow"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

MODEL_CONFIG_HEADER = (
    "# TF Serving model server config (ModelServerConfig, text format) for --model_config_file.\n"
    "# Written by `mtlzoo serving-config`: regenerate it rather than editing it by hand.\n"
)

# TF Serving only counts version directories whose whole name is a decimal integer.
_VERSION_DIR = re.compile(r"[0-9]+")
# The REST API routes /v1/models/NAME[/labels/LABEL]:predict, so a name or label holding '/'
# or ':' could never be addressed; whitespace would not survive most shells and URLs.
_BAD_NAME_CHARS = re.compile(r"[\s/:]")
_EXPECTED_LAYOUT = (
    "expected ROOT/NAME/<integer version>/saved_model.pb, e.g. export/models/kang_hard_sharing/1/ "
    "as written by `mtlzoo export RUN_DIR export/models/kang_hard_sharing`"
)




# ---------------------------------------------------------------------------------------------
# The two messages tensorflow-serving-api does not ship


def _mirrored_messages():
    """``(BatchingParameters, MonitoringConfig)`` classes, from TF Serving or rebuilt here."""
    try:
        from tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import BatchingParameters
    except ImportError:
        BatchingParameters = None
    try:
        from tensorflow_serving.config.monitoring_config_pb2 import MonitoringConfig
    except ImportError:
        MonitoringConfig = None
    if BatchingParameters is not None and MonitoringConfig is not None:
        return BatchingParameters, MonitoringConfig

    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    Field = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    def add_fields(message, fields):
        for name, number, kind, type_name, repeated in fields:
            field = message.field.add(name=name, number=number, type=kind)
            field.label = Field.LABEL_REPEATED if repeated else Field.LABEL_OPTIONAL
            if type_name:
                field.type_name = type_name

    # tensorflow_serving/servables/tensorflow/session_bundle_config.proto: BatchingParameters,
    # fields 1-7 (the documented ones). Fields added upstream later are not mirrored, so a
    # hand-written file using them reads back as an unknown-field error here, not in the server.
    int64_value = ".google.protobuf.Int64Value"
    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3", dependency=["google/protobuf/wrappers.proto"],
    )
    add_fields(batching.message_type.add(name="BatchingParameters"), [
        ("max_batch_size", 1, Field.TYPE_MESSAGE, int64_value, False),
        ("batch_timeout_micros", 2, Field.TYPE_MESSAGE, int64_value, False),
        ("max_enqueued_batches", 3, Field.TYPE_MESSAGE, int64_value, False),
        ("num_batch_threads", 4, Field.TYPE_MESSAGE, int64_value, False),
        ("thread_pool_name", 5, Field.TYPE_MESSAGE, ".google.protobuf.StringValue", False),
        ("allowed_batch_sizes", 6, Field.TYPE_INT64, None, True),
        ("pad_variable_length_inputs", 7, Field.TYPE_BOOL, None, False),
    ])
    # tensorflow_serving/config/monitoring_config.proto
    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving", syntax="proto3",
    )
    add_fields(monitoring.message_type.add(name="PrometheusConfig"), [
        ("enable", 1, Field.TYPE_BOOL, None, False),
        ("path", 2, Field.TYPE_STRING, None, False),
    ])
    add_fields(monitoring.message_type.add(name="MonitoringConfig"), [
        ("prometheus_config", 1, Field.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig", False),
    ])
    pool.Add(batching)
    pool.Add(monitoring)
    get = message_factory.GetMessageClass
    return (
        BatchingParameters or get(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
        MonitoringConfig or get(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")),
    )


BatchingParameters, MonitoringConfig = _mirrored_messages()


# ---------------------------------------------------------------------------------------------
# Finding exports


def find_exports(root: str | os.PathLike) -> dict[str, Path]:
    """``{model_name: root/model_name}`` for every export under ``root``, sorted by name.

    A direct subdirectory of ``root`` is an export when it holds at least one integer-named
    version directory containing ``saved_model.pb``. Hidden entries (a temporary export being
    renamed into place, editor files) are skipped.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"Export root {str(root)!r} does not exist; {_EXPECTED_LAYOUT}.")
    if not root.is_dir():
        raise NotADirectoryError(f"Export root {str(root)!r} is not a directory; {_EXPECTED_LAYOUT}.")
    found = {
        model.name: model
        for model in sorted(root.iterdir(), key=lambda p: p.name)
        if model.is_dir() and not model.name.startswith(".") and _versions_on_disk(model)
    }
    if not found:
        raise ServingConfigError(f"No exported models under {str(root)!r}; {_EXPECTED_LAYOUT}.")
    return found


def _versions_on_disk(model_dir: Path) -> list[int]:
    return sorted(
        int(v.name) for v in model_dir.iterdir()
        if _VERSION_DIR.fullmatch(v.name) and (v / "saved_model.pb").is_file()
    )


# ---------------------------------------------------------------------------------------------
# models.config


def model_server_config(
    models: Mapping[str, str],
    *,
    version_policy: str = "latest",
    num_versions: int = 1,
    versions: Iterable[int] | None = None,
    labels: Mapping[str, int] | None = None,
) -> ModelServerConfig:
    """A ``ModelServerConfig`` serving ``{name: base_path}`` with one version policy for all.

    Args:
        version_policy: ``"latest"`` (the newest ``num_versions`` versions), ``"all"``, or
            ``"specific"`` (exactly ``versions``).
        num_versions: only with ``"latest"``.
        versions: the version numbers to serve; only with ``"specific"``, and required there.
        labels: ``{label: version}`` aliases such as ``{"stable": 1, "canary": 2}``; only with
            ``"specific"``, each naming one of ``versions``. TF Serving lets a label point only
            at a version it has loaded, and only the ``specific`` policy fixes which those are.
    """
    if not isinstance(models, Mapping) or not models:
        raise ServingConfigError("models must be a non-empty mapping {model_name: base_path}.")
    if version_policy not in VERSION_POLICIES:
        raise ServingConfigError(f"version_policy must be one of {list(VERSION_POLICIES)}, got {version_policy!r}.")
    if not is_int(num_versions) or num_versions < 1:
        raise ServingConfigError(f"num_versions must be a positive integer, got {num_versions!r}.")
    if version_policy != "latest" and num_versions != 1:
        raise ServingConfigError(f"num_versions applies to the 'latest' policy only, not {version_policy!r}.")
    if version_policy == "specific":
        versions = _check_versions(versions)
    elif versions is not None:
        raise ServingConfigError(
            f"versions applies to the 'specific' policy only, not {version_policy!r}; "
            "pass version_policy='specific' to serve exactly those versions."
        )
    labels = dict(labels or {})
    if labels:
        _check_labels(labels, version_policy, versions)

    config = ModelServerConfig()
    for name, base_path in models.items():
        _check_name(name, "model name")
        if not isinstance(base_path, str) or not base_path:
            raise ServingConfigError(f"base_path of model {name!r} must be a non-empty string, got {base_path!r}.")
        model = config.model_config_list.config.add(name=name, base_path=base_path, model_platform=MODEL_PLATFORM)
        policy = model.model_version_policy
        if version_policy == "latest":
            policy.latest.num_versions = num_versions
        elif version_policy == "all":
            policy.all.SetInParent()  # an empty message, present: that is what selects the policy
        else:
            policy.specific.versions.extend(versions)
        for label, version in labels.items():
            model.version_labels[label] = version
    return config


def _check_name(name, what: str) -> None:
    if not isinstance(name, str) or name in ("", ".", "..") or _BAD_NAME_CHARS.search(name):
        raise ServingConfigError(
            f"Invalid {what} {name!r}: it must be a non-empty string without whitespace, '/' or ':' "
            "(it becomes part of TF Serving's REST paths, /v1/models/NAME[/labels/LABEL]:predict)."
        )


def _check_versions(versions) -> list[int]:
    if versions is None or isinstance(versions, (str, bytes)):
        raise ServingConfigError(
            f"The 'specific' policy needs versions, a list of version numbers such as [1, 2]; got {versions!r}."
        )
    versions = list(versions)
    bad = [v for v in versions if not is_int(v) or v < 1]
    if not versions or bad:
        raise ServingConfigError(
            f"versions must be a non-empty list of positive integers, got {versions!r}"
            + (f" (invalid: {bad!r})." if bad else ".")
        )
    return sorted(set(versions))


def _check_labels(labels: dict, version_policy: str, versions) -> None:
    if version_policy != "specific":
        raise ServingConfigError(
            f"Version labels {sorted(labels)} need the 'specific' version policy (not {version_policy!r}): "
            "a label may only point at a version the server loads, which only 'specific' pins."
        )
    for label, version in labels.items():
        _check_name(label, "version label")
        if not is_int(version) or version not in versions:
            raise ServingConfigError(
                f"Label {label!r} points at version {version!r}, which is not one of the served versions {versions}."
            )


def write_model_config(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    base_path_prefix: str | None = None,
    **policy,
) -> Path:
    """Write a ``models.config`` for every export under ``root`` to ``out`` (atomically).

    Each model's ``base_path`` is ``f"{base_path_prefix}/{name}"`` when a prefix is given (the
    folder as the server sees it, e.g. ``/models`` inside the container, or a ``gs://`` URI),
    else the absolute path of ``root/name`` on this machine. ``policy`` is passed to
    ``model_server_config`` (``version_policy``, ``num_versions``, ``versions``, ``labels``);
    with the ``specific`` policy every listed version must exist for every model, since the
    server would otherwise wait for it forever.
    """
    exports = find_exports(root)
    if base_path_prefix is not None:
        if not isinstance(base_path_prefix, str) or not base_path_prefix.strip():
            raise ServingConfigError(f"base_path_prefix must be a non-empty path such as '/models', got {base_path_prefix!r}.")
        prefix = base_path_prefix.rstrip("/")
        models = {name: f"{prefix}/{name}" for name in exports}
    else:
        models = {name: str(path.resolve()) for name, path in exports.items()}
    config = model_server_config(models, **policy)
    if policy.get("version_policy") == "specific":
        wanted = list(config.model_config_list.config[0].model_version_policy.specific.versions)
        for name, path in exports.items():
            missing = sorted(set(wanted) - set(_versions_on_disk(path)))
            if missing:
                raise ServingConfigError(
                    f"Model {name!r} has no version(s) {missing} under {str(path)!r} "
                    f"(it has {_versions_on_disk(path)}); export them first or change --versions."
                )
    return write_text_proto(config, out, header=MODEL_CONFIG_HEADER)


def read_model_config(path: str | os.PathLike) -> ModelServerConfig:
    """Parse a text-format ``ModelServerConfig`` (a ``models.config``)."""
    return read_text_proto(path, ModelServerConfig)


# ---------------------------------------------------------------------------------------------
# Batching and monitoring


def batching_parameters(
    max_batch_size: int = 64,
    batch_timeout_micros: int = 2000,
    num_batch_threads: int = 4,
    max_enqueued_batches: int = 4,
    allowed_batch_sizes: Iterable[int] = (),
    pad_variable_length_inputs: bool = False,
):
    """A ``BatchingParameters`` for ``--batching_parameters_file``; defaults suit a small CPU server.

    ``max_batch_size`` is also the largest request the server accepts while batching is on
    (bigger ones are refused, warmup requests included). ``allowed_batch_sizes``, if given,
    must increase and end at ``max_batch_size``; batches are padded up to the next size.
    """
    numbers = {
        "max_batch_size": max_batch_size, "batch_timeout_micros": batch_timeout_micros,
        "num_batch_threads": num_batch_threads, "max_enqueued_batches": max_enqueued_batches,
    }
    for key, value in numbers.items():
        least = 0 if key == "batch_timeout_micros" else 1  # a zero timeout is legal: never wait
        if not is_int(value) or value < least:
            raise ServingConfigError(f"{key} must be an integer >= {least}, got {value!r}.")
    sizes = list(allowed_batch_sizes)
    if sizes and (
        not all(is_int(s) and s >= 1 for s in sizes)
        or any(a >= b for a, b in zip(sizes, sizes[1:]))
        or sizes[-1] != max_batch_size
    ):
        raise ServingConfigError(
            f"allowed_batch_sizes must be increasing positive integers ending at max_batch_size "
            f"({max_batch_size}), got {sizes}."
        )
    params = BatchingParameters(pad_variable_length_inputs=bool(pad_variable_length_inputs))
    for key, value in numbers.items():
        getattr(params, key).value = value
    params.allowed_batch_sizes.extend(sizes)
    return params


def monitoring_config(path: str = PROMETHEUS_PATH):
    """A ``MonitoringConfig`` that exposes Prometheus metrics at ``path`` on the REST port."""
    if not isinstance(path, str) or not re.fullmatch(r"/[^\s:]*", path):
        raise ServingConfigError(f"Prometheus path must be an absolute URL path without spaces or ':', got {path!r}.")
    config = MonitoringConfig()
    config.prometheus_config.enable = True
    config.prometheus_config.path = path
    return config


# ---------------------------------------------------------------------------------------------
# Text-format files


def write_text_proto(message, out: str | os.PathLike, *, header: str = "") -> Path:
    """Write ``message`` in protobuf text format to ``out`` atomically; ``header`` is '#' comments."""
    if header and not all(line.startswith("#") for line in header.splitlines()):
        raise ServingConfigError("header must consist of '#' comment lines.")
    out = Path(out)
    text = (header.rstrip("\n") + "\n" if header else "") + text_format.MessageToString(message)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


def read_text_proto(path: str | os.PathLike, message_type):
    """Parse the text-format file ``path`` into a new ``message_type``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{message_type.DESCRIPTOR.name} file {str(path)!r} does not exist.")
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), message_type())
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise ServingConfigError(
            f"{str(path)!r} is not a valid {message_type.DESCRIPTOR.full_name} in protobuf text format: {e}"
        ) from None
