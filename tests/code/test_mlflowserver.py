"""Unit tests of mlflowserver.model: request -> DataFrame mapping, outputs, error mapping.

Uses a real tiny MLflow pyfunc saved into a temp dir (inputs a: double, s: string, b: optional
double; output y = a*2 + len(s) (+ b)) and real kserve InferRequest / InferInput objects.
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pandas as pd
import pytest
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse
from mlflow.exceptions import MlflowException
from mlflow.types import ColSpec, Schema

from mlflowserver.model import (
    MLflowModel,
    ModelSignatureError,
    OutputColumn,
    outputs_from_result,
    plan_inputs,
    plan_outputs,
    to_column_array,
)
from tests.integration.servers import write_tiny_pyfunc


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> MLflowModel:
    path = write_tiny_pyfunc(tmp_path_factory.mktemp("tiny") / "model")
    m = MLflowModel("tiny", str(path))
    assert m.load() is True
    return m


def predict(model: MLflowModel, payload):
    """What kserve's ``Model.__call__`` does with an async ``predict``."""
    return asyncio.run(model.predict(payload))


def inp(name, datatype, data, shape=None):
    return InferInput(name=name, shape=shape if shape is not None else [len(data)], datatype=datatype, data=data)


def req(*inputs, request_id="r1"):
    return InferRequest(model_name="tiny", infer_inputs=list(inputs), request_id=request_id)


def predict_y(model, *inputs):
    resp = predict(model, req(*inputs))
    assert isinstance(resp, InferResponse)
    assert [o.name for o in resp.outputs] == ["y"]
    out = resp.outputs[0]
    assert out.datatype == "FP64"
    return out.shape, list(out.data)


# ------------------------------------------------------------------ load / metadata


def test_load_builds_plan_and_v2_metadata(model):
    assert model.ready
    assert [(c.name, c.mlflow_type, c.required) for c in model.columns] == [
        ("a", "double", True),
        ("s", "string", True),
        ("b", "double", False),
    ]
    assert model.get_input_types() == [
        {"name": "a", "datatype": "FP64", "shape": [-1]},
        {"name": "s", "datatype": "BYTES", "shape": [-1]},
        {"name": "b", "datatype": "FP64", "shape": [-1]},
    ]
    assert model.get_output_types() == [{"name": "y", "datatype": "FP64", "shape": [-1]}]


def test_load_missing_model_raises(tmp_path):
    with pytest.raises(MlflowException, match="No such artifact"):
        MLflowModel("x", str(tmp_path / "nope")).load()


def test_plan_rejects_unusable_signatures():
    with pytest.raises(ModelSignatureError, match="no input signature"):
        plan_inputs(None)
    from mlflow.types import TensorSpec

    with pytest.raises(ModelSignatureError, match="tensor-based"):
        plan_inputs(Schema([TensorSpec(np.dtype("float64"), (-1, 2))]))
    with pytest.raises(ModelSignatureError, match="unnamed"):
        plan_inputs(Schema([ColSpec("double")]))
    with pytest.raises(ModelSignatureError, match="'when'.*does not support"):
        plan_inputs(Schema([ColSpec("datetime", "when")]))


def test_plan_all_supported_types():
    cols = plan_inputs(
        Schema([ColSpec(t, t) for t in ("double", "float", "long", "integer", "boolean", "string", "binary")])
    )
    assert [c.rule.v2_datatype for c in cols] == ["FP64", "FP32", "INT64", "INT32", "BOOL", "BYTES", "BYTES"]
    assert plan_outputs(None) == ()
    assert [o.name for o in plan_outputs(Schema([ColSpec("double")]))] == ["output-0"]


def _col(mlflow_type):
    (col,) = plan_inputs(Schema([ColSpec(mlflow_type, "c")]))
    return col


