"""Stand-ins for TensorFlow Serving's REST and gRPC prediction APIs, for the client tests.

``tensorflow_model_server`` cannot be installed on the machines that run this suite, so
``tests/serving/test_clients.py`` talks to these small servers instead. They load real
SavedModels (``tf.saved_model.load(path, tags=["serve"])``, one per integer version under a
model base path) and answer the way TF Serving 2.x does, as read from its sources
(``model_servers/http_rest_api_handler.cc``, ``http_rest_api_util.cc``, ``util/json_tensor.cc``,
``servables/tensorflow/predict_util.cc``, ``get_model_metadata_impl.cc``):

- REST: ``POST /v1/models/NAME[/versions/V]:predict`` with ``"instances"`` (rows; plain values
  allowed for a single input) or ``"inputs"`` (columns) and optional ``"signature_name"``;
  ``{"predictions": ...}`` / ``{"outputs": ...}`` answers, a lone output unnamed; ``{"b64": ...}``
  for bytes in, and out for outputs named ``*_bytes``; NaN / Infinity tokens accepted;
  ``GET /v1/models/NAME[/versions/V][/metadata]``; errors as ``{"error": msg}`` with TF Serving's
  HTTP mapping of status codes (INVALID_ARGUMENT and FAILED_PRECONDITION 400, NOT_FOUND 404).
- gRPC: ``PredictionService.Predict`` and ``GetModelMetadata`` (``signature_def``), failing with
  TF Serving's codes: NOT_FOUND for an unknown model or version, FAILED_PRECONDITION for an
  unknown signature (INVALID_ARGUMENT over REST, where it is found while parsing), and
  INVALID_ARGUMENT for inputs that do not fit.
- Versions: the ``latest`` policy (TF Serving's default) serves only the newest version;
  ``policy="all"`` serves every version found.

They are test infrastructure, not a server to deploy: no batching, labels, classify/regress,
or reloading. The real server is checked by ``test_real_tensorflow_model_server`` in
``tests/serving/test_clients.py``, which runs wherever ``tensorflow_model_server`` is on PATH.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

Code = grpc.StatusCode
# TF Serving's http_server.cc ToHTTPStatusCode, for the codes the stand-ins produce.
HTTP_STATUS = {
    Code.INVALID_ARGUMENT: 400, Code.FAILED_PRECONDITION: 400, Code.OUT_OF_RANGE: 400,
    Code.NOT_FOUND: 404, Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500, Code.UNKNOWN: 500,
}


class Failure(Exception):
    """A request that fails with a gRPC status code and TF Serving's message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _invalid(message: str) -> Failure:
    return Failure(Code.INVALID_ARGUMENT, message)


# ---------------------------------------------------------------------------------------------
# Models on disk


class Servable:
    """One loaded version: the SavedModel's signature defs and its callable signatures."""

    def __init__(self, name: str, version: int, path: Path):
        self.name, self.version, self.path = name, version, path
        self.loaded = tf.saved_model.load(str(path), tags=["serve"])
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        # TF Serving reports the MetaGraphDef's signature defs as they are, init op included.
        self.signature_defs = proto.meta_graphs[0].signature_def

    def signature_def(self, signature: str, *, rest: bool = False):
        signature = signature or "serving_default"
        if signature not in self.signature_defs or signature not in self.loaded.signatures:
            if rest:  # found while parsing the JSON body (GetInfoMap)
                raise _invalid(f'Serving signature name: "{signature}" not found in signature def')
            raise Failure(Code.FAILED_PRECONDITION, f'Serving signature key "{signature}" not found.')
        return self.signature_defs[signature]

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        signature = signature or "serving_default"
        sig = self.signature_def(signature)
        expected, given = set(sig.inputs), set(inputs)
        if expected != given:
            raise _invalid(
                f"input size does not match signature: {len(given)}!={len(expected)} "
                f"len({{{','.join(sorted(given))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(given - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - given))}}}."
            )
        tensors = {}
        for name, info in sig.inputs.items():
            array, dtype = inputs[name], tf.dtypes.as_dtype(info.dtype)
            try:
                got = tf.string if array.dtype == object else tf.dtypes.as_dtype(array.dtype)
            except TypeError:
                raise _invalid(f"input {name} has dtype {array.dtype}, which is not a TensorFlow type") from None
            if got != dtype:
                raise _invalid(f"Expects arg[{name}] to be {dtype.name} but {got.name} is provided")
            # A concrete function does not check shapes (a wrong rank can abort the process in a
            # kernel), so check them as the graph's placeholders would.
            dims = [d.size for d in info.tensor_shape.dim]
            if not info.tensor_shape.unknown_rank and (
                array.ndim != len(dims) or any(w >= 0 and g != w for g, w in zip(array.shape, dims))
            ):
                raise _invalid(
                    f"input {name} has shape {list(array.shape)}, incompatible with the signature's "
                    f"{dims}"
                )
            tensors[name] = tf.constant(array, dtype=dtype)
        try:
            outputs = self.loaded.signatures[signature](**tensors)
        except tf.errors.OpError as e:
            raise Failure(_grpc_code(e), e.message) from None
        return {k: v.numpy() for k, v in outputs.items()}


