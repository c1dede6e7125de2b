"""Training figure: the default ``train`` entry point, end to end, against a throw-away store.

``mlflow run . -e train --env-manager local`` with every parameter at its MLproject default
(cross-validation, the final fit, evaluation, logging, registration), tracking into a
temporary SQLite store whose artifacts also stay in the temporary directory.
"""

from __future__ import annotations

from mlflow import MlflowClient

from benchmarks.bench import Bench
from benchmarks.report import Figure
from model.data import PROJECT_ROOT
from model.registry import MODEL_NAME
from model.train import DEFAULT_RMSE_CEILING
from testbed.mlflow_cli import mlflow_run
from testbed.processes import run_measured

TRAIN_LIMIT = 120.0  # seconds, wall time of the default `train`
EXPERIMENT = "benchmark-train"


def run(bench: Bench) -> None:
    """Measure the default `train`; its registered artifact becomes the model the other sections measure."""
    store = bench.workdir / "train-store"
    store.mkdir()
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    experiment = client.create_experiment(EXPERIMENT, artifact_location=(store / "artifacts").as_uri())
    # Any parameter not at its default is in the figure's label.
    command = mlflow_run(
        PROJECT_ROOT, "train", EXPERIMENT, f"data_path={bench.data_path}", *bench.options.train_params
    )
    # Training uses every core, as `make train` does: OMP_NUM_THREADS is left to LightGBM.
    env = bench.process_env({"MLFLOW_TRACKING_URI": tracking_uri})
    env.pop("OMP_NUM_THREADS")
    print("- mlflow run . -e train (defaults)", flush=True)
    completed = run_measured(command, env, timeout=3600, cwd=PROJECT_ROOT)
    runs = client.search_runs([experiment])
    seconds = runs[0].data.metrics.get("training_seconds") if runs else None
    if completed.returncode != 0 or seconds is None:
        bench.errors.append(
            f"mlflow run -e train: exit {completed.returncode}:\n{completed.output_tail[-2000:]}"
        )
    params = runs[0].data.params if runs else {}
    if completed.returncode == 0:
        bench.trained_model = client.get_model_version_download_uri(MODEL_NAME, "1")
    bench.add(
        Figure(
            "training.wall",
            f"{'default ' if not bench.options.train_params else ''}train, "
            f"`mlflow run . -e train{''.join(' -P ' + p for p in bench.options.train_params)}` wall time "
            f"(n_estimators={params.get('n_estimators', '?')}, cv_folds={params.get('cv_folds', '?')})",
            completed.wall_seconds if completed.returncode == 0 else None,
            "s",
            reference=TRAIN_LIMIT,
            op="<=",
        ),
        Figure(
            "training.training_seconds",
            "its logged training_seconds (the final fit)",
            seconds,
            "s",
            reference=completed.wall_seconds,
            ref_label="wall time",
        ),
        Figure(
            "training.test_rmse",
            "its logged test_rmse",
            runs[0].data.metrics.get("test_rmse") if runs else None,
            "USD",
            reference=DEFAULT_RMSE_CEILING,
            op="<=",
        ),
    )
