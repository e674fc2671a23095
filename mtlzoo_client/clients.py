"""REST and gRPC clients for a running TensorFlow Serving (see the package docstring)."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

import numpy as np

from mtlzoo_client.errors import ServingError
from mtlzoo_client.inputs import STRING, check_inputs, numpy_dtype

SERVING_DEFAULT = "serving_default"  # the signature key TF Serving answers when none is named


# TF Serving's dtype names (DataType enum) -> numpy dtype names; "string" is DT_STRING, which
# numpy holds as an object array of bytes.
_DTYPES = {
    "DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16",
    "DT_INT8": "int8", "DT_INT16": "int16", "DT_INT32": "int32", "DT_INT64": "int64",
    "DT_UINT8": "uint8", "DT_UINT16": "uint16", "DT_UINT32": "uint32", "DT_UINT64": "uint64",
    "DT_BOOL": "bool", "DT_STRING": STRING,
}


# ---------------------------------------------------------------------------------------------
# Signatures and outputs, shared by both clients


def _tensor_info(dtype: str, shape: list[int] | None) -> dict:
    return {"dtype": _DTYPES.get(dtype, dtype), "shape": shape}


def _signature_dict(inputs: dict, outputs: dict, method_name: str) -> dict:
    return {"inputs": dict(sorted(inputs.items())), "outputs": dict(sorted(outputs.items())),
            "method_name": method_name}


def _signatures_from_json(signature_defs: Mapping) -> dict:
    """Plain signatures from the JSON of a SignatureDefMap's ``signature_def`` field."""

    def info(tensor: Mapping) -> dict:
        shape = tensor.get("tensor_shape", {})
        dims = None if shape.get("unknown_rank") else [int(d.get("size", 0)) for d in shape.get("dim", [])]
        return _tensor_info(tensor.get("dtype", "DT_INVALID"), dims)

    return {
        name: _signature_dict(
            {k: info(v) for k, v in sig.get("inputs", {}).items()},
            {k: info(v) for k, v in sig.get("outputs", {}).items()},
            sig.get("method_name", ""),
        )
        for name, sig in sorted(signature_defs.items())
        if not name.startswith("__")  # __saved_model_init_op is not callable
    }


def _signatures_from_proto(signature_def_map) -> dict:
    """Plain signatures from a ``tensorflow.serving.SignatureDefMap`` message."""
    from tensorflow.core.framework import types_pb2

    def info(tensor) -> dict:
        shape = tensor.tensor_shape
        dims = None if shape.unknown_rank else [d.size for d in shape.dim]
        return _tensor_info(types_pb2.DataType.Name(tensor.dtype), dims)

    return {
        name: _signature_dict(
            {k: info(v) for k, v in sig.inputs.items()},
            {k: info(v) for k, v in sig.outputs.items()},
            sig.method_name,
        )
        for name, sig in sorted(signature_def_map.signature_def.items())
        if not name.startswith("__")
    }


def _output_array(value, dtype: str | None) -> np.ndarray:
    """An output array from its JSON value, decoding ``{"b64": ...}`` and text into bytes."""
    text = [False]

    def leaf(v):
        if isinstance(v, list):
            return [leaf(x) for x in v]
        if isinstance(v, dict) and set(v) == {"b64"}:
            text[0] = True
            return base64.b64decode(v["b64"])
        if isinstance(v, str):
            text[0] = True
            return v.encode()
        return v

    value = leaf(value)
    if text[0] or dtype == STRING:
        return np.array(value, dtype=object)
    return np.array(value, dtype=numpy_dtype(dtype))


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


# ---------------------------------------------------------------------------------------------
# REST


