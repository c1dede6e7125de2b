"""Unit tests of mlflowserver.model: MLflowModel loads a pyfunc and predicts V2 (column and
tensor signatures, parameters, optional outputs, limits) and V1 requests, in process through
kserve's own request classes."""

from __future__ import annotations

import asyncio
import os
import struct
import threading
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from mlflowserver.limits import Limits, PayloadTooLarge
from mlflowserver.model import ExplainerNotFound, MLflowModel
from tests.code.mlflowserver.calls import inp, outputs_of, predict, predict_y, req, served
from tests.integration.servers import write_tiny_pyfunc

# ------------------------------------------------------------------ plans and metadata


def test_load_plans_inputs_and_v2_metadata(model):
    assert model.ready
    assert [(i.name, i.mlflow_type, i.required) for i in model.inputs] == [
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


# ------------------------------------------------------------------ V2, column signature (tiny)


def test_v2_predict_basic(model):
    assert predict_y(model, inp("a", "FP64", [1.0, 2.5]), inp("s", "BYTES", ["ab", "c"])) == ([2], [4.0, 6.0])


def test_v2_response_keeps_request_id(model):
    resp = predict(model, req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]), request_id="abc"))
    assert resp.id == "abc" and resp.model_name == "tiny"


def test_v2_input_order_free_and_null_in_optional_column(model):
    _, y = predict_y(
        model, inp("b", "FP64", [10.0, None]), inp("s", "BYTES", ["x", "yy"]), inp("a", "FP64", [1, 2])
    )
    assert y == [13.0, 6.0]  # null in optional double -> NaN -> model fills 0


@pytest.mark.parametrize("datatype", ["INT64", "INT32", "FP32", "UINT8"])
def test_v2_safe_casts_to_double(model, datatype):
    assert predict_y(model, inp("a", datatype, [3, 4]), inp("s", "BYTES", ["", "z"]))[1] == [6.0, 9.0]


def test_v2_shape_n_by_1_nested_and_flat(model):
    a = inp("a", "FP64", [[1.0], [2.0]], shape=[2, 1])
    s = inp("s", "BYTES", ["a", "bb"], shape=[2, 1])
    assert predict_y(model, a, s) == ([2], [3.0, 6.0])


def test_v2_binary_numpy_input(model):
    a = InferInput("a", [3], "FP64")
    a.set_data_from_numpy(np.array([1.0, 2.0, 3.0]), binary_data=True)
    s = InferInput("s", [3], "BYTES")
    s.set_data_from_numpy(np.array(["a", "b", "c"], dtype=object), binary_data=True)
    assert predict_y(model, a, s)[1] == [3.0, 5.0, 7.0]


def test_v2_frame_is_in_signature_order_with_target_dtypes(model):
    arrays = model.v2_arrays(req(inp("s", "BYTES", ["q"]), inp("b", "INT32", [1]), inp("a", "INT64", [2])))
    frame, rows = model.pyfunc_input(arrays)
    assert list(frame.columns) == ["a", "s", "b"] and rows == 1
    assert frame.dtypes.tolist() == [np.float64, object, np.float64]


def test_call_goes_through_kserve_model_call(model):
    resp, headers = asyncio.run(model(req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]))))
    assert list(resp.outputs[0].data) == [3.0] and headers == {}


