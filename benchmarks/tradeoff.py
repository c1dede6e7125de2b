"""Trade-off curve: test RMSE against in-process 1-row latency, for candidate models.

Each candidate is the default ``TrainingConfig`` with a few fields changed, fitted on
the frozen training split, logged with ``model.packaging`` like a real run, loaded back
with ``mlflow.pyfunc.load_model`` and measured in this process one after the other, so
the latencies compare. The default must hold both limits: test RMSE under
``model.train.DEFAULT_RMSE_CEILING`` (the quality floor of the lifecycle issue) and the
1-row pyfunc predict under ``benchmarks.inprocess.ONE_ROW_LIMIT``.
"""

from __future__ import annotations

from dataclasses import replace

import mlflow

from benchmarks.artifacts import build_project_model, save_trivial_model
from benchmarks.bench import Bench, p50, time_calls
from benchmarks.inprocess import ONE_ROW_LIMIT
from benchmarks.report import Figure
from model.data import FEATURE_COLUMNS, TARGET, load_raw, split_train_test
from model.metrics import regression_metrics
from model.train import DEFAULT_RMSE_CEILING, TrainingConfig

# name → the fields that differ from the default TrainingConfig.
CANDIDATES = {
    "previous default: 2 × 300 trees, 255 leaves, depth unlimited": dict(max_depth=-1),
    "default: 2 × 300 trees, 255 leaves, depth ≤ 12": dict(),
    "2 × 300 trees, depth ≤ 8": dict(max_depth=8),
    "2 × 250 trees, depth ≤ 10, lr 0.07": dict(max_depth=10, n_estimators=250, learning_rate=0.07),
    "2 × 200 trees, depth ≤ 12, lr 0.09": dict(n_estimators=200, learning_rate=0.09),
    "1 × 300 trees, depth ≤ 12": dict(n_models=1),
    "1 × 150 trees, depth ≤ 12, lr 0.1": dict(n_models=1, n_estimators=150, learning_rate=0.1),
    "1 × 100 trees, 63 leaves, depth ≤ 12, lr 0.15": dict(
        n_models=1, n_estimators=100, num_leaves=63, learning_rate=0.15
    ),
}


def run(bench: Bench) -> None:
    _, test_frame = split_train_test(load_raw(bench.data_path))
    test_features = test_frame[list(FEATURE_COLUMNS)]
    frames = bench.one_row_frames()
    # MLflow's own share of a 1-row call: a pyfunc answering zeros behind the same signature.
    trivial_dir = bench.trivial_dir or save_trivial_model(bench.workdir, bench.data_path)
    trivial = mlflow.pyfunc.load_model(str(trivial_dir))
    trivial_one_row = p50(time_calls(trivial.predict, frames, bench.options.one_row_calls))
    label = "trivial model (zeros, same signature): in-process pyfunc predict, 1 row, p50"
    bench.add(Figure("tradeoff.trivial.1row", label, trivial_one_row, "s"))
    for position, (name, changes) in enumerate(CANDIDATES.items()):
        config = replace(TrainingConfig(), cv_folds=0, **changes)
        print(f"- {name}", flush=True)
        workdir = bench.workdir / f"tradeoff-{position}"
        model_dir, fit_seconds = build_project_model(workdir, bench.data_path, config)
        pyfunc = mlflow.pyfunc.load_model(str(model_dir))
        rmse = regression_metrics(test_frame[TARGET], pyfunc.predict(test_features)[TARGET])["rmse"]
        one_row = p50(time_calls(pyfunc.predict, frames, bench.options.one_row_calls))
        python_model = pyfunc.unwrap_python_model()
        X = python_model.features.transform(test_features)
        regressor_seconds = p50(time_calls(python_model.regressor.predict, [X], 5)) / len(X)
        key = f"tradeoff.{position}"
        bench.add(
            Figure(
                f"{key}.rmse",
                f"{name}: test RMSE",
                rmse,
                "USD",
                reference=DEFAULT_RMSE_CEILING,
                ref_label=f"{DEFAULT_RMSE_CEILING:,.0f} USD limit",
            ),
            Figure(
                f"{key}.1row",
                f"{name}: in-process pyfunc predict, 1 row, p50",
                one_row,
                "s",
                reference=ONE_ROW_LIMIT,
                ref_label="1 ms limit",
            ),
            Figure(
                f"{key}.regressor_row",
                f"{name}: regressor alone, per row of {len(X):,}",
                regressor_seconds,
                "s",
            ),
            Figure(f"{key}.fit", f"{name}: fit, OMP_NUM_THREADS={bench.options.threads}", fit_seconds, "s"),
        )