@pytest.mark.parametrize(
    "mlflow_type,value_class,values,expected,dtype",
    [
        ("long", "int", [1, -2], [1, -2], np.int64),
        ("integer", "int", [7], [7], np.int32),
        ("float", "float", [1.5, None], [1.5, np.nan], np.float32),
        ("double", "int", [1, None], [1.0, np.nan], np.float64),
        ("boolean", "bool", [True, False], [True, False], np.bool_),
        ("binary", "bytes", ["ab", b"c"], [b"ab", b"c"], object),
    ],
)
def test_to_column_array_types(mlflow_type, value_class, values, expected, dtype):
    arr = to_column_array(_col(mlflow_type), "input 'c'", values, value_class)
    assert arr.dtype == dtype
    np.testing.assert_array_equal(arr, np.array(expected, dtype=dtype))


@pytest.mark.parametrize(
    "mlflow_type,value_class,values,message",
    [
        ("integer", "int", [2**31], "out of range"),
        ("long", "int", [1, None], "null values are not allowed for a long column"),
        ("long", "int", [2**70], "out of range"),
        ("boolean", "bool", [1, 0], "expected booleans"),
        ("float", "int", [2**25], "cannot be converted exactly"),
        ("string", "bytes", [None], "null values are not allowed"),
        ("string", "bytes", [b"\xff"], "not valid UTF-8"),
    ],
)
def test_to_column_array_rejects(mlflow_type, value_class, values, message):
    with pytest.raises(InvalidInput, match=message):
        to_column_array(_col(mlflow_type), "input 'c'", values, value_class)


# ------------------------------------------------------------------ V2 happy paths


def test_v2_predict_basic(model):
    shape, y = predict_y(model, inp("a", "FP64", [1.0, 2.5]), inp("s", "BYTES", ["ab", "c"]))
    assert shape == [2]
    assert y == [4.0, 6.0]


def test_v2_response_keeps_request_id(model):
    resp = predict(model, req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]), request_id="abc"))
    assert resp.id == "abc" and resp.model_name == "tiny"


def test_v2_input_order_free_and_optional_column(model):
    _, y = predict_y(model, inp("b", "FP64", [10.0, None]), inp("s", "BYTES", ["x", "yy"]), inp("a", "FP64", [1, 2]))
    assert y == [13.0, 6.0]  # null in optional double -> NaN -> model fills 0


@pytest.mark.parametrize("datatype", ["INT64", "INT32", "FP32"])
def test_v2_safe_casts_to_double(model, datatype):
    _, y = predict_y(model, inp("a", datatype, [3, 4]), inp("s", "BYTES", ["", "z"]))
    assert y == [6.0, 9.0]


def test_v2_shape_n_by_1_nested_and_flat(model):
    a = inp("a", "FP64", [[1.0], [2.0]], shape=[2, 1])
    s = inp("s", "BYTES", ["a", "bb"], shape=[2, 1])
    shape, y = predict_y(model, a, s)
    assert shape == [2] and y == [3.0, 6.0]


def test_v2_bytes_values_are_decoded(model):
    _, y = predict_y(model, inp("a", "FP64", [0.0]), inp("s", "BYTES", [b"abc"]))
    assert y == [3.0]


def test_v2_binary_numpy_input(model):
    a = InferInput("a", [3], "FP64")
    a.set_data_from_numpy(np.array([1.0, 2.0, 3.0]), binary_data=True)
    s = InferInput("s", [3], "BYTES")
    s.set_data_from_numpy(np.array(["a", "b", "c"], dtype=object), binary_data=True)
    _, y = predict_y(model, a, s)
    assert y == [3.0, 5.0, 7.0]


def test_v2_frame_is_in_signature_order_with_target_dtypes(model):
    df = model.v2_to_frame(req(inp("s", "BYTES", ["q"]), inp("b", "INT32", [1]), inp("a", "INT64", [2])))
    assert list(df.columns) == ["a", "s", "b"]
    assert df.dtypes.tolist() == [np.float64, object, np.float64]


def test_call_goes_through_kserve_model_call(model):
    resp, headers = asyncio.run(model(req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]))))
    assert list(resp.outputs[0].data) == [3.0] and headers == {}


# ------------------------------------------------------------------ V2 errors -> InvalidInput (400)

