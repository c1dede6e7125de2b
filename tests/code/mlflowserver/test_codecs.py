"""Unit tests of mlflowserver.codecs: V2 values to typed columns, parameters (gRPC's included)
and results to V2 outputs."""

from __future__ import annotations

import os
import struct

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pandas as pd
import pytest
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from mlflow.types import ColSpec, Schema

from mlflowserver.codecs import accepts, decode_values, encode_result, parameter_value
from mlflowserver.signature import Output, plan_inputs


@pytest.mark.parametrize(
    "target,accepted",
    [
        (
            "float64",
            [
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
            ],
        ),
        ("float32", ["UINT8", "UINT16", "INT8", "INT16", "FP16", "FP32"]),
        ("int64", ["UINT8", "UINT16", "UINT32", "INT8", "INT16", "INT32", "INT64"]),
        ("int32", ["UINT8", "UINT16", "INT8", "INT16", "INT32"]),
        ("bool", ["BOOL"]),
        ("object", ["BYTES"]),
    ],
)
def test_accepted_datatypes_are_numpys_safe_casts(target, accepted):
    from mlflowserver.codecs import V2_DATATYPES

    assert [d for d in V2_DATATYPES if accepts(d, np.dtype(target))] == accepted
    assert not accepts("FP128", np.dtype(target))


def _column(mlflow_type, required=True):
    (spec,) = plan_inputs(Schema([ColSpec(mlflow_type, "c", required=required)]))
    return spec


@pytest.mark.parametrize(
    "mlflow_type,datatype,values,expected,dtype",
    [
        ("long", "INT64", [1, -2], [1, -2], np.int64),
        ("integer", "INT32", [7], [7], np.int32),
        ("float", "FP32", [1.5, 2.0], [1.5, 2.0], np.float32),
        ("double", "INT64", [1, 2], [1.0, 2.0], np.float64),
        ("boolean", "BOOL", [True, False], [True, False], np.bool_),
        ("binary", "BYTES", ["ab", b"c"], [b"ab", b"c"], object),
        ("string", "BYTES", [b"ab", "c"], ["ab", "c"], object),
    ],
)
def test_decode_values_types(mlflow_type, datatype, values, expected, dtype):
    arr = decode_values(_column(mlflow_type), "input 'c'", values, datatype)
    assert arr.dtype == dtype
    np.testing.assert_array_equal(arr, np.array(expected, dtype=dtype))


def test_null_is_a_missing_value_only_in_optional_float_and_string_columns():
    arr = decode_values(_column("double", required=False), "input 'c'", [1.0, None], "FP64")
    assert np.isnan(arr[1]) and arr[0] == 1.0
    assert decode_values(_column("string", required=False), "input 'c'", ["x", None], "BYTES").tolist() == [
        "x",
        None,
    ]
    with pytest.raises(InvalidInput, match=r"input 'c': null at row 1 of a required column"):
        decode_values(_column("double"), "input 'c'", [1.0, None], "FP64")
    with pytest.raises(InvalidInput, match=r"null at row 0; a long column cannot hold null"):
        decode_values(_column("long", required=False), "input 'c'", [None], "INT64")
    with pytest.raises(InvalidInput, match=r"null at row 0 of a required column"):
        decode_values(_column("string"), "input 'c'", [None], "BYTES")


@pytest.mark.parametrize(
    "mlflow_type,datatype,values,message",
    [
        ("integer", "INT32", [2**31], "out of range"),
        ("long", "INT64", [2**70], "within the range"),
        ("long", "INT64", [1.5], "expected integers, got floating-point values"),
        ("boolean", "BOOL", [1, 0], "expected booleans"),
        ("float", "INT16", [2**25], "exceeds 16777216"),
        ("double", "INT64", [2**60], "exceeds 9007199254740992"),
        ("double", "FP64", ["1.5"], "expected numbers, got string values"),
        ("double", "FP64", [True], "expected numbers, got boolean values"),
        ("double", "FP64", [[1.0, 2.0], [3.0]], "ragged"),
        ("string", "BYTES", [b"\xff"], "not valid UTF-8"),
        ("string", "BYTES", [5], "element 0 is a int, expected a string"),
    ],
)
def test_decode_values_rejects(mlflow_type, datatype, values, message):
    with pytest.raises(InvalidInput, match=message):
        decode_values(_column(mlflow_type), "input 'c'", values, datatype)


def test_grpc_parameter_values_including_tritons_double_and_uint64():
    assert parameter_value(pb.InferParameter(bool_param=True)) is True
    assert parameter_value(pb.InferParameter(int64_param=-3)) == -3
    assert parameter_value(pb.InferParameter(string_param="s")) == "s"
    # tritonclient.grpc's double_param (field 4) and uint64_param (field 5): unknown to kserve's proto
    assert parameter_value(pb.InferParameter.FromString(b"\x21" + struct.pack("<d", 0.25))) == 0.25
    assert parameter_value(pb.InferParameter.FromString(b"\x28\x07")) == 7
    assert parameter_value(pb.InferParameter()) is None
    assert parameter_value(1.5) == 1.5


# ------------------------------------------------------------------ outputs


def test_encode_result_shapes():
    y = (Output("median_house_value", np.dtype("float64")),)
    ((name, arr),) = encode_result(pd.Series([1, 2]), y, 2)
    assert name == "median_house_value" and arr.dtype == np.float64
    ((name, arr),) = encode_result(np.array([[1.0], [2.0]]), y, 2)
    assert name == "median_house_value" and arr.tolist() == [1.0, 2.0]
    ((name, arr),) = encode_result([1.0, 2.0], (), 2)
    assert name == "output-0"
    ((name, arr),) = encode_result(np.array(["a", "b"]), (), 2)
    assert arr.dtype == object and arr.tolist() == ["a", "b"]
    proba = (Output("output-0", np.dtype("float64"), (-1, 3), column=False),)
    ((name, arr),) = encode_result(np.zeros((2, 3)), proba, 2)
    assert arr.shape == (2, 3)
    two = (Output("p", np.dtype("float64")), Output("label", np.dtype(object)))
    pairs = encode_result(np.array([[0.1, 1], [0.9, 0]]), two, 2)
    assert [p[0] for p in pairs] == ["p", "label"] and pairs[1][1].tolist() == ["1.0", "0.0"]
    pairs = encode_result(pd.DataFrame({"q": [1, 2], "r": ["a", "b"]}), y, 2)
    assert [(n, a.dtype.kind) for n, a in pairs] == [("q", "i"), ("r", "O")]
    with pytest.raises(InferenceError, match="batch has 2 rows"):
        encode_result(np.array([1.0, 2.0, 3.0]), y, 2)