class RestClient:
    """TF Serving's REST API (``--rest_api_port``, 8501 by default), standard library only.

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8501"``.
        model: the model name (``--model_name`` or the name in ``models.config``).
        version: a version number to ask for (``/versions/{v}`` in the URL); default: the
            server's latest.
        signature: the signature to call.
        timeout: seconds to wait for each answer.
        validate: read the signature from the server once and check inputs before sending.
    """

    def __init__(self, url: str = "http://127.0.0.1:8501", model: str = "default", version: int | None = None,
                 signature: str = SERVING_DEFAULT, timeout: float = 10.0, *, validate: bool = True):
        self.url, self.model, self.version = url.rstrip("/"), model, version
        self.signature, self.timeout, self.validate = signature, timeout, validate
        self._signatures: dict | None = None

    def _model_url(self) -> str:
        url = f"{self.url}/v1/models/{urllib.parse.quote(self.model, safe='')}"
        return url if self.version is None else f"{url}/versions/{int(self.version)}"

    def _request(self, url: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as e:
            raise ServingError(_error_message(e.read()), url, status=e.code) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                raise ServingError(f"no answer within {self.timeout} s", url) from None
            raise ServingError(f"cannot connect ({e.reason})", url) from None
        except (TimeoutError, socket.timeout):
            raise ServingError(f"no answer within {self.timeout} s", url) from None
        except OSError as e:
            raise ServingError(f"connection failed ({e})", url) from None
        try:
            return json.loads(text)  # Python's json reads TF Serving's NaN / Infinity tokens
        except json.JSONDecodeError:
            raise ServingError(f"answered with something that is not JSON: {text[:200]!r}", url) from None

    def status(self) -> dict:
        """The model's version states (TF Serving's GetModelStatusResponse as JSON)."""
        return self._request(self._model_url())

    def metadata(self) -> dict:
        """``{signature: {"inputs": {name: {"dtype", "shape"}}, "outputs": {...}, "method_name"}}``.

        Shapes are lists with -1 for free dimensions (``None`` for unknown rank); dtypes are
        numpy names, or ``"string"``. Internal signatures (``__saved_model_init_op``) are left out.
        """
        body = self._request(self._model_url() + "/metadata")
        try:
            defs = body["metadata"]["signature_def"]["signature_def"]
        except (KeyError, TypeError):
            raise ServingError("metadata answer has no signature_def map", self._model_url() + "/metadata") from None
        return _signatures_from_json(defs)

    def _signature_spec(self) -> dict | None:
        if self._signatures is None:
            self._signatures = self.metadata()
        # An unknown signature is left for the server to report in its own words.
        return self._signatures.get(self.signature)

    def predict(self, inputs: Mapping[str, Any], format: str = "instances") -> dict[str, np.ndarray]:
        """``{output: array}`` for a batch of ``inputs``.

        ``format="instances"`` sends TF Serving's row format (one object per example),
        ``"inputs"`` the columnar format (one nested list per input); both answer the same.
        TF Serving leaves a lone output unnamed in its JSON; it is named from the signature
        (``metadata()``, fetched for that even when ``validate=False``).
        Bytes (and ``bytes`` object arrays) go as ``{"b64": ...}``; NaN and infinity are refused
        because strict JSON has no token for them.
        """
        if format not in ("instances", "inputs"):
            raise ValueError(f"format must be 'instances' (rows) or 'inputs' (columns), got {format!r}.")
        spec = self._signature_spec() if self.validate else None
        where = f"signature {self.signature!r} of model {self.model!r}"
        arrays = check_inputs(spec["inputs"] if spec else None, inputs, where=where, json_safe=True)
        columns = {name: _json_values(array) for name, array in arrays.items()}
        body: dict[str, Any] = {"signature_name": self.signature}
        if format == "instances":
            size = next(iter(arrays.values())).shape[0]
            body["instances"] = [{name: col[i] for name, col in columns.items()} for i in range(size)]
        else:
            body["inputs"] = columns
        url = self._model_url() + ":predict"
        answer = self._request(url, body)
        key = "predictions" if format == "instances" else "outputs"
        if not isinstance(answer, dict) or key not in answer:
            raise ServingError(f"answer has no {key!r}: {str(answer)[:200]}", url)
        return self._parse(answer[key], rows=format == "instances", spec=spec, url=url)

    def _parse(self, value, *, rows: bool, spec: dict | None, url: str) -> dict[str, np.ndarray]:
        names = list(spec["outputs"]) if spec else None
        if rows:
            several = bool(value) and all(isinstance(r, dict) and not _is_b64(r) for r in value)
        else:
            several = isinstance(value, dict) and not _is_b64(value)
        if names is not None:
            several = len(names) > 1
        if several:
            if rows:
                keys = list(value[0]) if value else (names or [])
                columns = {k: [row[k] for row in value] for k in keys}
            else:
                columns = dict(value)
        else:
            # TF Serving drops the name of a lone output; the signature says what it is.
            if names is None:
                spec = self._signature_spec()
                names = list(spec["outputs"]) if spec else []
            if len(names) != 1:
                raise ServingError(
                    f"answer has one unnamed output but signature {self.signature!r} declares {names}", url)
            columns = {names[0]: value}
        dtypes = {k: v["dtype"] for k, v in spec["outputs"].items()} if spec else {}
        return {k: _output_array(columns[k], dtypes.get(k)) for k in sorted(columns)}


def _json_values(array: np.ndarray):
    """Nested lists for JSON; bytes become TF Serving's ``{"b64": ...}`` objects."""
    if array.dtype.kind == "S" or array.dtype.kind == "O":
        def leaf(v):
            if isinstance(v, list):
                return [leaf(x) for x in v]
            return {"b64": base64.b64encode(v).decode("ascii")} if isinstance(v, bytes) else v
        return leaf(array.tolist())
    return array.tolist()


def _error_message(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:500] or "(empty answer)"
    return str(body["error"]) if isinstance(body, dict) and "error" in body else text[:500]


# ---------------------------------------------------------------------------------------------
# gRPC


class GrpcClient:
    """TF Serving's gRPC PredictionService (``--port``, 8500 by default).

    Arguments as for ``RestClient``, with ``target`` (``host:port``) for the URL. Use it as a
    context manager, or call ``close()``, to release the channel.
    """

    def __init__(self, target: str = "127.0.0.1:8500", model: str = "default", version: int | None = None,
                 signature: str = SERVING_DEFAULT, timeout: float = 10.0, *, validate: bool = True):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.target, self.model, self.version = target, model, version
        self.signature, self.timeout, self.validate = signature, timeout, validate
        # Batches of images outgrow gRPC's 4 MB default; TF Serving itself takes large messages.
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        )
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._signatures: dict | None = None

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> "GrpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fill_spec(self, spec, signature: bool = True) -> None:
        spec.name = self.model
        if self.version is not None:
            spec.version.value = int(self.version)
        if signature:
            spec.signature_name = self.signature

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            raise ServingError(details or str(e), self.target, code=code.name if code else "UNKNOWN") from None

    def metadata(self) -> dict:
        """The model's signatures, in the same plain form as ``RestClient.metadata()``."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._fill_spec(request.model_spec, signature=False)
        response = self._call(self._stub.GetModelMetadata, request)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signature_defs):
            raise ServingError("metadata answer has no SignatureDefMap", self.target)
        return _signatures_from_proto(signature_defs)

    def _signature_spec(self) -> dict | None:
        if self._signatures is None:
            self._signatures = self.metadata()
        return self._signatures.get(self.signature)

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``{output: array}`` for a batch of ``inputs`` (numpy arrays keep their dtype)."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        spec = self._signature_spec() if self.validate else None
        where = f"signature {self.signature!r} of model {self.model!r}"
        arrays = check_inputs(spec["inputs"] if spec else None, inputs, where=where)
        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec)
        for name, array in arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        response = self._call(self._stub.Predict, request)
        return {name: tf.make_ndarray(response.outputs[name]) for name in sorted(response.outputs)}
