"""Codecs between V2 tensors and an MLflow pyfunc's input, output and parameters (MLServer-style:
this module knows numpy/pandas and the plans ``signature.py`` makes of the MLflow signature;
``model.py`` is the kserve runtime around it).

A column signature takes one V2 tensor per column, shape ``[n]`` or ``[n, 1]``, and the pyfunc gets
a DataFrame; a tensor signature takes one V2 tensor per spec, of the spec's rank and fixed
dimensions, and the pyfunc gets the array (one unnamed spec) or a dict of arrays. Request data must
match the datatype they declare (strings are not numbers, 1.5 is not an integer) and that datatype
must cast safely to the signature's; any problem raises ``kserve.errors.InvalidInput`` (HTTP 400)
naming the input and, where it applies, the row.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pandas as pd
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferInput
from kserve.utils.numpy_codec import from_np_dtype, to_np_dtype
from mlflow.exceptions import MlflowException
from mlflow.types.schema import ParamSpec

from mlflowserver.signature import Input, Output

DEFAULT_OUTPUT_NAME = "output-0"
V2_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")
V2_DATATYPES += ("FP16", "FP32", "FP64", "BYTES")
_WORDS = {"b": "booleans", "iu": "integers", "fiu": "numbers"}
_KIND_WORDS = {"U": "string", "S": "bytes", "b": "boolean", "f": "floating-point", "O": "mixed"}


# ------------------------------------------------------------------ requests -> arrays


def accepts(datatype: str, target: np.dtype) -> bool:
    """Whether a V2 datatype converts to ``target`` without loss (numpy's safe casts)."""
    source = to_np_dtype(datatype)
    if source is None:
        return False
    source = np.dtype(source)
    if source.kind in "OUS" or target.kind in "OUS":
        return source.kind == "O" and target.kind in "OUS"
    if source.kind == "b" or target.kind == "b":
        return source.kind == target.kind
    return np.can_cast(source, target, "safe")


def check_shape(spec: Input, where: str, shape) -> tuple[int, ...]:
    """The request's shape for ``spec`` as a tuple, or InvalidInput."""
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidInput(f"{where}: shape must be a list of integers")
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"{where}: shape {list(shape)} has a negative dimension")
    if spec.column:
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            return shape
        raise InvalidInput(
            f"{where}: bad shape {list(shape)}: expected [n] or [n, 1] (rank 1, or rank 2 with one column)"
        )
    if len(shape) != len(spec.shape) or any(s not in (-1, d) for s, d in zip(spec.shape, shape)):
        raise InvalidInput(
            f"{where}: bad shape {list(shape)}: the model takes {list(spec.shape)} (-1: any size)"
        )
    return shape


def decode_tensor(spec: Input, tensor: InferInput) -> np.ndarray:
    """A V2 input as the array the pyfunc gets for ``spec`` (1-D for a column)."""
    where = f"input '{spec.name}'"
    if not accepts(tensor.datatype, spec.dtype):
        accepted = ", ".join(d for d in V2_DATATYPES if accepts(d, spec.dtype))
        raise InvalidInput(
            f"{where} has datatype {tensor.datatype}, which cannot be safely cast to the "
            f"{spec.mlflow_type}{' column' if spec.column else ''} (accepted: {accepted})"
        )
    shape = check_shape(spec, where, tensor.shape)
    size = math.prod(shape)
    if tensor.data is not None and len(tensor.data):
        values = tensor.data
    else:  # gRPC raw contents (REST binary data reach here already decoded by kserve), or no data
        try:
            values = tensor.as_numpy()
        except ValueError:
            raise InvalidInput(f"{where}: data do not match shape {list(shape)} ({size} elements)") from None
        except struct.error:  # kserve's BYTES decoder reads past the buffer
            raise InvalidInput(
                f"{where}: a BYTES element's 4-byte length prefix runs past the end of its data"
            ) from None
    arr = decode_values(spec, where, values, tensor.datatype)
    if arr.size != size:
        raise InvalidInput(f"{where}: data has {arr.size} elements but shape {list(shape)} needs {size}")
    return arr.reshape(shape[:1] if spec.column else shape)