# fmt: off
BAD_V2 = [
    pytest.param([inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]), inp("zz", "FP64", [1.0])], "unknown input 'zz'; the model's inputs are: a, s, b", id="unknown-input"),
    pytest.param([inp("a", "FP64", [1.0])], "missing required input 's'", id="missing-required"),
    pytest.param([inp("a", "BYTES", ["1"]), inp("s", "BYTES", ["x"])], "input 'a' has datatype BYTES, which cannot be safely cast to the double column (accepted: UINT8", id="bytes-for-double"),
    pytest.param([inp("a", "FP64", [1.0]), inp("s", "FP64", [1.0])], "input 's' has datatype FP64", id="fp64-for-string"),
    pytest.param([inp("a", "BOOL", [True]), inp("s", "BYTES", ["x"])], "input 'a' has datatype BOOL", id="bool-for-double"),
    pytest.param([inp("a", "FP64", ["1.5"]), inp("s", "BYTES", ["x"])], "input 'a': expected numbers, got string values", id="strings-in-fp64"),
    pytest.param([inp("a", "INT64", [1.5]), inp("s", "BYTES", ["x"])], "input 'a': expected integers", id="floats-in-int64"),
    pytest.param([inp("a", "FP64", [1.0, None]), inp("s", "BYTES", ["x", "y"])], "input 'a': null at row 1 of a required column", id="null-in-required"),
    pytest.param([inp("a", "FP64", [1.0]), inp("s", "BYTES", [5])], "input 's': element 0 is a int", id="number-in-bytes"),
    pytest.param([inp("a", "FP64", [1.0, 2.0], shape=[3]), inp("s", "BYTES", ["x", "y", "z"])], "input 'a': data has 2 elements but shape [3] needs 3", id="length-ne-shape"),
    pytest.param([inp("a", "FP64", [1.0, 2.0]), inp("s", "BYTES", ["x"])], "inputs have different lengths: 'a' has 2 rows, 's' has 1", id="different-lengths"),
    pytest.param([inp("a", "FP64", []), inp("s", "BYTES", [])], "empty batch", id="empty-batch"),
    pytest.param([inp("a", "FP64", [1.0, 2.0], shape=[1, 2]), inp("s", "BYTES", ["x"])], "input 'a': bad shape [1, 2]: expected [n] or [n, 1]", id="shape-1x2"),
    pytest.param([inp("a", "FP64", [1.0], shape=[1, 1, 1]), inp("s", "BYTES", ["x"])], "bad shape", id="rank-3"),
    pytest.param([inp("a", "FP64", [1.0], shape=[]), inp("s", "BYTES", ["x"])], "bad shape", id="rank-0"),
    pytest.param([inp("a", "FP64", [1.0], shape=[-1]), inp("s", "BYTES", ["x"])], "negative dimension", id="negative-shape"),
    pytest.param([inp("a", "FP64", [[1.0, 2.0]], shape=[1, 1]), inp("s", "BYTES", ["x"])], "data has 2 elements", id="nested-too-long"),
    pytest.param([inp("a", "FP64", [1.0]), inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"])], "given more than once", id="duplicate"),
    pytest.param([inp("a", "INT64", [2**60]), inp("s", "BYTES", ["x"])], "exceeds", id="int-too-big-for-double"),
    pytest.param([inp("a", "FP128", [1.0]), inp("s", "BYTES", ["x"])], "input 'a' has datatype FP128", id="unknown-datatype"),
    pytest.param([], "missing required input 'a'", id="no-inputs"),
]
# fmt: on


@pytest.mark.parametrize("inputs,message", BAD_V2)
def test_v2_bad_requests_raise_invalid_input(model, inputs, message):
    with pytest.raises(InvalidInput) as info:
        predict(model, req(*inputs))
    assert message in str(info.value)


def test_model_invalid_parameter_value_is_400(model):
    # NaN is a number (not a null): it reaches the model, whose own validation refuses it
    with pytest.raises(InvalidInput, match="model rejected the input: a must not be missing"):
        predict(model, req(inp("a", "FP64", [float("nan")]), inp("s", "BYTES", ["x"])))


def test_other_model_errors_are_500_without_details(model):
    with pytest.raises(InferenceError) as info:
        predict(model, req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["boom"])))
    text = str(info.value)
    assert "RuntimeError" in text and "secret" not in text and "boom" not in text


def test_requested_outputs(model):
    assert list(
        outputs_of(predict(model, req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]), outputs=["y"])))
    ) == ["y"]
    with pytest.raises(InvalidInput, match="unknown output 'zz'; the model's outputs are: y"):
        predict(model, req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]), outputs=["zz"]))


def test_explain_is_404_not_501(model):
    with pytest.raises(ExplainerNotFound, match="model 'tiny' has no explainer"):
        asyncio.run(model.explain({"instances": []}))


# ------------------------------------------------------------------ V2, tensor signature


