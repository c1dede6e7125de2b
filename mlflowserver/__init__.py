"""Generic KServe runtime for MLflow pyfunc models (see docs/codebase/kserve-runtime.md)."""

from mlflowserver.model import MLflowModel

__all__ = ["MLflowModel"]
