"""The models mlflowserver's unit tests serve in process: the tiny pyfunc (inputs a: double,
s: string, b: optional double; output y = a*2 + len(s) (+ b)) and the foreign pyfuncs of
tests/foreign_models.py (a tensor signature, a string column with an optional column, a
ParamSchema with optional outputs)."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytest

from mlflowserver.model import MLflowModel
from tests import foreign_models
from tests.code.mlflowserver.calls import served
from tests.integration.servers import write_tiny_pyfunc


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> MLflowModel:
    return served(write_tiny_pyfunc(tmp_path_factory.mktemp("tiny") / "model"), "tiny")


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """The foreign pyfuncs, served in process: name -> (MLflowModel, ForeignModel)."""
    directory = tmp_path_factory.mktemp("foreign")
    built = {name: foreign_models.build(name, directory) for name in ("tensor", "text", "params")}
    return {name: (served(m.path, name), m) for name, m in built.items()}