def test_tensor_signature_flat_or_nested_data(foreign):
    model, built = foreign["tensor"]
    x = built.model_input
    expected = built.predict()["output-0"]
    for data in (x.reshape(-1).tolist(), x.tolist()):
        (datatype, shape, values) = outputs_of(
            predict(model, req(inp("input-0", "FP32", data, shape=list(x.shape))))
        )["output-0"]
        assert (datatype, shape) == ("FP64", [len(x), 3])
        np.testing.assert_allclose(np.array(values).reshape(shape), expected, rtol=1e-9, atol=1e-9)
    int16 = predict(model, req(inp("input-0", "INT16", [1, 2, 3, 4], shape=[1, 4])))
    assert outputs_of(int16)["output-0"][1] == [1, 3]


@pytest.mark.parametrize(
    "tensor,message",
    [
        (inp("x", "FP32", [1.0] * 4, shape=[1, 4]), "unknown input 'x'; the model's inputs are: input-0"),
        (inp("input-0", "FP32", [1.0] * 4, shape=[4]), "bad shape [4]: the model takes [-1, 4]"),
        (inp("input-0", "FP32", [1.0] * 3, shape=[1, 3]), "bad shape [1, 3]: the model takes [-1, 4]"),
        (inp("input-0", "FP32", [1.0] * 4, shape=[1, 4, 1]), "bad shape"),
        (
            inp("input-0", "FP64", [1.0] * 4, shape=[1, 4]),
            "datatype FP64, which cannot be safely cast to the float32 tensor",
        ),
        (
            inp("input-0", "FP32", [1.0, 2.0, None, 4.0], shape=[1, 4]),
            "null at element 2; a float32 tensor takes no nulls",
        ),
        (inp("input-0", "FP32", [1.0] * 3, shape=[1, 4]), "data has 3 elements but shape [1, 4] needs 4"),
        (inp("input-0", "FP32", [], shape=[0, 4]), "empty batch"),
    ],
)
def test_tensor_signature_rejects(foreign, tensor, message):
    with pytest.raises(InvalidInput) as info:
        predict(foreign["tensor"][0], req(tensor))
    assert message in str(info.value)


def test_named_tensors_reach_the_pyfunc_as_a_dict(tmp_path):
    import mlflow.pyfunc
    from mlflow.models import ModelSignature

    code = tmp_path / "sum_code.py"
    code.write_text(
        "import mlflow, numpy as np\n"
        "class Sum(mlflow.pyfunc.PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return {'total': model_input['x'].sum(axis=1) + model_input['k']}\n"
        "mlflow.models.set_model(Sum())\n"
    )
    schema = Schema(
        [TensorSpec(np.dtype("float64"), (-1, 2), "x"), TensorSpec(np.dtype("int64"), (-1,), "k")]
    )
    mlflow.pyfunc.save_model(
        str(tmp_path / "sum"),
        python_model=str(code),
        signature=ModelSignature(inputs=schema),
        pip_requirements=["mlflow"],
    )
    model = served(tmp_path / "sum", "sum")
    resp = predict(
        model, req(inp("x", "FP64", [[1.0, 2.0], [3.0, 4.0]], shape=[2, 2]), inp("k", "INT32", [10, 20]))
    )
    assert outputs_of(resp) == {"total": ("FP64", [2], [13.0, 27.0])}


# ------------------------------------------------------------------ where predict runs


class ThreadRecorder(mlflow.pyfunc.PythonModel):
    """Answers, for each row, whether predict ran on the event loop's thread (the main one here)."""

    def __init__(self, delay: float):
        self.delay = delay

    def predict(self, context, model_input, params=None):
        time.sleep(self.delay)
        on_loop = threading.current_thread() is threading.main_thread()
        return pd.DataFrame({"on_loop": [float(on_loop)] * len(model_input)})


def on_loop_thread(model, rows: int) -> list[bool]:
    response = predict(model, req(inp("x", "FP64", [1.0] * rows)))
    return [bool(v) for v in outputs_of(response)["on_loop"][2]]


