"""The pyfunc's own predict, without MLflow's second pass over an input the runtime has decoded.

``PyFuncModel.predict`` enforces the input schema on every call: it rebuilds the DataFrame
column by column and converts each column to its declared type. The runtime has done exactly
that already: ``codecs`` decodes each V2 or V1 input into the numpy dtype the signature declares
(``signature.plan_inputs``) and builds the DataFrame in signature order, so MLflow's pass
returns the same frame, at a cost larger than the project's whole model on one row (the
"raw python_model.predict" row against the pyfunc's in docs/performance.md).

MLflow has no public way to skip that pass. :func:`direct_predict` calls what
``PyFuncModel.predict`` calls after it, the loaded model's ``_model_impl.predict`` (a private
attribute, pinned by the lock), with MLflow's other step, the parameters' defaults, done here.
It does so only where the pass is provably a no-op: a ``PythonModel`` with a column signature
whose types the codecs decode (``tests/code/mlflowserver/test_direct_predict.py``: an echo
model gets the same frame and parameters as through ``PyFuncModel.predict``, for every column
type, nulls and absent columns, V2 and V1). Any other model goes through ``PyFuncModel.predict``.
"""

from __future__ import annotations

from collections.abc import Callable

from mlflow.pyfunc import PyFuncModel

from mlflowserver.signature import Input

PYTHON_MODEL_LOADER = "mlflow.pyfunc.model"


def direct_predict(pyfunc: PyFuncModel, inputs: tuple[Input, ...]) -> Callable | None:
    """``predict(data, params)`` of the model behind ``pyfunc`` for frames the codecs built from
    ``inputs``, or None where MLflow's schema pass may change the input (use ``pyfunc.predict``)."""
    metadata = pyfunc.metadata
    if pyfunc.loader_module != PYTHON_MODEL_LOADER or not inputs or not all(i.column for i in inputs):
        return None
    # A signature inferred from the predict's type hints or from an input example has its own
    # conversions in PyFuncModel.predict.
    if metadata._is_signature_from_type_hint() or metadata._is_type_hint_from_example():
        return None
    implementation = pyfunc._model_impl
    params_schema = metadata.get_params_schema()
    defaults = {spec.name: spec.default for spec in params_schema.params} if params_schema else None

    def predict(data, params: dict):
        if defaults is None:
            return implementation.predict(data)
        return implementation.predict(data, params={**defaults, **params})

    return predict
