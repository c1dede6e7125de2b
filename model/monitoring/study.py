"""How the default thresholds behave, measured: ``python -m model.monitoring.study --write-docs``.

Fits the default model on the frozen split's training blocks, builds its reference as training
does, and assesses 1,000-row windows of the held-out test blocks (random samples without
replacement within a window: 4,128 test blocks hold only four disjoint windows), as served
(with 80 % intervals), unchanged and under each shift of docs/workflows/monitoring.md. It
saves every window's statistics (``STUDY_PATH``, beside the project's other saved outputs);
``make docs`` (docsgen) renders the doc's tables from them with :func:`markdown`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from model.data import FEATURE_COLUMNS, PROJECT_ROOT, RAW_DATA_PATH, TARGET, load_raw, split_train_test
from model.intervals import INTERVAL_PARAM
from model.metrics import interval_metrics, rmse
from model.monitoring.reference import PREDICTION, reference_of
from model.monitoring.statistics import DEGRADED, DRIFT, LEVEL, THRESHOLDS, TRUE_VALUE, assess
from model.train import TrainingConfig, fit_model

STUDY_PATH = PROJECT_ROOT / "docs" / "figures" / "monitoring-study.json"
WINDOW_ROWS = 1000
SERVED_LEVEL = 0.8
# Scenarios judged with their true values (the others test drift alone: prices not known yet).
LABELLED = ("", "prices_x1.3")

# name → (description, what it does to a window of test blocks: inputs, true values)
Shift = Callable[[pd.DataFrame], pd.DataFrame]
SHIFTS: dict[str, tuple[str, Shift]] = {
    "income_x1.2": (
        "every `median_income` × 1.2",
        lambda w: w.assign(median_income=w["median_income"] * 1.2),
    ),
    "inland_only": ("only `INLAND` blocks", lambda w: w),
    "bedrooms_missing": ("`total_bedrooms` all missing", lambda w: w.assign(total_bedrooms=np.nan)),
    "population_thousands": (
        "`population` in thousands (÷ 1000)",
        lambda w: w.assign(population=w["population"] / 1000),
    ),
    "prices_x1.3": (
        "true values × 1.3 (a market that moved)",
        lambda w: w.assign(**{TARGET: w[TARGET] * 1.3}),
    ),
}


def served_window(model, blocks: pd.DataFrame) -> pd.DataFrame:
    """``blocks`` as the monitor reads a capture of them: inputs, what was served at 80 %, true values."""
    inputs = blocks[list(FEATURE_COLUMNS)].reset_index(drop=True)
    served = model.predict(None, inputs, {INTERVAL_PARAM: SERVED_LEVEL})
    return pd.concat([inputs, served.reset_index(drop=True)], axis=1).assign(
        **{TRUE_VALUE: blocks[TARGET].to_numpy(dtype=float), LEVEL: SERVED_LEVEL}
    )


def test_figures(model, test_frame: pd.DataFrame) -> dict[str, float]:
    """The version's own figures on the test split, as the training run logs them."""
    out = model.predict(None, test_frame[list(FEATURE_COLUMNS)], {INTERVAL_PARAM: SERVED_LEVEL})
    coverage = interval_metrics(test_frame[TARGET], out.iloc[:, 1], out.iloc[:, 2], SERVED_LEVEL)
    return {
        "rmse": rmse(test_frame[TARGET].to_numpy(dtype=float), out[TARGET].to_numpy()),
        f"coverage_{SERVED_LEVEL:g}": coverage["interval_coverage_80"],
    }


def windows(test_frame: pd.DataFrame, shift: str, n: int, seed: int) -> list[pd.DataFrame]:
    """``n`` windows of ``WINDOW_ROWS`` test blocks (rows distinct within a window), shifted."""
    pool = test_frame[test_frame["ocean_proximity"] == "INLAND"] if shift == "inland_only" else test_frame
    rng = np.random.default_rng(seed)
    apply = SHIFTS[shift][1] if shift else (lambda w: w)
    return [apply(pool.iloc[rng.choice(len(pool), WINDOW_ROWS, replace=False)]) for _ in range(n)]


def measure(model, train_frame, test_frame, n_windows: int, seed: int = 0) -> dict:
    reference = reference_of(model, train_frame)
    figures = test_figures(model, test_frame)
    study = {
        "window_rows": WINDOW_ROWS,
        "windows": n_windows,
        "thresholds": vars(THRESHOLDS),
        "test": figures,
    }
    study["scenarios"] = {}
    for index, shift in enumerate(["", *SHIFTS]):
        rows = []
        for blocks in windows(test_frame, shift, n_windows, seed + index):
            window = served_window(model, blocks)
            if shift not in LABELLED:
                window = window.drop(columns=[TRUE_VALUE])
            a = assess(reference, window, figures)
            q = a.quality
            rows.append(
                {
                    "verdict": a.verdict,
                    "scores": {c.column: c.score for c in a.columns},
                    "drifted": [c.column for c in a.columns if c.drifted],
                    "rmse_ratio": q.rmse / q.test_rmse if q else None,
                    "coverage": q.coverage if q else None,
                }
            )
        study["scenarios"][shift or "none"] = rows
    return study


