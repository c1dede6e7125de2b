"""A generic KServe model that serves any MLflow pyfunc model with a column or tensor signature.

Modelled on kserve's ``python/sklearnserver``: ``load()`` loads the pyfunc and plans its inputs,
outputs and parameters from the MLflow signature once (``mlflowserver.codecs``); ``predict()``
maps a V2 ``InferRequest`` (REST JSON, REST binary or gRPC) or a V1 body to the pyfunc's input
and the pyfunc's result back to outputs. Nothing here is specific to one model.

Caller mistakes raise ``kserve.errors.InvalidInput`` (HTTP 400) naming the input, output or
parameter and the problem; an ``MlflowException`` with error code ``INVALID_PARAMETER_VALUE``
raised by the model's own validation is a caller mistake too. Any other model failure raises
``kserve.errors.InferenceError`` (HTTP 500) naming only the exception type; details go to the
server log, never to the response. See docs/codebase/kserve-runtime.md for every message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping

import mlflow.pyfunc
import numpy as np
import orjson
from kserve import Model
from kserve.errors import InferenceError, InvalidInput, ModelNotFound
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.utils.numpy_codec import from_np_dtype
from kserve.utils.utils import generate_uuid
from mlflow.exceptions import MlflowException

from mlflowserver import capture
from mlflowserver.codecs import (
    check_shape,
    decode_params,
    decode_tensor,
    decode_values,
    encode_result,
    model_input,
)
from mlflowserver.direct_predict import direct_predict
from mlflowserver.limits import Limits, RowBudget, short, too_many_rows
from mlflowserver.signature import Input, Output, plan_inputs, plan_outputs, plan_params

logger = logging.getLogger("mlflowserver")

# Longest model-authored error message passed on to the caller.
_MAX_MESSAGE = 300
# A one-row request is predicted on the event loop's thread while the model's last one-row
# predict took less than this: handing a short predict to a worker thread cost more than the
# predict itself, sequentially and with 8 clients at once (docs/codebase/kserve-runtime.md#performance-notes),
# and a loop held this long delays no probe or other request noticeably. A model slower than
# this (or before its first one-row answer) keeps predicting in a worker thread.
INLINE_SECONDS = 0.002


class ExplainerNotFound(ModelNotFound):
    """404: the V1 ``:explain`` verb on a model without an explainer (kserve answers 501)."""

    def __init__(self, model_name: str):
        self.reason = f"model '{short(model_name)}' has no explainer"


class MLflowModel(Model):
    """KServe model serving one MLflow pyfunc model (local directory or any MLflow model URI)."""

    def __init__(self, name: str, model_uri: str, limits: Limits | None = None):
        super().__init__(name)
        self.model_uri = model_uri
        self.limits = limits or Limits()
        self.max_rows = self.limits.max_rows
        self.row_budget = RowBudget(self.limits)
        self.ready = False
        self.inputs: tuple[Input, ...] = ()
        self.outputs: tuple[Output, ...] = ()
        self.params: dict = {}
        self._by_name: dict[str, Input] = {}
        self._pyfunc = None
        self._predict = None
        self._one_row_seconds = math.inf  # the last one-row predict's duration
        self.capture: capture.Capture | None = None

    # -- loading / metadata ------------------------------------------------------------------

    def load(self) -> bool:
        """Load the pyfunc (``models:/`` URIs resolve through MLFLOW_TRACKING_URI) and plan it."""
        # suppress_warnings: MLflow's check of the model's requirements against the installed
        # packages (importlib.metadata for each) was a large part of the load; the serving image is
        # built from the locks the model was trained with (docs/codebase/kserve-runtime.md).
        pyfunc = mlflow.pyfunc.load_model(self.model_uri, suppress_warnings=True)
        metadata = pyfunc.metadata
        self.inputs = plan_inputs(metadata.get_input_schema())
        self.outputs = plan_outputs(metadata.get_output_schema())
        self.params = plan_params(metadata.get_params_schema())
        self._by_name = {i.name: i for i in self.inputs}
        self._pyfunc = pyfunc
        self._predict = direct_predict(pyfunc, self.inputs)
        # Opt-in recording of what is served (MLFLOWSERVER_CAPTURE_DIR; mlflowserver/capture.py).
        self.capture = capture.from_environment(
            metadata.run_id or "", [i.name for i in self.inputs if i.column], list(self.params)
        )
        self.ready = True
        logger.info(
            "Loaded MLflow model %s: inputs [%s], outputs [%s], params [%s]",
            self.model_uri,
            ", ".join(f"{i.name}:{i.mlflow_type}{'' if i.required else ' (optional)'}" for i in self.inputs),
            ", ".join(o.name for o in self.outputs),
            ", ".join(f"{p.name}:{p.dtype.name}={p.default!r}" for p in self.params.values()),
        )
        return self.ready

    def get_input_types(self) -> list[dict]:
        return [i.metadata() for i in self.inputs]

    def get_output_types(self) -> list[dict]:
        return [o.metadata() for o in self.outputs]

    # -- request -> pyfunc input -------------------------------------------------------------

    def _input(self, name) -> Input:
        spec = self._by_name.get(name)
        if spec is None:
            expected = ", ".join(i.name for i in self.inputs)
            raise InvalidInput(f"unknown input '{short(name)}'; the model's inputs are: {expected}")
        return spec

    def pyfunc_input(self, arrays: dict[str, np.ndarray]):
        """The pyfunc's input from checked arrays, and the batch size; InvalidInput if incomplete."""
        for spec in self.inputs:
            if spec.required and spec.name not in arrays:
                raise InvalidInput(f"missing required input '{spec.name}'")
        if not arrays:
            expected = ", ".join(i.name for i in self.inputs)
            raise InvalidInput(f"the request has no inputs; the model's inputs are: {expected}")
        batched = {
            name: arr.shape[0]
            for name, arr in arrays.items()
            if arr.ndim and (self._by_name[name].column or self._by_name[name].shape[:1] == (-1,))
        }
        first, rows = next(iter(batched.items()), (None, 1))
        for name, length in batched.items():
            if length == 0:
                raise InvalidInput(f"empty batch: input '{name}' has 0 rows")
            if length != rows and self.inputs[0].column:
                raise InvalidInput(
                    f"inputs have different lengths: '{first}' has {rows} rows, '{name}' has {length}"
                )
        return model_input(self.inputs, arrays), rows

    def _check_rows(self, where: str, rows) -> None:
        """PayloadTooLarge (413) for a batch over ``max_rows``, before its data are converted."""
        if isinstance(rows, int) and not isinstance(rows, bool) and rows > self.max_rows:
            raise too_many_rows(where, rows, self.max_rows)

    def v2_arrays(self, request: InferRequest) -> dict[str, np.ndarray]:
        """A V2 request's inputs, checked against the signature: an array per input name."""
        arrays: dict[str, np.ndarray] = {}
        for tensor in request.inputs:
            spec = self._input(tensor.name)
            if spec.name in arrays:
                raise InvalidInput(f"input '{spec.name}' is given more than once")
            shape = tensor.shape
            if isinstance(shape, (list, tuple)) and shape and (spec.column or spec.shape[:1] == (-1,)):
                self._check_rows(f"input '{spec.name}'", shape[0])
            arrays[spec.name] = decode_tensor(spec, tensor)
        return arrays

    def v1_arrays(self, payload: Mapping) -> dict[str, np.ndarray]:
        """A V1 body's inputs (records, columnar, or rows of one tensor), checked against the
        signature: an array per input name."""
        key = "instances" if "instances" in payload else "inputs" if "inputs" in payload else None
        if key is None:
            raise InvalidInput('V1 request must have "instances" (a list of records) or "inputs"')
        data = payload[key]
        if isinstance(data, Mapping):
            columns = {name: values for name, values in data.items()}
        elif isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
            columns = self._records_to_columns(data)
        elif isinstance(data, list) and len(self.inputs) == 1 and not self.inputs[0].column:
            columns = {self.inputs[0].name: data}
        else:
            what = (
                "records ({column: value} objects)" if self.inputs[0].column else "rows of the input tensor"
            )
            raise InvalidInput(f'"{key}" must be a non-empty list of {what}')
        arrays = {}
        for name, values in columns.items():
            spec = self._input(name)
            where = f"input '{name}'"
            if isinstance(values, list):
                self._check_rows(where, len(values))
            if spec.column and not isinstance(values, list):
                values = [values]
            arr = decode_values(spec, where, values)
            arrays[name] = (
                arr.reshape(-1) if spec.column else arr.reshape(check_shape(spec, where, arr.shape))
            )
        return arrays

    def _records_to_columns(self, records: list) -> dict[str, list]:
        present = {name for record in records for name in record}
        for name in present:
            self._input(name)
        columns = {}
        for spec in self.inputs:
            if spec.name not in present:
                continue
            if spec.required and not all(spec.name in r for r in records):
                row = next(i for i, r in enumerate(records) if spec.name not in r)
                raise InvalidInput(f"record {row} is missing required input '{spec.name}'")
            columns[spec.name] = [r.get(spec.name) for r in records]
        return columns

    def _requested_outputs(self, request: InferRequest) -> list[str] | None:
        if not request.request_outputs:
            return None
        names = [o.name for o in request.request_outputs]
        declared = [o.name for o in self.outputs]
        unknown = [n for n in names if n not in declared]
        if declared and unknown:
            raise InvalidInput(
                f"unknown output '{short(unknown[0])}'; the model's outputs are: {', '.join(declared)}"
            )
        return names

    # -- predict -----------------------------------------------------------------------------

    def _call_pyfunc(self, data, params: dict):
        try:
            if self._predict is not None:
                return self._predict(data, params)
            if self.params:
                return self._pyfunc.predict(data, params=params)
            return self._pyfunc.predict(data)
        except MlflowException as exc:
            if exc.error_code == "INVALID_PARAMETER_VALUE":
                raise InvalidInput(_model_error_message(exc)) from None
            logger.exception("MLflow model %s failed", self.name)
            raise InferenceError("model prediction failed (MlflowException); see the server log") from None
        except Exception as exc:
            logger.exception("MLflow model %s failed", self.name)
            raise InferenceError(
                f"model prediction failed ({type(exc).__name__}); see the server log"
            ) from None

    def _timed_call(self, data, params: dict):
        started = time.perf_counter()
        try:
            return self._call_pyfunc(data, params)
        finally:
            self._one_row_seconds = time.perf_counter() - started

    async def predict(
        self,
        payload: dict | InferRequest | bytes,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict | InferResponse:
        if isinstance(payload, (bytes, bytearray)):
            # V1 body sent with a non-JSON content type: kserve hands over the raw bytes.
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError:
                raise InvalidInput("request body is not JSON") from None
        if isinstance(payload, InferRequest):
            requested = self._requested_outputs(payload)
            binary = binary_outputs(payload)
            arrays = self.v2_arrays(payload)
            params = decode_params(payload.parameters, self.params)
        elif isinstance(payload, Mapping):
            arrays, requested, params = self.v1_arrays(payload), None, {}
        else:
            raise InvalidInput(f"unsupported request type {type(payload).__name__}")
        data, rows = self.pyfunc_input(arrays)
        # In a worker thread, as `mlflow models serve` does: the tree engine and NumPy release the
        # GIL, so the event loop goes on reading and answering other requests meanwhile.
        # Called inline, predict held the loop and 8 clients got well under the in-process rate.
        # A short one-row predict is the exception (INLINE_SECONDS): the hand-off cost more.
        async with self.row_budget.hold(rows):
            if rows != 1:
                result = await asyncio.to_thread(self._call_pyfunc, data, params)
            elif self._one_row_seconds < INLINE_SECONDS:
                result = self._timed_call(data, params)
            else:
                result = await asyncio.to_thread(self._timed_call, data, params)
        pairs = encode_result(result, self.outputs, rows)
        if isinstance(payload, InferRequest):
            response = self._v2_response(payload, pairs, requested, binary)
            if self.capture is not None:
                self.capture.record(response.id, rows, arrays, pairs, params)
            return response
        if self.capture is not None:
            self.capture.record(capture.request_id(headers), rows, arrays, pairs, params)
        # V1: a list of values for one output, a list of records for several.
        if len(pairs) == 1:
            return {"predictions": _json_list(pairs[0][1])}
        columns = [(name, _json_list(arr)) for name, arr in pairs]
        return {"predictions": [{name: values[i] for name, values in columns} for i in range(rows)]}

    def _v2_response(
        self, request: InferRequest, pairs, requested: list[str] | None, binary: bool
    ) -> InferResponse:
        produced = dict(pairs)
        for name in requested or ():
            if name not in produced:
                returned = ", ".join(produced)
                raise InvalidInput(
                    f"output '{name}' was not produced for this request (the model returned: {returned})"
                )
        outputs = []
        for name in requested or produced:
            arr = produced[name]
            output = InferOutput(name=name, shape=list(arr.shape), datatype=from_np_dtype(arr.dtype))
            output.set_data_from_numpy(arr, binary_data=binary)
            outputs.append(output)
        return InferResponse(
            response_id=request.id or generate_uuid(),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=binary,
            requested_outputs=request.request_outputs,
        )

    async def explain(self, payload, headers=None):
        raise ExplainerNotFound(self.name)


def binary_outputs(request: InferRequest) -> bool:
    """Whether a REST answer's outputs are binary: ``binary_data_output`` must be a JSON boolean.

    The binary tensor data extension defines it as a boolean; kserve takes any truthy value, so
    the string ``"false"`` turned the answer binary. A non-boolean is refused (400); so is a
    non-boolean ``binary_data`` on a requested output.
    """
    if not request.from_grpc:
        for where, parameters in (
            ("request", request.parameters),
            *((f"output '{short(o.name)}'", o.parameters) for o in request.request_outputs or ()),
        ):
            key = "binary_data_output" if where == "request" else "binary_data"
            if parameters is None:
                continue
            if not isinstance(parameters, Mapping):
                raise InvalidInput(f"{where} parameters must be a JSON object")
            value = parameters.get(key)
            if value is not None and not isinstance(value, bool):
                raise InvalidInput(
                    f"{where} parameter '{key}' must be a boolean (true or false), "
                    f"got a {type(value).__name__}"
                )
    return request.use_binary_outputs


def _model_error_message(exc: MlflowException) -> str:
    """A caller-facing message for a model's INVALID_PARAMETER_VALUE error, without payload data."""
    message = exc.message if isinstance(getattr(exc, "message", None), str) else str(exc)
    if getattr(exc, "error_class", None) == "SCHEMA_ENFORCEMENT_FAILED" or message.startswith(
        "Failed to enforce schema"
    ):
        # MLflow's schema-enforcement message embeds the whole input DataFrame: keep only the cause.
        _, sep, cause = message.partition("Error: ")
        message = "input does not match the model signature" + (f": {cause}" if sep else "")
    message = " ".join(message.split())
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return f"model rejected the input: {message}"


def _json_list(arr: np.ndarray) -> list:
    if arr.dtype.kind == "f":
        # NaN is not JSON: send null
        return np.where(np.isnan(arr), None, arr.astype(object)).tolist()
    if arr.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.tolist()]
    return arr.tolist()
