"""The one input check (mtlzoo_client.check_inputs), on the hard cases: JSON's widthless integers,
range edges, text, free and unknown dimensions, dtypes numpy lacks, and ragged or scalar input."""

import numpy as np
import pytest

from mtlzoo_client import ServingInputError, check_inputs
from mtlzoo_client.inputs import shape_text

IMAGE = {"image": {"dtype": "uint8", "shape": [-1, 2, 2]}}
FEATURES = {"features": {"dtype": "float32", "shape": [None, 3]}}


def test_the_clients_and_local_predictions_share_this_check():
    from mtlzoo.serving import export

    assert export.check_inputs is check_inputs


def test_integers_of_any_width_feed_an_integer_input_within_its_range():
    edges = np.array([[[0, 255], [1, 254]]], dtype="int64")
    got = check_inputs(IMAGE, {"image": edges})["image"]
    assert got.dtype == np.uint8 and got.tolist() == edges.tolist()
    assert check_inputs(IMAGE, {"image": edges.tolist()})["image"].dtype == np.uint8  # Python ints
    for bad, value in ((256, 256), (-1, -1)):
        with pytest.raises(ServingInputError, match=rf"has value {value}, outside the range of uint8 \(0\.\.255\)"):
            check_inputs(IMAGE, {"image": np.full((1, 2, 2), bad)})
    big = {"ids": {"dtype": "int32", "shape": [-1]}}
    assert check_inputs(big, {"ids": np.array([2**31 - 1, -(2**31)])})["ids"].dtype == np.int32
    with pytest.raises(ServingInputError, match="has value 2147483648"):
        check_inputs(big, {"ids": np.array([2**31], dtype="uint64")})


@pytest.mark.parametrize(
    "value, message",
    [
        (np.full((1, 2, 2), 1.5), r"has dtype float64; expected uint8 with shape \[batch, 2, 2\] \(an integer input takes whole"),
        (np.full((1, 2, 2), True), r"has dtype bool; expected uint8 .*\(true/false is not a number\)"),
        (np.full((1, 2, 2), "7"), r"has dtype <U1; expected uint8 .*\(strings are not numbers\)"),
        (np.full((1, 2, 2), None), r"has dtype object; expected uint8"),
        (np.zeros((1, 2, 3), "uint8"), r"has shape \[1, 2, 3\]; expected uint8 with shape \[batch, 2, 2\]\.$"),
        (np.zeros((2, 2), "uint8"), r"has shape \[2, 2\]"),
        (np.uint8(3), "is a scalar; inputs need a batch axis first"),
        ([[[1, 2], [3]]], "is not a rectangular array"),
    ],
)
def test_values_that_do_not_fit_are_refused_with_what_was_expected(value, message):
    with pytest.raises(ServingInputError, match=message):
        check_inputs(IMAGE, {"image": value})


def test_floats_take_every_number_kind_and_json_refuses_nan():
    rows = [[1, 2, 3], [4, 5, 250]]
    for value in (np.array(rows, "float64"), np.array(rows, "int64"), np.array(rows, "uint8"), rows):
        got = check_inputs(FEATURES, {"features": value})["features"]
        assert got.dtype == np.float32 and got.tolist() == rows
    tiny = np.array([[1e-45, -3.4e38, 3.4e38]])  # float32's subnormal and range ends survive
    np.testing.assert_array_equal(check_inputs(FEATURES, {"features": tiny})["features"], tiny.astype("float32"))
    nan = np.array([[0.0, np.nan, 1.0]])
    assert np.isnan(check_inputs(FEATURES, {"features": nan})["features"][0, 1])  # gRPC carries NaN
    for bad in (nan, np.array([[0.0, np.inf, 1.0]])):
        with pytest.raises(ServingInputError, match="contains NaN or infinity, which strict JSON cannot carry"):
            check_inputs(FEATURES, {"features": bad}, json_safe=True)


def test_text_becomes_utf8_bytes_and_feeds_only_string_inputs():
    spec = {"text": {"dtype": "string", "shape": [-1]}}
    got = check_inputs(spec, {"text": ["caf\u00e9", b"\xff\x00"]})["text"]
    assert got.dtype == object and got.tolist() == ["caf\u00e9".encode(), b"\xff\x00"]
    with pytest.raises(ServingInputError, match=r"has dtype float64; expected string .*\(a string input takes text or bytes\)"):
        check_inputs(spec, {"text": [1.0, 2.0]})


def test_names_batch_lengths_and_free_or_unknown_dimensions():
    specs = {**FEATURES, "mask": {"dtype": "bool", "shape": None}, "pad": {"dtype": "float32", "shape": [-1, -1, 2]}}
    ok = {"features": np.zeros((2, 3)), "mask": np.ones((2, 7, 1), bool), "pad": np.zeros((2, 5, 2))}
    assert {k: v.shape for k, v in check_inputs(specs, ok).items()} == {"features": (2, 3), "mask": (2, 7, 1), "pad": (2, 5, 2)}
    assert shape_text([-1, -1, 2]) == "[batch, ?, 2]" and shape_text(None) == "of any rank"
    with pytest.raises(ServingInputError, match=r"different batch lengths \{'features': 2, 'mask': 3, 'pad': 2\}"):
        check_inputs(specs, {**ok, "mask": np.ones((3, 1), bool)})
    with pytest.raises(ServingInputError, match=r"input names \['feature'\] do not match the model, which takes "
                                                r"\['features'\]; missing \['features'\]; unexpected \['feature'\]\.$"):
        check_inputs(FEATURES, {"feature": np.zeros((2, 3))}, where="the model")
    for bad in ({}, [np.zeros((2, 3))]):
        with pytest.raises(ServingInputError, match=r"inputs must be a non-empty dict \{name: array\} with names \['features'\]"):
            check_inputs(FEATURES, bad)


def test_dtypes_numpy_lacks_are_left_to_the_server_and_no_spec_checks_form_only():
    spec = {"x": {"dtype": "bfloat16", "shape": [-1, 2]}}
    assert check_inputs(spec, {"x": np.ones((1, 2), "float64")})["x"].dtype == np.float64
    arrays = check_inputs(None, {"a": np.ones((2, 3), "int64"), "b": ["x", "y"]})
    assert arrays["a"].dtype == np.int64 and arrays["b"].tolist() == [b"x", b"y"]
    with pytest.raises(ServingInputError, match="different batch lengths"):
        check_inputs(None, {"a": np.ones(2), "b": np.ones(3)})
