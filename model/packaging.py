"""How the fitted model becomes one self-contained MLflow artifact."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from model.contract import CATEGORICAL_COLUMN, FEATURE_COLUMNS, INPUT_SCHEMA, NULLABLE_COLUMNS
from model.data import PROJECT_ROOT, TARGET
from model.intervals import INTERVAL_PARAM, LOWER_COLUMN, UPPER_COLUMN
from model.pyfunc import CaliforniaHousingModel

LOCK_PATH = PROJECT_ROOT / "requirements.lock"
ARTIFACT_NAME = "model"
# What loading and calling the pickled model imports; versions come from the lock,
# so the environment a server builds from the artifact is the one we trained in.
RUNTIME_PACKAGES = (
    "mlflow",
    "cloudpickle",
    "numpy",
    "pandas",
    "pyyaml",
    "scikit-learn",
    "scipy",
    "lightgbm",
    "onnxruntime",
)

# The nine raw columns in; the price out, and its interval's bounds when the caller asks
# for one with the `interval` parameter (a coverage level; default null = no interval).
# Every change here changes what servers advertise and accept: the promotion's signature
# gate refuses it unless model/signatures.py declares it (docs/mlflow/model-registry.md).
SIGNATURE = ModelSignature(
    inputs=INPUT_SCHEMA,
    outputs=Schema(
        [
            ColSpec("double", TARGET),
            ColSpec("double", LOWER_COLUMN, required=False),
            ColSpec("double", UPPER_COLUMN, required=False),
        ]
    ),
    params=ParamSchema([ParamSpec(INTERVAL_PARAM, "double", None)]),
)


def locked_versions(lock_path: Path = LOCK_PATH) -> dict[str, str]:
    """Package name (canonical: lower case, ``-`` for runs of ``-_.``) → pinned version, from the lock."""
    pins = {}
    for line in lock_path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith("-"):  # comments, blank lines, pip options
            continue
        requirement = Requirement(text)
        pinned = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if pinned:
            pins[canonicalize_name(requirement.name)] = pinned[0]
    return pins


def pip_requirements(lock_path: Path = LOCK_PATH) -> list[str]:
    pins = locked_versions(lock_path)
    return [f"{package}=={pins[package]}" for package in RUNTIME_PACKAGES]


def input_example(frame: pd.DataFrame) -> pd.DataFrame:
    """A few raw rows, one with a nullable column missing, as served requests look."""
    missing = frame[list(NULLABLE_COLUMNS)].isna().any(axis=1)
    with_missing = frame[missing].head(1)
    complete = frame[~missing].head(2)
    example = pd.concat([complete, with_missing])[list(FEATURE_COLUMNS)]
    example[CATEGORICAL_COLUMN] = example[CATEGORICAL_COLUMN].astype(object)
    return example.reset_index(drop=True)


def log_model(
    model: CaliforniaHousingModel, example: pd.DataFrame, signature: ModelSignature = SIGNATURE
) -> ModelInfo:
    """Log the model into the active run, with the package code it unpickles against and its
    boosters compiled into the trees every server runs (:func:`compiled_trees`)."""
    with tempfile.TemporaryDirectory() as directory:
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME, **_pyfunc_arguments(model, example, signature, Path(directory))
        )


def save_model(
    model: CaliforniaHousingModel,
    path: Path,
    signature: ModelSignature = SIGNATURE,
    example: pd.DataFrame | None = None,
) -> None:
    """The artifact :func:`log_model` logs, saved to the directory ``path`` instead."""
    with tempfile.TemporaryDirectory() as directory:
        mlflow.pyfunc.save_model(str(path), **_pyfunc_arguments(model, example, signature, Path(directory)))


def compiled_trees(model: CaliforniaHousingModel, directory: Path) -> dict[str, str]:
    """Each of the model's tree ensembles compiled to an ONNX file in ``directory``: the
    pyfunc's artifacts, by name (``CaliforniaHousingModel.load_context`` loads them).

    Built here, at training time, so that no server converts or compiles anything.
    """
    artifacts = {}
    for name, ensemble in model.tree_ensembles().items():
        path = directory / f"{name}.onnx"
        path.write_bytes(ensemble.compile())
        artifacts[name] = str(path)
    return artifacts


def _pyfunc_arguments(
    model: CaliforniaHousingModel, example: pd.DataFrame | None, signature: ModelSignature, directory: Path
) -> dict:
    return {
        "python_model": model,
        "artifacts": compiled_trees(model, directory),
        "signature": signature,
        "input_example": example,
        "code_paths": [str(PROJECT_ROOT / "model")],
        "pip_requirements": pip_requirements(),
    }
