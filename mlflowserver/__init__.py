"""Generic KServe runtime for MLflow pyfunc models (see docs/codebase/kserve-runtime.md)."""

import os

__all__ = ["MLFLOW_HTTP_DEFAULTS", "MLflowModel", "apply_mlflow_http_defaults"]

# Bound MLflow's HTTP retries so an unreachable tracking server/registry fails in seconds rather
# than minutes (MLflow's defaults retry 7 times with exponential backoff; a silent server is
# waited for 120 s per try; docs/reliability.md). Here, without heavy imports: the project's
# pre-flight checks apply the same bounds.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def apply_mlflow_http_defaults() -> None:
    """:data:`MLFLOW_HTTP_DEFAULTS` in this process's environment, where it sets none (explicit env wins)."""
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def __getattr__(name: str):
    # Imported on first use: `python -m mlflowserver` imports this package before its __main__,
    # which sets up the start (garbage collection off while importing) before the heavy imports.
    if name == "MLflowModel":
        from mlflowserver.model import MLflowModel

        return MLflowModel
    raise AttributeError(f"module 'mlflowserver' has no attribute {name!r}")