def _grpc_code(error: tf.errors.OpError) -> grpc.StatusCode:
    for code in Code:
        if code.value[0] == error.error_code:
            return code
    return Code.UNKNOWN


class ModelRepository:
    """The models a stand-in serves: ``{name: base_path}``, each base holding ``<version>/`` dirs."""

    def __init__(self, models: Mapping[str, str | Path], *, policy: str = "latest"):
        if policy not in ("latest", "all"):
            raise ValueError(f"policy must be 'latest' (TF Serving's default) or 'all', got {policy!r}.")
        self.models: dict[str, dict[int, Servable]] = {}
        for name, base in models.items():
            base = Path(base)
            versions = sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())
            if not versions:
                raise FileNotFoundError(f"no version directories under {base}")
            chosen = versions if policy == "all" else versions[-1:]
            self.models[name] = {v: Servable(name, v, base / str(v)) for v in chosen}

    def servable(self, name: str, version: int | None) -> Servable:
        versions = self.models.get(name, {})
        if version is None and versions:
            return versions[max(versions)]
        if version in versions:
            return versions[version]
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise Failure(Code.NOT_FOUND, f"Servable not found for request: {request}")

    def status(self, name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
        versions = self.models.get(name, {})
        if version is not None and version not in versions:
            raise Failure(Code.NOT_FOUND, f"Could not find version {version} of model {name}")
        if not versions:
            raise Failure(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in [version] if version is not None else sorted(versions):
            entry = response.model_version_status.add(version=v)
            entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            entry.status.error_message = ""  # error_code OK
        return response

    def metadata(self, name: str, version: int | None) -> get_model_metadata_pb2.GetModelMetadataResponse:
        servable = self.servable(name, version)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(value)
        response.metadata["signature_def"].Pack(signature_map)
        return response


# ---------------------------------------------------------------------------------------------
# REST: TF Serving's JSON tensor encoding


def _json_text(value) -> str:
    return json.dumps(value)[:200]


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _json_scalar(value, dtype: tf.DType):
    def type_error():
        return _invalid(f"JSON Value: {_json_text(value)} Type: {_json_type(value)} is not of expected type: {dtype.name}")

    if dtype == tf.string:
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, dict):
            if not _is_b64(value):
                raise _invalid(f"JSON Value: {_json_text(value)} not formatted correctly for base64 data")
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise _invalid("Unable to base64 decode") from None
        raise type_error()
    if dtype == tf.bool:
        if not isinstance(value, bool):
            raise type_error()
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error()
    if dtype.is_floating:
        if np.isfinite(value) and abs(value) > dtype.max:
            raise _invalid(f"Cannot convert JSON value: {_json_text(value)} to {dtype.name} without loss of precision.")
        return value
    if not isinstance(value, int) or not dtype.min <= value <= dtype.max:
        raise type_error()
    return value


def json_to_array(value, dtype: tf.DType) -> np.ndarray:
    """A dense array of ``dtype`` from a JSON value (scalar or nested lists), as TF Serving reads it."""
    shape, probe = [], value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat = []

    def fill(v, level):
        if not isinstance(v, list):
            if level != len(shape):
                raise _invalid(
                    f"JSON Value: {_json_text(v)} found at incorrect level: {level + 1} in the JSON DOM. "
                    f"Expected at level: {len(shape)}"
                )
            flat.append(_json_scalar(v, dtype))
            return
        if level >= len(shape):
            raise _invalid(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
        if len(v) != shape[level]:
            raise _invalid(
                f"Encountered list at unexpected size: {len(v)} at level: {level} expected size: {shape[level]}"
            )
        for item in v:
            fill(item, level + 1)

    fill(value, 0)
    numpy_dtype = object if dtype == tf.string else dtype.as_numpy_dtype
    return np.array(flat, dtype=numpy_dtype).reshape(shape)


def request_arrays(body, input_dtypes: Mapping[str, tf.DType]) -> tuple[dict[str, np.ndarray], str]:
    """``({input: array}, "rows" | "columns")`` from a parsed predict request body."""
    if not isinstance(body, dict):
        raise _invalid(f"JSON Value: {_json_text(body)} Is not object")
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows and has_columns:
        raise _invalid(
            f"JSON Value: {_json_text(body)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    if has_rows:
        return _rows_to_arrays(body["instances"], input_dtypes, body), "rows"
    if has_columns:
        return _columns_to_arrays(body["inputs"], input_dtypes), "columns"
    raise _invalid("Missing 'inputs' or 'instances' key")


def _rows_to_arrays(rows, dtypes, body) -> dict[str, np.ndarray]:
    if not isinstance(rows, list):
        raise _invalid(f"JSON Value: {_json_text(body)} Excepting 'instances' to be an list/array")
    if not rows:
        raise _invalid(f"JSON Value: {_json_text(body)} No values in 'instances' array")

    def is_object(v):
        return isinstance(v, dict) and not _is_b64(v)

    objects = is_object(rows[0])
    if not objects and len(dtypes) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    names = sorted(dtypes)
    items: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for index, row in enumerate(rows):
        if objects != is_object(row):
            what = "object but got list" if objects else "value/list but got object"
            raise _invalid(f"Expecting {what} at item {index} of input list")
        if not objects:
            row = {names[0]: row}
        elif set(row) != set(names):
            unknown = sorted(set(row) - set(names))
            if unknown:
                raise _invalid(
                    f"Failed to process element: {index} key: {unknown[0]} of 'instances' list. "
                    f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {unknown[0]}"
                )
            raise _invalid(
                f"Failed to process element: {index} of 'instances' list. JSON object: {_json_text(row)} "
                f"keys must be equal to: {','.join(names)}"
            )
        for name, value in row.items():
            array = json_to_array(value, dtypes[name])
            if items[name] and items[name][0].shape != array.shape:
                raise _invalid(
                    f"Failed to process element: {index} key: {name} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: Expecting shape {list(items[name][0].shape)} but got: {list(array.shape)}"
                )
            items[name].append(array)
    return {name: np.stack(arrays) for name, arrays in items.items()}


def _columns_to_arrays(columns, dtypes) -> dict[str, np.ndarray]:
    if not isinstance(columns, dict) or _is_b64(columns):
        if len(dtypes) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        (name, dtype), = dtypes.items()
        return {name: json_to_array(columns, dtype)}
    arrays = {}
    for name, dtype in dtypes.items():  # like TF Serving, extra keys are ignored
        if name not in columns:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = json_to_array(columns[name], dtype)
    return arrays


def array_to_json(array: np.ndarray, as_bytes: bool):
    """Nested lists for an output; float32 written with its shortest round-trip digits."""
    if array.dtype == object or array.dtype.kind == "S":
        def text(v):
            return {"b64": base64.b64encode(v).decode()} if as_bytes else v.decode("utf-8", "replace")
        return _map_leaves(array.tolist(), text)
    if array.dtype in (np.float32, np.float16):
        kind = array.dtype.type
        return _map_leaves(array.tolist(), lambda v: float(str(kind(v))) if np.isfinite(v) else v)
    return array.tolist()


def _map_leaves(value, fn):
    return [_map_leaves(v, fn) for v in value] if isinstance(value, list) else fn(value)


def response_body(outputs: Mapping[str, np.ndarray], layout: str) -> dict:
    """TF Serving's ``{"predictions": ...}`` (rows) or ``{"outputs": ...}`` (columns) answer."""
    names = sorted(outputs)
    values = {n: array_to_json(outputs[n], n.endswith("_bytes")) for n in names}
    if layout == "columns":
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    batch = None
    for name in names:
        if outputs[name].ndim == 0:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        if batch is not None and outputs[name].shape[0] != batch:
            raise _invalid(
                f"Tensor name: {name} has inconsistent batch size: {outputs[name].shape[0]} expecting: {batch}"
            )
        batch = outputs[name].shape[0]
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{n: values[n][i] for n in names} for i in range(batch)]}


_PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:(classify|regress|predict)", re.I)
_MODEL_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+))?(?:/(metadata))?", re.I)