BAD_V2 = [
    pytest.param([inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]), inp("zz", "FP64", [1.0])], "unknown input 'zz'", id="unknown-input"),
    pytest.param([inp("a", "FP64", [1.0])], "missing required input 's'", id="missing-required"),
    pytest.param([inp("a", "BYTES", ["1"]), inp("s", "BYTES", ["x"])], "input 'a' has datatype BYTES", id="bytes-for-double"),
    pytest.param([inp("a", "FP64", [1.0]), inp("s", "FP64", [1.0])], "input 's' has datatype FP64", id="fp64-for-string"),
    pytest.param([inp("a", "BOOL", [True]), inp("s", "BYTES", ["x"])], "input 'a' has datatype BOOL", id="bool-for-double"),
    pytest.param([inp("a", "FP64", ["1.5"]), inp("s", "BYTES", ["x"])], "input 'a': expected numbers", id="strings-in-fp64"),
    pytest.param([inp("a", "INT64", [1.5]), inp("s", "BYTES", ["x"])], "input 'a': expected integers", id="floats-in-int64"),
    pytest.param([inp("a", "FP64", [1.0, None, "x"]), inp("s", "BYTES", ["x", "y", "z"])], "input 'a': element 2", id="mixed-values"),
    pytest.param([inp("a", "FP64", [1.0]), inp("s", "BYTES", [5])], "input 's': element 0 is a int", id="number-in-bytes"),
    pytest.param([inp("a", "FP64", [1.0, 2.0], shape=[3]), inp("s", "BYTES", ["x", "y", "z"])], "input 'a': data has 2 elements but shape [3] needs 3", id="length-ne-shape"),
    pytest.param([inp("a", "FP64", [1.0, 2.0]), inp("s", "BYTES", ["x"])], "different lengths", id="different-lengths"),
    pytest.param([inp("a", "FP64", []), inp("s", "BYTES", [])], "empty batch", id="empty-batch"),
    pytest.param([inp("a", "FP64", [1.0, 2.0], shape=[1, 2]), inp("s", "BYTES", ["x"])], "input 'a': bad shape [1, 2]: expected [n] or [n, 1]", id="shape-1x2"),
    pytest.param([inp("a", "FP64", [1.0], shape=[1, 1, 1]), inp("s", "BYTES", ["x"])], "bad shape", id="rank-3"),
    pytest.param([inp("a", "FP64", [1.0], shape=[]), inp("s", "BYTES", ["x"])], "bad shape", id="rank-0"),
    pytest.param([inp("a", "FP64", [[1.0, 2.0]], shape=[1, 1]), inp("s", "BYTES", ["x"])], "data has 2 elements", id="nested-too-long"),
    pytest.param([inp("a", "FP64", [1.0]), inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"])], "given more than once", id="duplicate"),
    pytest.param([inp("a", "INT64", [2**60]), inp("s", "BYTES", ["x"])], "cannot be converted exactly", id="int-too-big-for-double"),
    pytest.param([], "missing required input 'a'", id="no-inputs"),
]


@pytest.mark.parametrize("inputs,message", BAD_V2)
def test_v2_bad_requests_raise_invalid_input(model, inputs, message):
    with pytest.raises(InvalidInput) as info:
        predict(model, req(*inputs))
    assert message in str(info.value)


def test_model_invalid_parameter_value_is_400(model):
    with pytest.raises(InvalidInput, match="model rejected the input: a must not be missing"):
        predict(model, req(inp("a", "FP64", [None]), inp("s", "BYTES", ["x"])))


def test_other_model_errors_are_500_without_details(model):
    with pytest.raises(InferenceError) as info:
        predict(model, req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["boom"])))
    text = str(info.value)
    assert "RuntimeError" in text and "secret" not in text and "boom" not in text


# ------------------------------------------------------------------ V1


def test_v1_instances_records(model):
    out = predict(model, {"instances": [{"a": 1, "s": "xy"}, {"a": 2.5, "s": "z", "b": 10}]})
    assert out == {"predictions": [4.0, 16.0]}


