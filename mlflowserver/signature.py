"""What the runtime plans once, at load, from an MLflow model's signature: its V2 inputs, outputs
and parameters (as MLServer's ``metadata.py`` does), or ``ModelSignatureError`` when the model
cannot be served. ``codecs.py`` decodes and encodes requests by these plans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from kserve.utils.numpy_codec import from_np_dtype
from mlflow.types import DataType
from mlflow.types.schema import ParamSpec

# MLflow column types with a V2 datatype (datetime, arrays and objects have none).
COLUMN_TYPES = ("double", "float", "long", "integer", "boolean", "string", "binary")


class ModelSignatureError(ValueError):
    """The MLflow model cannot be served by this runtime (no usable signature)."""


@dataclass(frozen=True)
class Input:
    """One V2 input: the pyfunc's dtype for it and the V2 shape it takes."""

    name: str  # V2 name: the column or tensor name, input-<i> when the signature has none
    key: str | int | None  # DataFrame column / dict key; None: the pyfunc gets this array itself
    dtype: np.dtype
    shape: tuple[int, ...]  # advertised V2 shape; -1 takes any size
    mlflow_type: str  # for messages: "double", "float32 tensor", ...
    column: bool = True  # a DataFrame column: V2 shape [n] or [n, 1]
    required: bool = True
    binary: bool = False  # BYTES values stay bytes (MLflow "binary"); otherwise they are text

    @property
    def datatype(self) -> str:
        return from_np_dtype(self.dtype)

    @property
    def nullable(self) -> bool:
        # JSON null is a missing value: only an optional column can take it, and only a float
        # (NaN) or string (None) column can hold it (MLflow refuses NaN in integer columns).
        return self.column and not self.required and self.dtype.kind in "fOUS"

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Output:
    """One declared output; ``dtype`` None when the signature's type has no V2 datatype."""

    name: str
    dtype: np.dtype | None
    shape: tuple[int, ...] = (-1,)
    column: bool = True

    def metadata(self) -> dict:
        datatype = from_np_dtype(self.dtype) if self.dtype is not None else "BYTES"
        return {"name": self.name, "datatype": datatype, "shape": list(self.shape)}


def _column_dtype(spec, where: str) -> np.dtype:
    type_name = spec.type.name if isinstance(spec.type, DataType) else None
    if type_name not in COLUMN_TYPES:
        raise ModelSignatureError(
            f"{where} has type {spec.type!r}, which this runtime does not support "
            f"(supported: {', '.join(COLUMN_TYPES)}, and tensors)"
        )
    # strings and bytes reach the pyfunc as Python objects in an object column, as pandas holds them
    return np.dtype(object) if type_name in ("string", "binary") else np.dtype(spec.type.to_numpy())


def plan_inputs(schema) -> tuple[Input, ...]:
    """The V2 inputs of an MLflow input schema, or ModelSignatureError."""
    if schema is None:
        raise ModelSignatureError(
            "the model has no input signature; log it with signature=... so the runtime can map requests"
        )
    specs = schema.inputs
    named = schema.has_input_names()  # MLflow allows one unnamed tensor at most
    if schema.is_tensor_spec():
        return tuple(
            Input(
                name=spec.name if named else f"input-{i}",
                key=spec.name if named else None,
                dtype=spec.type,
                shape=tuple(spec.shape),
                mlflow_type=f"{spec.type} tensor",
                column=False,
                binary=spec.type.kind == "S",
            )
            for i, spec in enumerate(specs)
        )
    inputs = []
    for i, spec in enumerate(specs):
        name = spec.name if named else f"input-{i}"
        dtype = _column_dtype(spec, f"input column '{name}'")
        type_name = spec.type.name
        key = spec.name if named else i
        inputs.append(
            Input(name, key, dtype, (-1,), type_name, required=spec.required, binary=type_name == "binary")
        )
    return tuple(inputs)


def plan_outputs(schema) -> tuple[Output, ...]:
    """The declared outputs (empty without an output schema); unnamed ones are output-<i>."""
    if schema is None:
        return ()
    specs = schema.inputs
    outputs = []
    for i, spec in enumerate(specs):
        name = spec.name or f"output-{i}"
        if schema.is_tensor_spec():
            dtype = np.dtype(object) if spec.type.kind in "OUS" else spec.type
            outputs.append(Output(name, dtype, tuple(spec.shape), column=False))
        else:
            known = isinstance(spec.type, DataType) and spec.type.name in COLUMN_TYPES
            dtype = np.dtype(spec.type.to_numpy()) if known else None
            outputs.append(Output(name, dtype))
    return tuple(outputs)


def plan_params(schema) -> dict[str, ParamSpec]:
    return {spec.name: spec for spec in schema.params} if schema is not None else {}
