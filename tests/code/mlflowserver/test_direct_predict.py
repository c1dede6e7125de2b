"""Unit tests of mlflowserver.direct_predict: skipping MLflow's schema pass changes nothing.

An echo pyfunc returns the frame and parameters its predict received; for every column type the
runtime serves, required and optional, with nulls and absent optional columns, through V2 and V1,
the direct call hands the model exactly what ``PyFuncModel.predict`` hands it after its schema
pass (this is the equality test of the private ``_model_impl`` the direct call uses)."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from mlflowserver.codecs import decode_params
from mlflowserver.signature import COLUMN_TYPES
from tests import foreign_models
from tests.code.mlflowserver.calls import inp, req, served


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return {"frame": model_input, "params": params}


# V2 datatype and two values of each column type the runtime serves.
VALUES = {
    "double": ("FP64", [1.5, -2.0]),
    "float": ("FP32", [0.25, 3.0]),
    "long": ("INT64", [2**40, -1]),
    "integer": ("INT32", [7, -7]),
    "boolean": ("BOOL", [True, False]),
    "string": ("BYTES", ["a b", "é"]),
    "binary": ("BYTES", ["YWI=", "eHl6"]),  # base64 in V2 JSON
}
assert set(VALUES) == set(COLUMN_TYPES)
NULLABLE = ("double", "float", "string", "binary")


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    columns = [ColSpec(t, f"req_{t}") for t in COLUMN_TYPES] + [
        ColSpec(t, f"opt_{t}", required=False) for t in COLUMN_TYPES
    ]
    params = ParamSchema([ParamSpec("scale", "double", 1.0), ParamSpec("label", "string", "none")])
    path = tmp_path_factory.mktemp("echo") / "model"
    mlflow.pyfunc.save_model(
        str(path), python_model=Echo(), signature=ModelSignature(inputs=Schema(columns), params=params)
    )
    model = served(path, "echo")
    assert model._predict is not None  # the direct call is the one under test
    return model


def both_calls(model, arrays, params):
    data, _ = model.pyfunc_input(arrays)
    direct = model._predict(data.copy(), params)
    through_mlflow = model._pyfunc.predict(data.copy(), params=params)
    return direct, through_mlflow


def assert_same(direct, through_mlflow):
    pd.testing.assert_frame_equal(
        direct["frame"], through_mlflow["frame"], check_dtype=True, check_exact=True
    )
    assert direct["params"] == through_mlflow["params"]


def v2_inputs(optional: dict) -> list:
    required = [inp(f"req_{t}", *VALUES[t]) for t in COLUMN_TYPES]
    return required + [inp(f"opt_{t}", VALUES[t][0], values) for t, values in optional.items()]


@pytest.mark.parametrize(
    "optional",
    [
        {},
        {t: VALUES[t][1] for t in COLUMN_TYPES},
        {t: [None, VALUES[t][1][1]] for t in NULLABLE},
        {"string": [None, None], "double": [None, None]},
    ],
    ids=["absent", "all-given", "nulls", "all-null"],
)
@pytest.mark.parametrize("parameters", [None, {"scale": 2}, {"label": "x", "scale": 0.5, "other": 1}])
def test_v2_requests_reach_the_model_as_through_mlflows_schema_pass(echo, optional, parameters):
    request = req(*v2_inputs(optional), parameters=parameters)
    params = decode_params(request.parameters, echo.params)
    assert_same(*both_calls(echo, echo.v2_arrays(request), params))


def test_v1_records_reach_the_model_as_through_mlflows_schema_pass(echo):
    records = [
        {**{f"req_{t}": VALUES[t][1][i] for t in COLUMN_TYPES}, "opt_double": [None, 4.0][i]}
        for i in range(2)
    ]
    assert_same(*both_calls(echo, echo.v1_arrays({"instances": records}), {}))


def test_tensor_signatures_go_through_pyfunc_predict(tmp_path):
    tensor = served(foreign_models.build("tensor", tmp_path).path, "tensor")
    assert tensor._predict is None
