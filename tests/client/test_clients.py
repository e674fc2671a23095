"""REST and gRPC clients (mtlzoo_client) against servers that answer like TF Serving.

The servers are the stand-ins in ``serving_standin.py`` (real SavedModels, TF Serving's wire
formats); the last test runs the same checks against ``tensorflow_model_server`` itself where
that binary is installed.
"""

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo_client import GrpcClient, RestClient, ServingError, ServingInputError
from serving_standin import GrpcStandIn, ModelRepository, RestStandIn

TASKS = [mtlzoo.Task("kind", "classification", num_classes=3), mtlzoo.Task("score", "regression")]
X = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
IMAGES = np.random.default_rng(1).integers(0, 256, size=(3, 4, 4, 1), dtype="uint8")
TEXT = {"text": np.array([b"a", b"\xff\x00binary", "caf\u00e9".encode()], dtype=object),
        "weight": np.array([1.0, 0.5, 2.0], dtype="float32")}


class _TextModel(tf.Module):
    """Two inputs, one of them bytes, and a ``*_bytes`` output: TF Serving's b64 cases."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([None], tf.float32, name="weight")])
    def serve(self, text, weight):
        length = tf.strings.length(text)
        return {"length": length, "scaled": weight * tf.cast(length, tf.float32), "text_bytes": text}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``multi``: two versions of a two-task model; ``single``: one uint8 input, one output; ``text``."""
    root = tmp_path_factory.mktemp("serving")
    models = {}
    for version, seed in ((1, 0), (2, 1)):
        keras.utils.set_random_seed(seed)
        models[version] = mtlzoo.create_model("hard_sharing", TASKS, {"features": (5,)}, shared_units=[8])
        mtlzoo.export_saved_model(models[version], root / "multi", version)
    keras.utils.set_random_seed(2)
    single = mtlzoo.create_model(
        "hard_sharing", [mtlzoo.Task("score", "regression")],
        {"image": {"shape": (4, 4, 1), "dtype": "uint8", "scale": 1 / 255}}, shared_units=[4], filters=[2],
    )
    mtlzoo.export_saved_model(single, root / "single")
    text = _TextModel()
    tf.saved_model.save(text, str(root / "text" / "1"), signatures={"serving_default": text.serve})
    return {"root": root, "multi": models, "single": single}


@pytest.fixture(scope="module")
def servers(exports):
    """REST and gRPC stand-ins serving every version of the three models."""
    root = exports["root"]
    repository = ModelRepository({n: root / n for n in ("multi", "single", "text")}, policy="all")
    rest = RestStandIn(repository)
    try:
        grpc_server = GrpcStandIn(repository)
    except Exception:
        rest.stop()
        raise
    yield {"rest": rest.url, "grpc": grpc_server.target, "root": root}
    rest.stop()
    grpc_server.stop()


@pytest.fixture
def grpc_client(servers):
    clients = []

    def make(**kwargs):
        clients.append(GrpcClient(servers["grpc"], timeout=10, **kwargs))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


_LOADED = {}


def direct(path, inputs, signature="serving_default"):
    """What the SavedModel's signature itself answers."""
    path = str(path)
    if path not in _LOADED:
        _LOADED[path] = tf.saved_model.load(path, tags=["serve"])
    outputs = _LOADED[path].signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