@pytest.mark.parametrize(("delay", "inline"), [(0.0, True), (0.02, False)], ids=["fast", "slow"])
def test_a_short_one_row_predict_runs_on_the_loop_and_anything_else_in_a_worker(tmp_path, delay, inline):
    path = tmp_path / "recorder"
    signature = ModelSignature(Schema([ColSpec("double", "x")]), Schema([ColSpec("double", "on_loop")]))
    mlflow.pyfunc.save_model(str(path), python_model=ThreadRecorder(delay), signature=signature)
    model = served(path, "recorder")
    # The first one-row call is timed in a worker; from then on the last one decides.
    assert on_loop_thread(model, 1) == [False]
    assert on_loop_thread(model, 1) == [inline]
    assert on_loop_thread(model, 2) == [False, False]
    assert on_loop_thread(model, 1) == [inline]


# ------------------------------------------------------------------ parameters and optional outputs


def test_params_reach_the_pyfunc_converted_to_their_declared_types(foreign):
    model, built = foreign["params"]
    x = inp("x", "FP64", built.model_input["x"].tolist())
    expected = built.predict({"scale": 2.0, "intervals": True, "width": 3})
    got = outputs_of(predict(model, req(x, parameters={"scale": 2, "intervals": True, "width": 3})))
    assert list(got) == ["y", "lower", "upper"]
    for name, (_, _, values) in got.items():
        np.testing.assert_allclose(values, expected[name], rtol=1e-9, atol=1e-9)
    assert list(outputs_of(predict(model, req(x)))) == ["y"]  # defaults: no intervals


