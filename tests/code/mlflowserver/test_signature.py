"""Unit tests of mlflowserver.signature: the V2 inputs and outputs planned from MLflow signatures."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.types import ColSpec, Schema, TensorSpec

from mlflowserver.signature import ModelSignatureError, plan_inputs, plan_outputs


def test_plans_column_tensor_and_unnamed_signatures():
    with pytest.raises(ModelSignatureError, match="no input signature"):
        plan_inputs(None)
    with pytest.raises(ModelSignatureError, match="'when'.*does not support"):
        plan_inputs(Schema([ColSpec("datetime", "when")]))
    types = ("double", "float", "long", "integer", "boolean", "string", "binary")
    assert [i.datatype for i in plan_inputs(Schema([ColSpec(t, t) for t in types]))] == [
        "FP64",
        "FP32",
        "INT64",
        "INT32",
        "BOOL",
        "BYTES",
        "BYTES",
    ]
    (tensor,) = plan_inputs(Schema([TensorSpec(np.dtype("float32"), (-1, 4))]))
    assert (
        tensor.metadata() == {"name": "input-0", "datatype": "FP32", "shape": [-1, 4]} and tensor.key is None
    )
    named = plan_inputs(
        Schema([TensorSpec(np.dtype("int64"), (-1,), "ids"), TensorSpec(np.dtype("bool"), (-1, 2), "m")])
    )
    assert [(i.name, i.key, i.datatype) for i in named] == [("ids", "ids", "INT64"), ("m", "m", "BOOL")]
    unnamed_columns = plan_inputs(Schema([ColSpec("double"), ColSpec("string")]))
    assert [(i.name, i.key) for i in unnamed_columns] == [("input-0", 0), ("input-1", 1)]


def test_output_plans_name_unnamed_outputs_and_keep_tensor_shapes():
    assert plan_outputs(None) == ()
    assert [o.metadata() for o in plan_outputs(Schema([TensorSpec(np.dtype("float64"), (-1,))]))] == [
        {"name": "output-0", "datatype": "FP64", "shape": [-1]}
    ]
    assert [o.metadata() for o in plan_outputs(Schema([TensorSpec(np.dtype("float64"), (-1, 3))]))] == [
        {"name": "output-0", "datatype": "FP64", "shape": [-1, 3]}
    ]
    assert plan_outputs(Schema([TensorSpec(np.dtype(str), (-1,))]))[0].metadata()["datatype"] == "BYTES"
    optional = plan_outputs(Schema([ColSpec("double", "y"), ColSpec("double", "lower", required=False)]))
    assert [o.name for o in optional] == ["y", "lower"]  # optional outputs are listed like the others