class _RestHandler(BaseHTTPRequestHandler):
    repository: ModelRepository  # set on the subclass made per server

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not path.lower().startswith("/v1/"):
            return self._send(404, b"", "text/plain")  # TF Serving's dispatcher ignores other paths
        try:
            payload = self._handle(method, path, body)
            status = 200
        except Failure as failure:
            payload, status = {"error": failure.message}, HTTP_STATUS.get(failure.code, 500)
        # Python's json writes NaN / Infinity tokens, as TF Serving does.
        self._send(status, json.dumps(payload, indent=1).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str, path: str, body: bytes):
        repo = self.repository
        match = _PREDICT_PATH.fullmatch(path) if method == "POST" else _MODEL_PATH.fullmatch(path)
        if match is None:
            raise _invalid(f"Malformed request: {method} {path}")
        name = urllib.parse.unquote(match.group(1) or "")
        version = int(match.group(2)) if match.group(2) else None
        if method == "GET":
            if not name:
                raise _invalid("Missing model name in request.")
            if match.group(3):
                return _metadata_json(repo.metadata(name, version))
            return json_format.MessageToDict(
                repo.status(name, version), always_print_fields_with_no_presence=True
            )
        if match.group(3).lower() != "predict":
            raise Failure(Code.UNIMPLEMENTED, f"the stand-in answers only :predict, not :{match.group(3)}")
        try:
            request = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _invalid(f"JSON Parse error: {e}") from None
        if request is None:
            raise _invalid("JSON Parse error: The document is empty")
        signature = request.get("signature_name", "") if isinstance(request, dict) else ""
        if not isinstance(signature, str):
            raise _invalid(
                f"JSON Value: {_json_text(request)} not formatted correctly. 'signature_name' key must be a string value."
            )
        servable = repo.servable(name, version)
        sig = servable.signature_def(signature, rest=True)
        dtypes = {k: tf.dtypes.as_dtype(v.dtype) for k, v in sig.inputs.items()}
        arrays, layout = request_arrays(request, dtypes)
        return response_body(servable.run(signature, arrays), layout)