def decode_values(spec: Input, where: str, values, datatype: str | None = None) -> np.ndarray:
    """JSON-style values (nested lists) or an array as ``spec.dtype``, keeping their shape.

    ``datatype`` is what the request declared; V1 bodies declare none and get the column's own.
    """
    if spec.dtype.kind in "OUS":
        return _strings(spec, where, values)
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):
        raise InvalidInput(f"{where}: data are ragged or nested deeper than the shape") from None
    nulls = None
    if arr.dtype == object:  # null, out-of-range integers or mixed values
        nulls = np.fromiter((v is None for v in arr.flat), bool, arr.size).reshape(arr.shape)
        if nulls.any() and not spec.nullable:
            raise InvalidInput(_null_message(spec, where, int(np.flatnonzero(nulls)[0])))
        try:
            arr = np.asarray(arr[~nulls].tolist())
        except (ValueError, TypeError, OverflowError):
            arr = np.empty(0, dtype=object)
    kinds = _value_kinds(datatype or spec.datatype)
    if arr.dtype == object:
        raise InvalidInput(
            f"{where}: expected {_WORDS[kinds]} within the range of the {spec.mlflow_type} type"
        )
    if arr.dtype.kind not in kinds:
        raise InvalidInput(
            f"{where}: expected {_WORDS[kinds]}, got {_KIND_WORDS.get(arr.dtype.kind, 'non-numeric')} values"
        )
    arr = _cast(spec, where, arr)
    if nulls is not None and nulls.any():
        filled = np.full(nulls.shape, np.nan, dtype=spec.dtype)
        filled[~nulls] = arr
        return filled
    return arr


def _value_kinds(datatype: str) -> str:
    if datatype == "BOOL":
        return "b"
    return "iu" if datatype.startswith(("INT", "UINT")) else "fiu"


def _null_message(spec: Input, where: str, index: int) -> str:
    # Null is a missing value: only optional float (NaN) and string (None) columns take it.
    if not spec.column:
        return f"{where}: null at element {index}; a {spec.mlflow_type} takes no nulls"
    if spec.required:
        return f"{where}: null at row {index} of a required column"
    return f"{where}: null at row {index}; a {spec.mlflow_type} column cannot hold null"


def _cast(spec: Input, where: str, arr: np.ndarray) -> np.ndarray:
    target = spec.dtype
    if target.kind == "f" and arr.dtype.kind in "iu" and arr.size:
        limit = 2 ** (np.finfo(target).nmant + 1)  # largest integer the float type holds exactly
        if max(abs(int(arr.max())), abs(int(arr.min()))) > limit:
            raise InvalidInput(
                f"{where}: integer value exceeds {limit}, beyond what {spec.mlflow_type} holds exactly"
            )
    elif target.kind in "iu" and arr.size:
        info = np.iinfo(target)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise InvalidInput(f"{where}: integer value out of range for the {spec.mlflow_type} type")
    return arr.astype(target, copy=False)