def assert_same(got, expected, atol=1e-6):
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        if value.dtype == object:
            assert got[name].tolist() == value.tolist(), name
        else:
            assert got[name].dtype == value.dtype, name
            np.testing.assert_allclose(got[name], value, atol=atol, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Answers


def test_rest_rows_rest_columns_and_grpc_answer_what_the_signature_and_model_do(servers, exports, grpc_client):
    expected = direct(servers["root"] / "multi" / "2", {"features": X})
    assert {"kind", "score"} <= set(expected)
    rest = RestClient(servers["rest"], model="multi", timeout=10)
    answers = {
        "rows": rest.predict({"features": X}),
        "columns": rest.predict({"features": X}, format="inputs"),
        "grpc": grpc_client(model="multi").predict({"features": X}),
    }
    keras_outputs = exports["multi"][2].predict({"features": X}, verbose=0)
    for how, answer in answers.items():
        assert_same(answer, expected)
        for task, value in keras_outputs.items():
            np.testing.assert_allclose(answer[task], value, atol=1e-5, err_msg=f"{how}: {task}")


def test_the_rest_client_answers_without_keras_tensorflow_or_mtlzoo(servers):
    """A machine that only sends requests imports mtlzoo_client: the standard library and numpy."""
    code = f"""
import sys
import numpy as np
from mtlzoo_client import RestClient
answer = RestClient({servers["rest"]!r}, model="multi").predict({{"features": np.load(sys.argv[1])}})
np.savez(sys.argv[2], **answer)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "mtlzoo", "tensorflow_datasets")))
"""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", X)
        proc = subprocess.run([sys.executable, "-c", code, f"{tmp}/x.npy", f"{tmp}/answer.npz"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip() == "[]"
        with np.load(f"{tmp}/answer.npz") as answer:
            assert_same(dict(answer), direct(servers["root"] / "multi" / "2", {"features": X}))


def test_python_lists_are_converted_to_the_signature_dtypes(servers, grpc_client):
    expected = direct(servers["root"] / "multi" / "2", {"features": X})
    as_lists = {"features": X.tolist()}  # float64 in Python: sent as float32, which the signature takes
    assert_same(RestClient(servers["rest"], model="multi").predict(as_lists), expected)
    assert_same(grpc_client(model="multi").predict(as_lists), expected)
    images = {"image": IMAGES.tolist()}  # int64 in Python: uint8 fits
    expected = direct(servers["root"] / "single" / "1", {"image": IMAGES})
    assert_same(grpc_client(model="single").predict(images), expected)


def test_versions_in_the_url_and_the_request(servers, exports, grpc_client):
    root = servers["root"]
    for version in (1, 2):
        expected = direct(root / "multi" / str(version), {"features": X})
        keras_scores = exports["multi"][version].predict({"features": X}, verbose=0)["score"]
        rest = RestClient(servers["rest"], model="multi", version=version)
        for answer in (rest.predict({"features": X}), grpc_client(model="multi", version=version).predict({"features": X})):
            assert_same(answer, expected)
            np.testing.assert_allclose(answer["score"], keras_scores, atol=1e-5)
    assert not np.allclose(direct(root / "multi" / "1", {"features": X})["score"],
                           direct(root / "multi" / "2", {"features": X})["score"])
    status = RestClient(servers["rest"], model="multi").status()
    assert [(s["version"], s["state"]) for s in status["model_version_status"]] == [("1", "AVAILABLE"), ("2", "AVAILABLE")]
    assert RestClient(servers["rest"], model="multi", version=1).status()["model_version_status"][0]["version"] == "1"


def test_single_output_answers_are_named_from_the_signature(servers, grpc_client):
    expected = direct(servers["root"] / "single" / "1", {"image": IMAGES})
    assert list(expected) == ["score"]
    for validate in (True, False):  # without validation the client asks the metadata for the name
        for fmt in ("instances", "inputs"):
            rest = RestClient(servers["rest"], model="single", validate=validate)
            assert_same(rest.predict({"image": IMAGES}, format=fmt), expected)
    assert_same(grpc_client(model="single").predict({"image": IMAGES}), expected)
    # A per-task signature of the multi-task export is single-output too.
    expected = direct(servers["root"] / "multi" / "2", {"features": X}, "predict_score")
    rest = RestClient(servers["rest"], model="multi", signature="predict_score")
    assert_same(rest.predict({"features": X}), expected)
    assert_same(grpc_client(model="multi", signature="predict_score").predict({"features": X}), expected)


def test_bytes_travel_as_b64_and_several_inputs_as_rows(servers, grpc_client):
    expected = direct(servers["root"] / "text" / "1", TEXT)
    assert expected["text_bytes"].tolist() == TEXT["text"].tolist()
    rest = RestClient(servers["rest"], model="text")
    assert_same(rest.predict(TEXT), expected)
    assert_same(rest.predict(TEXT, format="inputs"), expected)
    assert_same(grpc_client(model="text").predict(TEXT), expected)
    # str is sent as UTF-8 bytes.
    as_str = {"text": ["a", "caf\u00e9"], "weight": [1.0, 1.0]}
    np.testing.assert_array_equal(rest.predict(as_str)["length"], [1, 5])


def test_metadata_lists_signatures_with_dtypes_and_shapes(servers, grpc_client):
    rest = RestClient(servers["rest"], model="multi").metadata()
    assert rest == grpc_client(model="multi").metadata()
    assert "serving_default" in rest and not any(name.startswith("__") for name in rest)
    default = rest["serving_default"]
    assert default["inputs"] == {"features": {"dtype": "float32", "shape": [-1, 5]}}
    signature = tf.saved_model.load(str(servers["root"] / "multi" / "2")).signatures["serving_default"]
    assert default["outputs"] == {
        name: {"dtype": spec.dtype.name, "shape": [-1 if d is None else d for d in spec.shape.as_list()]}
        for name, spec in sorted(signature.structured_outputs.items())
    }
    text = RestClient(servers["rest"], model="text").metadata()["serving_default"]
    assert text["inputs"]["text"] == {"dtype": "string", "shape": [-1]}


# ---------------------------------------------------------------------------------------------
# Errors


def test_unknown_model_version_and_signature_are_server_errors(servers, grpc_client):
    with pytest.raises(ServingError, match="nosuchmodel") as info:
        RestClient(servers["rest"], model="nosuchmodel").predict({"features": X})
    assert info.value.status == 404 and info.value.target.startswith(servers["rest"])
    with pytest.raises(ServingError, match="nosuchmodel") as info:
        grpc_client(model="nosuchmodel").predict({"features": X})
    assert info.value.code == "NOT_FOUND" and info.value.target == servers["grpc"]
    with pytest.raises(ServingError, match=r"Specific\(multi, 7\)") as info:
        RestClient(servers["rest"], model="multi", version=7).predict({"features": X})
    assert info.value.status == 404 and info.value.target.endswith("/v1/models/multi/versions/7/metadata")
    with pytest.raises(ServingError, match=r"Specific\(multi, 7\)") as info:
        RestClient(servers["rest"], model="multi", version=7, validate=False).predict({"features": X})
    assert info.value.target.endswith("/v1/models/multi/versions/7:predict")
    with pytest.raises(ServingError, match="predict_nothing") as info:
        RestClient(servers["rest"], model="multi", signature="predict_nothing").predict({"features": X})
    assert info.value.status == 400  # TF Serving: INVALID_ARGUMENT while parsing the body
    with pytest.raises(ServingError, match="predict_nothing") as info:
        grpc_client(model="multi", signature="predict_nothing").predict({"features": X})
    assert info.value.code == "FAILED_PRECONDITION"


def test_wrong_input_names_are_caught_before_sending_and_by_the_server(servers, grpc_client):
    for client in (RestClient(servers["rest"], model="multi"), grpc_client(model="multi")):
        with pytest.raises(ServingInputError, match=r"\['feature'\].*takes \['features'\].*missing \['features'\]"):
            client.predict({"feature": X})
    with pytest.raises(ServingError, match="feature") as info:
        RestClient(servers["rest"], model="multi", validate=False).predict({"feature": X})
    assert info.value.status == 400
    with pytest.raises(ServingError, match="Missing named input: features") as info:
        RestClient(servers["rest"], model="multi", validate=False).predict({"feature": X}, format="inputs")
    with pytest.raises(ServingError, match="Missing but required: {features}") as info:
        grpc_client(model="multi", validate=False).predict({"feature": X})
    assert info.value.code == "INVALID_ARGUMENT"


def test_wrong_dtype_or_shape_is_a_clear_client_error(servers, grpc_client):
    expected = direct(servers["root"] / "multi" / "2", {"features": X})
    for client in (RestClient(servers["rest"], model="multi"), grpc_client(model="multi")):
        with pytest.raises(ServingInputError) as info:
            client.predict({"features": np.zeros((3, 7), dtype="int64")})
        assert str(info.value) == "input 'features' has shape [3, 7]; expected float32 with shape [batch, 5]."
        with pytest.raises(ServingInputError, match=r"has shape \[6\]; expected float32 with shape \[batch, 5\]"):
            client.predict({"features": X[:, 0]})
        with pytest.raises(ServingInputError, match=r"has dtype bool; expected float32 .*\(true/false is not a number\)"):
            client.predict({"features": X > 0})
        # The rule of a local prediction (mtlzoo predict): float64 and integers feed a float32 input.
        assert_same(client.predict({"features": X.astype("float64")}), expected)
    with pytest.raises(ServingInputError, match=r"input 'image' has dtype float32; expected uint8 with shape "
                                                r"\[batch, 4, 4, 1\] \(an integer input takes whole numbers only\)"):
        grpc_client(model="single").predict({"image": IMAGES.astype("float32")})
    with pytest.raises(ServingInputError, match=r"input 'image' has value 256, outside the range of uint8"):
        RestClient(servers["rest"], model="single").predict({"image": np.full(IMAGES.shape, 256)})
    # Without the client's check the server refuses it too (and does not crash on the rank).
    with pytest.raises(ServingError, match="uint8") as info:
        grpc_client(model="single", validate=False).predict({"image": IMAGES.astype("float32")})
    assert info.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ServingError, match="shape") as info:
        RestClient(servers["rest"], model="single", validate=False).predict({"image": IMAGES[..., 0]})
    assert info.value.status == 400


def test_batch_lengths_must_agree(servers, grpc_client):
    uneven = {"text": TEXT["text"], "weight": TEXT["weight"][:2]}
    for client in (RestClient(servers["rest"], model="text"), grpc_client(model="text"),
                   RestClient(servers["rest"], model="text", validate=False)):
        with pytest.raises(ServingInputError, match=r"different batch lengths \{'text': 3, 'weight': 2\}"):
            client.predict(uneven)


def test_nan_cannot_go_through_rest_but_can_through_grpc(servers, grpc_client):
    bad = X.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ServingInputError, match="input 'features' contains NaN or infinity"):
        RestClient(servers["rest"], model="multi").predict({"features": bad})
    expected = direct(servers["root"] / "multi" / "2", {"features": bad})
    assert_same(grpc_client(model="multi").predict({"features": bad}), expected)


def test_unreachable_servers_are_serving_errors(grpc_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ServingError, match="cannot connect"):
        RestClient(f"http://127.0.0.1:{port}", model="multi", timeout=5).status()
    client = GrpcClient(f"127.0.0.1:{port}", model="multi", timeout=2)
    try:
        with pytest.raises(ServingError) as info:
            client.predict({"features": X})
        assert info.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# The stand-in itself: TF Serving's wire format, as a plain HTTP client sees it


def _post(url, body):
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_standin_rest_wire_format(servers):
    url = servers["rest"] + "/v1/models/single:predict"
    # One named input: rows may be plain values; one output: predictions are bare values.
    status, body = _post(url, json.dumps({"instances": IMAGES[:2].tolist()}))
    assert status == 200 and isinstance(body["predictions"], list) and len(body["predictions"]) == 2
    assert np.asarray(body["predictions"]).shape == (2, 1)
    status, body = _post(url, json.dumps({"inputs": IMAGES[:2].tolist()}))
    assert status == 200 and np.asarray(body["outputs"]).shape == (2, 1)
    # Several outputs: rows are objects; NaN tokens are accepted as TF Serving does.
    status, body = _post(servers["rest"] + "/v1/models/multi:predict", '{"instances": [[NaN, 1, 2, 3, 4]]}')
    assert status == 200 and set(body["predictions"][0]) >= {"kind", "score"}
    status, body = _post(servers["rest"] + "/v1/models/text:predict",
                         json.dumps({"instances": [{"text": {"b64": "AP8="}, "weight": 1}]}))
    assert status == 200 and body["predictions"][0]["text_bytes"] == {"b64": "AP8="}
    status, body = _post(url, json.dumps({"instances": [1.5]}))
    assert status == 400 and set(body) == {"error"}
    status, body = _post(url, "not json")
    assert status == 400 and "JSON Parse error" in body["error"]


def test_latest_policy_serves_only_the_newest_version(servers):
    with RestStandIn(ModelRepository({"multi": servers["root"] / "multi"})) as rest:
        assert RestClient(rest.url, model="multi").status()["model_version_status"][0]["version"] == "2"
        with pytest.raises(ServingError, match=r"Servable not found for request: Specific\(multi, 1\)"):
            RestClient(rest.url, model="multi", version=1).predict({"features": X})


# ---------------------------------------------------------------------------------------------
# The real server, where it is installed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_tensorflow_model_server(servers, tmp_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("tensorflow_model_server is not on PATH (install TF Serving to run the clients against it)")
    grpc_port, rest_port = _free_port(), _free_port()
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--model_name=multi",
             f"--model_base_path={servers['root'] / 'multi'}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            _check_real_server(server, rest_port, grpc_port, servers["root"], tmp_path / "server.log")
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def _check_real_server(server, rest_port, grpc_port, root, log_path):
    rest = RestClient(f"http://127.0.0.1:{rest_port}", model="multi", timeout=5)
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            pytest.fail(f"tensorflow_model_server exited ({server.returncode}):\n"
                        + log_path.read_text(errors="replace")[-3000:])
        try:
            if "AVAILABLE" in [s["state"] for s in rest.status()["model_version_status"]]:
                break
        except ServingError:
            pass  # not listening yet, or the model is still loading
        if time.monotonic() > deadline:
            pytest.fail("tensorflow_model_server did not report the model AVAILABLE within 60 s:\n"
                        + log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.5)
    expected = direct(root / "multi" / "2", {"features": X})  # TF Serving serves the latest version
    assert_same(rest.predict({"features": X}), expected)
    assert_same(rest.predict({"features": X}, format="inputs"), expected)
    with GrpcClient(f"127.0.0.1:{grpc_port}", model="multi", timeout=10) as client:
        assert_same(client.predict({"features": X}), expected)
        assert client.metadata() == rest.metadata()
    rest_score = RestClient(rest.url, model="multi", signature="predict_score", timeout=10)
    assert_same(rest_score.predict({"features": X}), direct(root / "multi" / "2", {"features": X}, "predict_score"))
    with pytest.raises(ServingError, match="nosuchmodel") as info:
        RestClient(rest.url, model="nosuchmodel", timeout=5).predict({"features": X})
    assert info.value.status == 404