def test_undeclared_params_are_ignored_and_wrong_types_named(foreign):
    model, built = foreign["params"]
    x = inp("x", "FP64", built.model_input["x"].tolist())
    defaults = outputs_of(predict(model, req(x)))
    assert (
        outputs_of(predict(model, req(x, parameters={"binary_data_output": False, "other": "z"}))) == defaults
    )
    for params, message in [
        ({"scale": "big"}, "parameter 'scale' must be a double, got a str"),
        ({"intervals": 1}, "parameter 'intervals' must be a boolean, got a int"),
        ({"width": 1.5}, "parameter 'width' must be a long, got a float"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            predict(model, req(x, parameters=params))


def test_optional_outputs_are_returned_when_produced(foreign):
    model, built = foreign["params"]
    x = inp("x", "FP64", built.model_input["x"].tolist())
    assert [o["name"] for o in model.get_output_types()] == ["y", "lower", "upper"]
    only_lower = predict(model, req(x, parameters={"intervals": True}, outputs=["lower"]))
    assert list(outputs_of(only_lower)) == ["lower"]
    with pytest.raises(
        InvalidInput, match=r"output 'lower' was not produced for this request \(the model returned: y\)"
    ):
        predict(model, req(x, outputs=["lower"]))


def test_optional_string_column_and_null_in_optional_double(foreign):
    model, built = foreign["text"]
    got = outputs_of(
        predict(model, req(inp("text", "BYTES", ["a b", "abc"]), inp("weight", "FP64", [None, 2.0])))
    )
    assert got == {"score": ("FP64", [2], [3.0, 6.0]), "words": ("INT64", [2], [2, 1])}
    with pytest.raises(InvalidInput, match="input 'text': null at row 1 of a required column"):
        predict(model, req(inp("text", "BYTES", ["a", None])))


# ------------------------------------------------------------------ V1


def test_v1_instances_records(model):
    assert predict(model, {"instances": [{"a": 1, "s": "xy"}, {"a": 2.5, "s": "z", "b": 10}]}) == {
        "predictions": [4.0, 16.0]
    }


def test_v1_inputs_columnar_and_records(model):
    assert predict(model, {"inputs": {"a": [1, 2], "s": ["a", "bb"]}}) == {"predictions": [3.0, 6.0]}
    assert predict(model, {"inputs": [{"a": 0, "s": "abc"}]}) == {"predictions": [3.0]}


def test_v1_raw_json_bytes(model):
    assert predict(model, b'{"instances": [{"a": 1, "s": ""}]}') == {"predictions": [2.0]}


def test_v1_rows_of_a_tensor(foreign):
    model, built = foreign["tensor"]
    got = predict(model, {"instances": built.model_input.tolist()})["predictions"]
    np.testing.assert_allclose(got, built.predict()["output-0"], rtol=1e-9, atol=1e-9)
    with pytest.raises(InvalidInput, match=r"bad shape \[1, 3\]"):
        predict(model, {"instances": [[1.0, 2.0, 3.0]]})


@pytest.mark.parametrize(
    "body,message",
    [
        ({"instances": [{"a": 1, "s": "x", "c": 2}]}, "unknown input 'c'"),
        ({"instances": [{"a": 1, "s": "x"}, {"s": "y"}]}, "record 1 is missing required input 'a'"),
        ({"instances": [{"a": "1", "s": "x"}]}, "input 'a': expected numbers"),
        ({"instances": [{"a": 1, "s": 2}]}, "input 's': element 0 is a int"),
        ({"instances": []}, "non-empty list of records"),
        ({"instances": [[1, "x"]]}, "list of records"),
        ({"inputs": {"a": [1, 2], "s": ["x"]}}, "different lengths"),
        ({"inputs": {"a": [], "s": []}}, "empty batch"),
        ({"rows": []}, '"instances"'),
        (b"not json", "request body is not JSON"),
    ],
)
def test_v1_bad_requests(model, body, message):
    with pytest.raises(InvalidInput) as info:
        predict(model, body)
    assert message in str(info.value)


def test_a_bytes_length_prefix_past_the_end_of_grpc_raw_contents_is_400(model):
    grpc_request = pb.ModelInferRequest(
        model_name="tiny",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name="a", datatype="FP64", shape=[1]),
            pb.ModelInferRequest.InferInputTensor(name="s", datatype="BYTES", shape=[1]),
        ],
        raw_input_contents=[struct.pack("<d", 1.0), struct.pack("<I", 1_000_000) + b"ab"],
    )
    with pytest.raises(
        InvalidInput, match=r"^input 's': a BYTES element's 4-byte length prefix runs past the end"
    ):
        predict(model, InferRequest.from_grpc(grpc_request))


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_binary_data_output_must_be_a_boolean(model, value):
    request = req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]), parameters={"binary_data_output": value})
    if value is None:
        assert predict(model, request).outputs[0].data == [3.0]
        return
    with pytest.raises(InvalidInput, match=r"^request parameter 'binary_data_output' must be a boolean"):
        predict(model, request)
    request = req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]), outputs=["y"])
    request.request_outputs = [RequestedOutput("y", parameters={"binary_data": value})]
    with pytest.raises(InvalidInput, match=r"^output 'y' parameter 'binary_data' must be a boolean"):
        predict(model, request)


def test_names_in_messages_are_cut_short(model):
    long = "n" * 10_000
    with pytest.raises(InvalidInput) as info:
        predict(model, req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]), inp(long, "FP64", [1.0])))
    assert str(info.value) == f"unknown input '{'n' * 64}…'; the model's inputs are: a, s, b"
    with pytest.raises(InvalidInput) as info:
        predict(model, req(inp("a", "FP64", [1.0]), inp("s", "BYTES", ["x"]), outputs=[long]))
    assert len(str(info.value)) < 150


def test_rows_over_the_limit_are_refused_before_decoding(tmp_path):
    limited = MLflowModel("tiny", str(write_tiny_pyfunc(tmp_path / "model")), Limits(max_rows=2))
    limited.load()
    assert predict(limited, req(inp("a", "FP64", [1.0, 2.0]), inp("s", "BYTES", ["x", "y"]))).outputs
    with pytest.raises(
        PayloadTooLarge, match=r"^input 'a' has 3 rows, more than the limit of 2 rows per request"
    ):
        predict(limited, req(inp("a", "FP64", [1.0] * 3), inp("s", "BYTES", ["x"] * 3)))
    with pytest.raises(PayloadTooLarge, match="limit of 2 rows"):
        predict(limited, {"instances": [{"a": 1.0, "s": "x"}] * 3})
