"""MLflow models this project did not write, for testing the V2 runtime as a new user would.

Built inside the tests from scikit-learn's bundled datasets and small pyfuncs (models-from-code,
so nothing project-specific is pickled); nothing is downloaded. Each ``ForeignModel`` holds the
saved model's path, one V2 request for it (``inputs``, ``params``) and the same request as the
in-process input of ``mlflow.pyfunc.load_model(path).predict``.

| name | what | signature |
|---|---|---|
| ``diabetes`` | ``mlflow.sklearn`` random forest on the diabetes data | 10 double columns → unnamed float64 tensor |
| ``iris-int`` | ``mlflow.sklearn`` logistic regression, integer labels | 4 double columns (names with spaces) → int64 tensor |
| ``iris-str`` | ``mlflow.sklearn`` decision tree, string labels | 4 double columns → str tensor |
| ``tensor`` | pyfunc: softmax of a linear map | unnamed float32 tensor (-1, 4) → float64 tensor (-1, 3) |
| ``text`` | pyfunc: string column and an optional double column | ``text``, optional ``weight`` → ``score``, ``words`` |
| ``params`` | pyfunc with a ParamSchema and optional outputs | ``x`` → ``y``, optional ``lower``/``upper``; params ``scale``, ``intervals``, ``width`` |
"""

from __future__ import annotations

import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROWS = [0, 50, 100, 1, 51, 101, 7]  # rows of each dataset sent in one request: every iris class


@dataclass
class ForeignModel:
    name: str
    path: Path
    inputs: list[tuple[str, str, np.ndarray]]  # (V2 name, datatype, values) of one request
    model_input: Any  # the same request as what predict() gets in-process
    params: dict = field(default_factory=dict)

    def predict(self, params: dict | None = None) -> dict[str, np.ndarray]:
        """In-process ``mlflow.pyfunc.load_model(path).predict``, as ``{output name: array}``."""
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(str(self.path))
        chosen = self.params if params is None else params
        result = model.predict(self.model_input, params=chosen) if chosen else model.predict(self.model_input)
        if isinstance(result, pd.DataFrame):
            return {str(c): result[c].to_numpy() for c in result.columns}
        return {"output-0": np.asarray(result)}


def _column_inputs(frame: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    inputs = []
    for column in frame.columns:
        values = frame[column].to_numpy()
        datatype = "BYTES" if values.dtype == object else "FP64"
        inputs.append((column, datatype, values))
    return inputs


def _save_sklearn(estimator, x: pd.DataFrame, y, path: Path) -> None:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    estimator.fit(x, y)
    signature = infer_signature(x, estimator.predict(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(
            estimator,
            str(path),
            signature=signature,
            serialization_format="cloudpickle",
            pip_requirements=["mlflow", "scikit-learn"],
        )


def build_diabetes(path: Path) -> ForeignModel:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    x, y = load_diabetes(return_X_y=True, as_frame=True)
    _save_sklearn(RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0), x, y, path)
    request = x.iloc[ROWS].reset_index(drop=True)
    return ForeignModel("diabetes", path, _column_inputs(request), request)


def _iris(path: Path, estimator, labels: str) -> ForeignModel:
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    y = iris.target if labels == "int" else np.asarray(iris.target_names)[iris.target]
    _save_sklearn(estimator, iris.data, y, path)
    request = iris.data.iloc[ROWS].reset_index(drop=True)
    return ForeignModel(f"iris-{labels}", path, _column_inputs(request), request)


def build_iris_int(path: Path) -> ForeignModel:
    from sklearn.linear_model import LogisticRegression

    return _iris(path, LogisticRegression(max_iter=1000), "int")


def build_iris_str(path: Path) -> ForeignModel:
    from sklearn.tree import DecisionTreeClassifier

    return _iris(path, DecisionTreeClassifier(max_depth=3, random_state=0), "str")


TENSOR_CODE = """
import mlflow
import numpy as np

WEIGHTS = np.array([[0.4, -0.2, 0.1], [-0.3, 0.5, 0.2], [0.7, -0.1, -0.6], [0.2, 0.3, -0.4]])


class Softmax(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        z = model_input.astype(np.float64) @ WEIGHTS
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


mlflow.models.set_model(Softmax())
"""

TEXT_CODE = """
import mlflow
import pandas as pd


class TextScore(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        weight = model_input["weight"].fillna(1.0) if "weight" in model_input else 1.0
        words = model_input["text"].str.split().str.len().astype("int64")
        return pd.DataFrame({"score": model_input["text"].str.len() * weight, "words": words})


mlflow.models.set_model(TextScore())
"""

PARAMS_CODE = """
import mlflow
import pandas as pd


class Scaled(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        params = params or {}
        y = model_input["x"] * params.get("scale", 1.0)
        out = pd.DataFrame({"y": y})
        if params.get("intervals", False):
            out["lower"] = y - params.get("width", 1)
            out["upper"] = y + params.get("width", 1)
        return out


mlflow.models.set_model(Scaled())
"""


def _save_pyfunc(path: Path, code: str, signature) -> None:
    import mlflow.pyfunc

    code_file = path.parent / f"{path.name}_code.py"
    code_file.write_text(textwrap.dedent(code))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(
            str(path), python_model=str(code_file), signature=signature, pip_requirements=["mlflow"]
        )


def build_tensor(path: Path) -> ForeignModel:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from sklearn.datasets import load_iris

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 4))]),
        outputs=Schema([TensorSpec(np.dtype("float64"), (-1, 3))]),
    )
    _save_pyfunc(path, TENSOR_CODE, signature)
    x = load_iris().data[ROWS].astype(np.float32)
    return ForeignModel("tensor", path, [("input-0", "FP32", x)], x)


def build_text(path: Path) -> ForeignModel:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "text"), ColSpec("double", "weight", required=False)]),
        outputs=Schema([ColSpec("double", "score"), ColSpec("long", "words")]),
    )
    _save_pyfunc(path, TEXT_CODE, signature)
    text = np.array(["a b", "hello wide world", "", "one", "x y z w"], dtype=object)
    weight = np.array([2.0, np.nan, 0.5, 1.5, np.nan])
    request = pd.DataFrame({"text": text, "weight": weight})
    return ForeignModel("text", path, [("text", "BYTES", text), ("weight", "FP64", weight)], request)


def build_params(path: Path) -> ForeignModel:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("double", "x")]),
        outputs=Schema(
            [
                ColSpec("double", "y"),
                ColSpec("double", "lower", required=False),
                ColSpec("double", "upper", required=False),
            ]
        ),
        params=ParamSchema(
            [
                ParamSpec("scale", "double", 1.0),
                ParamSpec("intervals", "boolean", False),
                ParamSpec("width", "long", 1),
            ]
        ),
    )
    _save_pyfunc(path, PARAMS_CODE, signature)
    x = np.array([1.0, -2.5, 10.0])
    params = {"scale": 2.5, "intervals": True, "width": 3}
    return ForeignModel("params", path, [("x", "FP64", x)], pd.DataFrame({"x": x}), params)


BUILDERS = {
    "diabetes": build_diabetes,
    "iris-int": build_iris_int,
    "iris-str": build_iris_str,
    "tensor": build_tensor,
    "text": build_text,
    "params": build_params,
}


def build(name: str, directory: Path) -> ForeignModel:
    return BUILDERS[name](Path(directory) / name)