def _lowest(rows: list[dict], column: str) -> str:
    """The lowest score of ``column`` over ``rows`` ('missing' when the column had no value)."""
    scores = [w["scores"][column] for w in rows if np.isfinite(w["scores"][column])]
    return f"{min(scores):.3f}" if scores else "no value left"


def _q(values, p) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.quantile(finite, p)) if finite else float("nan")


def markdown(study: dict) -> str:
    """The tables docs/workflows/monitoring.md shows, from a saved study."""
    n, t = study["windows"], study["thresholds"]
    none = study["scenarios"]["none"]
    columns = list(none[0]["scores"])
    lines = [
        f"{n} windows of {study['window_rows']:,} held-out test blocks per scenario, served at "
        f"{SERVED_LEVEL:.0%} intervals; the version's test RMSE {study['test']['rmse']:,.0f} USD and "
        f"test coverage {study['test'][f'coverage_{SERVED_LEVEL:g}']:.1%}. Thresholds: numeric "
        f"{t['numeric_drift']:g}, categorical {t['categorical_drift']:g}, missing share "
        f"{t['missing_share']:g}, RMSE ratio {t['rmse_ratio']:g}, coverage drop {t['coverage_drop']:g}.",
        "",
        "**Drift scores on unchanged windows** (no drift: what a threshold must stay above)",
        "",
        "| column | method | median | 95th pct | max | threshold |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for column in columns:
        scores = [w["scores"][column] for w in none]
        categorical = column == "ocean_proximity"
        threshold = t["categorical_drift"] if categorical else t["numeric_drift"]
        name = "prediction" if column == PREDICTION else f"`{column}`"
        method = "Jensen-Shannon" if categorical else "Wasserstein (normed)"
        lines.append(
            f"| {name} | {method} | {_q(scores, 0.5):.3f} | {_q(scores, 0.95):.3f} | {max(scores):.3f} "
            f"| {threshold:g} |"
        )
    lines += [
        "",
        "**Verdicts per scenario** (input shifts judged without true values; the last with them)",
        "",
        "| scenario | `ok` | `drift` | `degraded` | crossed its threshold: windows, lowest score |"
        " live RMSE / test | live coverage |",
        "| --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    cover = study["test"][f"coverage_{SERVED_LEVEL:g}"]
    for name, rows in study["scenarios"].items():
        verdicts = [w["verdict"] for w in rows]
        counts = pd.Series([c for w in rows for c in w["drifted"]], dtype=object).value_counts()
        crossed = [
            f"{'prediction' if c == PREDICTION else c} ({k}, {_lowest(rows, c)})" for c, k in counts.items()
        ]
        ratios = [w["rmse_ratio"] for w in rows if w["rmse_ratio"] is not None]
        coverage = [w["coverage"] for w in rows if w["coverage"] is not None]
        if ratios:
            crossed.append(f"RMSE ({sum(r > t['rmse_ratio'] for r in ratios)})")
            crossed.append(f"coverage ({sum(c < cover - t['coverage_drop'] for c in coverage)})")
        label = "none (held-out test blocks)" if name == "none" else SHIFTS[name][0]
        spread = (
            [f"{min(ratios):.2f}–{max(ratios):.2f}", f"{min(coverage):.1%}–{max(coverage):.1%}"]
            if ratios
            else ["—", "—"]
        )
        lines.append(
            f"| {label} | {verdicts.count('ok')} | {verdicts.count(DRIFT)} | {verdicts.count(DEGRADED)} "
            f"| {', '.join(crossed) or '—'} | {' | '.join(spread)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=50, help="windows per scenario")
    parser.add_argument(
        "--write-docs", action="store_true", help=f"save {STUDY_PATH.name} (`make docs` renders it)"
    )
    args = parser.parse_args(argv)
    train_frame, test_frame = split_train_test(load_raw(RAW_DATA_PATH))
    started = time.perf_counter()
    model = fit_model(train_frame, TrainingConfig())
    study = measure(model, train_frame, test_frame, args.windows)
    study["seconds"] = round(time.perf_counter() - started)
    print(markdown(study))
    if args.write_docs:
        STUDY_PATH.write_text(json.dumps(study, indent=1) + "\n")


if __name__ == "__main__":
    main()
