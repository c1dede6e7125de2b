"""The default model's quality, as docs/model-quality.md and README show it.

``python -m docsgen.quality`` (``make docs-measure``) fits the default ``TrainingConfig`` on
the frozen split exactly as the ``train`` entry point does and scores it as that run's
report does (``model.train.regression_metrics``, ``model.report.build_report``), then saves
every figure in ``docs/figures/model-quality.json``; :func:`blocks` renders its tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
from dataclasses import asdict
from pathlib import Path

from benchmarks.report import format_value
from docsgen.pages import FIGURES_DIR, source
from model.data import PROJECT_ROOT, RAW_DATA_PATH, TARGET, load_raw, split_train_test
from model.gates import COVERAGE_LEVEL
from model.metrics import level_suffix
from model.registry import CHAMPION, MODEL_NAME
from model.report import INTERVAL_LEVELS, build_report, python_model_predictor
from model.summary import COVERAGE_METRIC, summary_text
from model.train import TrainingConfig, fit_model, predict, regression_metrics

NAME = "model-quality"


def unit(key: str) -> str:
    """How a figure of the report reads: coverages are shares, R² is a ratio, the rest USD."""
    if key.startswith("interval_coverage"):
        return "share"
    if key == "r2":
        return "r2"
    if key.startswith("n_"):
        return "rows"
    return "USD"


def measure(data_path: Path) -> dict:
    """Every figure of the default model on the frozen split, with what produced it."""
    train_frame, test_frame = split_train_test(load_raw(data_path))
    config = TrainingConfig()
    model = fit_model(train_frame, config)
    headline = regression_metrics(test_frame[TARGET], predict(model, test_frame))
    report = build_report(python_model_predictor(model), test_frame)
    values = {**headline, **report.metrics, "n_train": len(train_frame), "n_test": len(test_frame)}
    values["n_uncapped"] = values["n_test"] - values["n_capped"]
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=PROJECT_ROOT
    ).stdout.strip()
    return {
        "what": "python -m docsgen.quality: the default TrainingConfig fitted on the frozen split, scored on its test part",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "revision": revision,
        "config": {**asdict(config), "n_neighbors": list(config.n_neighbors)},
        "figures": {key: {"value": float(value), "unit": unit(key)} for key, value in values.items()},
        "coverage_by_decile": report.tables["interval_coverage_by_decile.json"],
    }


def blocks() -> dict[str, str]:
    """The interval tables of docs/model-quality.md and the training summary README shows."""
    saved = source(NAME)
    figures = saved["figures"]

    def cell(key: str) -> str:
        return format_value(figures[key]["value"], figures[key]["unit"])

    coverage = [
        "| level | coverage | mean width | median width | coverage on the capped blocks |",
        "| --- | --- | --- | --- | --- |",
    ]
    for level in INTERVAL_LEVELS:
        suffix = f"{level * 100:g}"
        coverage.append(
            f"| {level:g} | **{cell(f'interval_coverage_{suffix}')}** | {cell(f'interval_width_mean_{suffix}')} "
            f"| {cell(f'interval_width_median_{suffix}')} | {cell(f'interval_coverage_capped_{suffix}')} |"
        )
    deciles: dict[str, dict[float, dict]] = {}
    for row in saved["coverage_by_decile"]:
        deciles.setdefault(row["decile"], {})[row["level"]] = row
    levels = " | ".join(f"{level:g}" for level in INTERVAL_LEVELS)
    by_decile = [f"| decile (k USD) | {levels} |", "| --- |" + " --- |" * len(INTERVAL_LEVELS)]
    for decile, rows in deciles.items():
        cells = " | ".join(
            f"{format_value(rows[level]['coverage'], 'share')} / {rows[level]['mean_width']:,.0f}"
            for level in INTERVAL_LEVELS
        )
        by_decile.append(f"| {decile} | {cells} |")
    return {
        "quality-coverage": "\n".join(coverage),
        "quality-deciles": "\n".join(by_decile),
        "training-summary": training_summary(figures),
    }


def training_summary(figures: dict) -> str:
    """What ``make train`` prints at its end on a fresh store, with the saved default model's
    figures (the store's paths and the run id cut short: they differ on every machine)."""
    metrics = {
        "test_rmse": figures["rmse"]["value"],
        "test_rmse_ci95_low": figures["rmse_ci95_low"]["value"],
        "test_rmse_ci95_high": figures["rmse_ci95_high"]["value"],
        COVERAGE_METRIC: figures[f"interval_coverage_{level_suffix(COVERAGE_LEVEL)}"]["value"],
    }
    text = summary_text(
        MODEL_NAME,
        1,
        CHAMPION,
        metrics,
        store="sqlite:////…/mlflow.db",
        run_id="6d9aaa7e…",
        artifact_uri="/…/mlruns/1/6d9aaa7e…/artifacts",
    )
    return f"```\n{text}\n```"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m docsgen.quality", description=__doc__)
    parser.add_argument("--data-path", type=Path, default=RAW_DATA_PATH)
    args = parser.parse_args(argv)
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{NAME}.json"
    path.write_text(json.dumps(measure(args.data_path), indent=2) + "\n")
    print(f"wrote {path.relative_to(PROJECT_ROOT)}; `make docs` renders it")


if __name__ == "__main__":
    main()
