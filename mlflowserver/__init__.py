"""Generic KServe runtime for MLflow pyfunc models (see docs/codebase/kserve-runtime.md)."""

__all__ = ["MLflowModel"]


def __getattr__(name: str):
    # Imported on first use: `python -m mlflowserver` imports this package before its __main__,
    # which sets up the start (garbage collection off while importing) before the heavy imports.
    if name == "MLflowModel":
        from mlflowserver.model import MLflowModel

        return MLflowModel
    raise AttributeError(f"module 'mlflowserver' has no attribute {name!r}")