def test_v1_inputs_columnar_and_records(model):
    assert predict(model, {"inputs": {"a": [1, 2], "s": ["a", "bb"]}}) == {"predictions": [3.0, 6.0]}
    assert predict(model, {"inputs": [{"a": 0, "s": "abc"}]}) == {"predictions": [3.0]}


def test_v1_raw_json_bytes(model):
    assert predict(model, b'{"instances": [{"a": 1, "s": ""}]}') == {"predictions": [2.0]}


@pytest.mark.parametrize(
    "body,message",
    [
        ({"instances": [{"a": 1, "s": "x", "c": 2}]}, "unknown input 'c'"),
        ({"instances": [{"a": 1, "s": "x"}, {"s": "y"}]}, "record 1 is missing required input 'a'"),
        ({"instances": [{"a": "1", "s": "x"}]}, "input 'a': expected numbers"),
        ({"instances": [{"a": 1, "s": 2}]}, "input 's': element 0 is a int"),
        ({"instances": []}, "empty batch"),
        ({"instances": [[1, "x"]]}, "list of records"),
        ({"inputs": {"a": [1, 2], "s": ["x"]}}, "different lengths"),
        ({"inputs": {"a": [], "s": []}}, "empty batch"),
        ({"rows": []}, '"instances"'),
        (b"not json", "not JSON"),
    ],
)
def test_v1_bad_requests(model, body, message):
    with pytest.raises(InvalidInput) as info:
        predict(model, body)
    assert message in str(info.value)


# ------------------------------------------------------------------ output mapping


def test_outputs_from_result_shapes():
    y = [OutputColumn("median_house_value", "double", "FP64", np.float64)]
    (name, arr), = outputs_from_result(pd.Series([1, 2]), y, 2)
    assert name == "median_house_value" and arr.dtype == np.float64
    (name, arr), = outputs_from_result(np.array([[1.0], [2.0]]), y, 2)
    assert name == "median_house_value" and arr.tolist() == [1.0, 2.0]
    (name, _), = outputs_from_result([1.0, 2.0], (), 2)
    assert name == "output-0"
    two = [OutputColumn("p", "double", "FP64", np.float64), OutputColumn("label", "string", "BYTES", object)]
    pairs = outputs_from_result(np.array([[0.1, 1], [0.9, 0]]), two, 2)
    assert [p[0] for p in pairs] == ["p", "label"] and pairs[1][1].tolist() == ["1.0", "0.0"]
    pairs = outputs_from_result(pd.DataFrame({"q": [1, 2], "r": ["a", "b"]}), y, 2)
    assert [(n, a.dtype.kind) for n, a in pairs] == [("q", "i"), ("r", "O")]
    with pytest.raises(InferenceError, match="3 values"):
        outputs_from_result(np.array([1.0, 2.0, 3.0]), y, 2)
    with pytest.raises(InferenceError, match="cannot be mapped"):
        outputs_from_result(np.zeros((2, 3)), y, 2)


# ------------------------------------------------------------------ CLI (in-process; no server started)


def test_cli_defaults_and_refusals(tmp_path, capsys, monkeypatch):
    from mlflowserver import __main__ as cli

    for key in cli._MLFLOW_HTTP_DEFAULTS:  # main() setdefault()s these: keep this process's env unchanged
        monkeypatch.setenv(key, os.environ.get(key, cli._MLFLOW_HTTP_DEFAULTS[key]))

    args, _ = cli.parser.parse_known_args(["--model_dir=/mnt/models"])
    assert (args.http_host, args.enable_grpc, args.workers, args.model_name) == ("127.0.0.1", False, 1, "model")
    assert cli.parser.parse_known_args(["--model_dir=x", "--http_host=0.0.0.0"])[0].http_host == "0.0.0.0"

    assert cli.main(["--model_dir=x", "--workers=2"]) == 2
    assert "--workers must be 1" in capsys.readouterr().err
    assert cli.main(["--model_dir=x", "--enable_grpc=true"]) == 2
    assert "--enable_grpc=true" in capsys.readouterr().err
    assert cli.main(["--model_dir", str(tmp_path / "missing"), "--configure_logging=false"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlflowserver: cannot load model ") and "\n" not in err