def _metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict:
    # TF Serving prints the model spec and the unpacked SignatureDefMap with proto field names
    # and default values (http_rest_api_util.cc ToJsonString).
    options = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    return {
        "model_spec": json_format.MessageToDict(response.model_spec, **options),
        "metadata": {"signature_def": json_format.MessageToDict(signature_map, **options)},
    }


class RestStandIn:
    """TF Serving's REST API on ``127.0.0.1`` (a free port unless given); use as a context manager."""

    def __init__(self, repository: ModelRepository, port: int = 0):
        handler = type("Handler", (_RestHandler,), {"repository": repository})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="rest-standin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "RestStandIn":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# gRPC


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repository: ModelRepository):
        self.repository = repository

    @staticmethod
    def _version(spec) -> int | None:
        return spec.version.value if spec.HasField("version") else None

    def Predict(self, request, context):
        try:
            servable = self.repository.servable(request.model_spec.name, self._version(request.model_spec))
            inputs = {}
            for name, proto in request.inputs.items():
                try:
                    inputs[name] = tf.make_ndarray(proto)
                except Exception as e:  # a malformed TensorProto
                    raise _invalid(f"input {name}: {e}") from None
            signature = request.model_spec.signature_name or "serving_default"
            outputs = servable.run(signature, inputs)
        except Failure as failure:
            context.abort(failure.code, failure.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        try:
            if not request.metadata_field:
                raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
            unsupported = [f for f in request.metadata_field if f != "signature_def"]
            if unsupported:
                raise _invalid(f"Metadata field {unsupported[0]} is not supported")
            return self.repository.metadata(request.model_spec.name, self._version(request.model_spec))
        except Failure as failure:
            context.abort(failure.code, failure.message)


class GrpcStandIn:
    """TF Serving's gRPC PredictionService on ``127.0.0.1`` (a free port unless given)."""

    def __init__(self, repository: ModelRepository, port: int = 0):
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(repository), self._server
        )
        bound = self._server.add_insecure_port(f"127.0.0.1:{port}")
        if not bound:
            raise OSError(f"cannot bind the gRPC stand-in to 127.0.0.1:{port}")
        self.target = f"127.0.0.1:{bound}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait(timeout=10)

    def __enter__(self) -> "GrpcStandIn":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