def _strings(spec: Input, where: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    out = np.empty(arr.size, dtype=object)
    for i, value in enumerate(arr.flat):
        if isinstance(value, bytes):
            if not spec.binary:
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInput(f"{where}: element {i} is not valid UTF-8") from None
        elif isinstance(value, str):
            if spec.binary:
                value = value.encode("utf-8")
        elif value is None:
            if not spec.nullable:
                raise InvalidInput(_null_message(spec, where, i))
        else:
            raise InvalidInput(f"{where}: element {i} is a {type(value).__name__}, expected a string")
        out[i] = value
    out = out.reshape(arr.shape)
    return out if spec.dtype.kind == "O" else out.astype(spec.dtype)


def model_input(inputs: tuple[Input, ...], arrays: dict[str, np.ndarray]):
    """What the pyfunc's predict gets: a DataFrame (columns), an array or a dict of arrays (tensors)."""
    if inputs[0].column:
        return pd.DataFrame({i.key: arrays[i.name] for i in inputs if i.name in arrays}, copy=False)
    if inputs[0].key is None:
        return arrays[inputs[0].name]
    return {i.key: arrays[i.name] for i in inputs if i.name in arrays}


# ------------------------------------------------------------------ parameters


def decode_params(parameters, specs: dict[str, ParamSpec]) -> dict:
    """The request parameters the model's ParamSchema declares, as their declared types.

    Others (kserve's and tritonclient's own, such as ``binary_data_output``) are ignored, as
    MLflow's scoring server ignores parameters a model does not declare.
    """
    params = {}
    for name, value in (parameters or {}).items():
        spec = specs.get(name)
        if spec is None:
            continue
        value = parameter_value(value)
        try:
            params[name] = ParamSpec.validate_param_spec(value, spec)
        except MlflowException:
            kind = f"list of {spec.dtype.name}" if spec.shape else spec.dtype.name
            raise InvalidInput(f"parameter '{name}' must be a {kind}, got a {type(value).__name__}") from None
    return params


def parameter_value(value):
    """A plain value from a gRPC ``InferParameter`` (REST values pass through).

    kserve's protobuf has bool, int64 and string values only; tritonclient.grpc sends floats as
    Triton's ``double_param`` (field 4) and may send ``uint64_param`` (field 5), which kserve's
    message keeps as unknown fields: they are read from there.
    """
    if not hasattr(value, "WhichOneof"):
        return value
    choice = value.WhichOneof("parameter_choice")
    if choice is not None:
        return getattr(value, choice)
    from google.protobuf.unknown_fields import UnknownFieldSet

    for field in UnknownFieldSet(value):
        if field.field_number == 4 and field.wire_type == 1:  # double_param: 64 bits, little-endian
            return float(np.array([field.data], dtype=np.uint64).view(np.float64)[0])
        if field.field_number == 5 and field.wire_type == 0:  # uint64_param: varint
            return int(field.data)
    return None


# ------------------------------------------------------------------ results -> outputs


def encode_result(result, outputs: tuple[Output, ...], rows: int) -> list[tuple[str, np.ndarray]]:
    """A pyfunc result as ``[(output name, array)]``.

    A DataFrame gives one output per column, a dict one per key; a Series, list or array gives
    the single declared output (``output-0`` without one), or the declared columns in order
    when it is ``(n, k)`` with ``k`` declared column outputs. Declared column outputs are cast
    to their type and must have one value per row; InferenceError (500) otherwise: the model's fault.
    """
    single = outputs[0].name if len(outputs) == 1 else DEFAULT_OUTPUT_NAME
    if isinstance(result, pd.DataFrame):
        pairs = [(str(c), result[c].to_numpy()) for c in result.columns]
    elif isinstance(result, pd.Series):
        pairs = [(single, result.to_numpy())]
    elif isinstance(result, dict):
        pairs = [(str(k), np.asarray(v)) for k, v in result.items()]
    else:
        arr = np.asarray(result)
        columns = all(o.column for o in outputs)
        if len(outputs) > 1 and columns and arr.ndim == 2 and arr.shape[1] == len(outputs):
            pairs = [(o.name, arr[:, i]) for i, o in enumerate(outputs)]
        elif arr.ndim == 2 and arr.shape[1] == 1 and columns:
            pairs = [(single, arr[:, 0])]
        else:
            pairs = [(single, arr)]
    declared = {o.name: o for o in outputs}
    return [(name, _output_array(name, arr, declared.get(name), rows)) for name, arr in pairs]


def _output_array(name: str, arr: np.ndarray, spec: Output | None, rows: int) -> np.ndarray:
    if spec is not None and spec.column and (arr.ndim != 1 or arr.shape[0] != rows):
        raise InferenceError(
            f"model returned {list(arr.shape)} values for output '{name}' but the batch has {rows} rows"
        )
    try:
        if spec is not None and spec.dtype is not None and spec.dtype.kind not in "OUS":
            return arr.astype(spec.dtype, copy=False)
        if arr.dtype.kind in "OUSMm" or (spec is not None and spec.dtype is not None):
            flat = [v if isinstance(v, (str, bytes)) else str(v) for v in arr.reshape(-1)]
            return np.array(flat, dtype=object).reshape(arr.shape)
    except (TypeError, ValueError):
        raise InferenceError(f"model output '{name}' cannot be converted to its signature type") from None
    if from_np_dtype(arr.dtype) is None:
        raise InferenceError(f"model output '{name}' of dtype {arr.dtype} has no V2 datatype")
    return arr
