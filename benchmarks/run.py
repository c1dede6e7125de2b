"""One harness run: build the artifacts, run the selected sections, print and record the table."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import (
    batch,
    capture,
    cluster,
    coldstart,
    engine,
    inprocess,
    intervals,
    limits,
    profile,
    served,
    servers,
    tradeoff,
    training,
)
from benchmarks.artifacts import (
    build_project_model,
    download_model,
    feature_frame,
    find_data_path,
    save_lightgbm_path_model,
    save_trivial_model,
    training_config,
)
from benchmarks.bench import Bench, Options
from benchmarks.options import MODEL_SECTIONS
from benchmarks.report import Figure, format_value, plain_table, table, write_docs
from model.data import PROJECT_ROOT, load_raw


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu or platform.processor() or platform.machine()}), Python {platform.python_version()}"


def git_revision() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def section(bench: Bench, name: str, function, *args) -> None:
    print(f"\n== {name}", flush=True)
    started = time.perf_counter()
    try:
        function(bench, *args)
    except Exception as error:  # noqa: BLE001 - one failed section must not hide the others' figures
        traceback.print_exc()
        bench.errors.append(f"section {name} failed: {type(error).__name__}: {error}")
    print(f"   ({name}: {time.perf_counter() - started:.0f} s)", flush=True)


def run(options: Options) -> dict:
    started = time.perf_counter()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="benchmarks-"))
    print(f"work directory {workdir}", flush=True)
    try:
        data_path = find_data_path(options.data)
        bench = Bench(options, workdir, data_path, feature_frame(load_raw(data_path)))
        needs_model = set(options.only) & set(MODEL_SECTIONS)
        if "training" in options.only:
            # First: the artifact the measured `train` registers is then the one measured below.
            section(bench, "training", training.run)
        if needs_model:
            print("\n== artifacts", flush=True)
            if options.model_uri:
                bench.model_dir = download_model(workdir, options.model_uri)
                bench.model_description = f"`{options.model_uri}`"
            elif bench.trained_model:
                bench.model_dir = download_model(workdir, bench.trained_model)
                bench.model_description = (
                    "the artifact the measured `mlflow run . -e train` registered (defaults)"
                )
            else:
                config = training_config(options.short)
                bench.model_dir, fit_seconds = build_project_model(workdir, data_path, config)
                bench.model_description = (
                    f"fitted by the harness: `TrainingConfig` n_estimators={config.n_estimators}, "
                    f"n_neighbors={config.n_neighbors} ({fit_seconds:.0f} s)"
                )
            bench.trivial_dir = save_trivial_model(workdir, data_path)
            bench.lightgbm_dir = save_lightgbm_path_model(workdir, bench.python_model)
            print(f"   model: {bench.model_description}", flush=True)
        if "engine" in options.only:
            section(bench, "engine", engine.run)
        if "inprocess" in options.only:
            section(bench, "inprocess", inprocess.run)
        if "intervals" in options.only:
            section(bench, "intervals", intervals.run)
        if {"servers", "load"} & set(options.only):
            section(bench, "servers", servers.run, "servers" in options.only, "load" in options.only)
        if "servers" in options.only:
            section(bench, "served", served.versus_mlflow_serve)
        if "coldstart" in options.only:
            section(bench, "coldstart", coldstart.run)
        if "limits" in options.only:
            section(bench, "limits", limits.run)
        if "capture" in options.only:
            section(bench, "capture", capture.run)
        if options.profile and needs_model:
            section(bench, "profile", profile.run)
        if "batch" in options.only:
            section(bench, "batch", batch.run)
        if "cluster" in options.only:
            section(bench, "cluster", cluster.run)
        if "tradeoff" in options.only:
            section(bench, "tradeoff", tradeoff.run)
    finally:
        if options.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    missing = [f.key for f in bench.figures if f.status == "n/a"]
    summary = {
        "form": form(options),
        "sections": list(options.only),
        "argv": options.argv,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "revision": git_revision(),
        "machine": machine(),
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "seconds": time.perf_counter() - started,
        "model": bench.model_description,
        "options": {
            k: v
            for k, v in vars(options).items()
            if k not in ("json", "write_docs", "keep", "argv", "from_json")
        },
        "figures": [f.to_json() for f in bench.figures],
        "missing": missing,
        "errors": bench.errors,
        "misses": [f.key for f in bench.figures if f.status == "MISS"],
        "profiles": bench.profiles,
    }
    print("\n" + plain_table(bench.figures))
    print(
        f"\n{len(bench.figures)} figures, {len(summary['misses'])} MISS, {len(missing)} missing, "
        f"{len(bench.errors)} errors; {summary['seconds']:.0f} s"
    )
    for error in bench.errors:
        print(f"ERROR: {error}")
    if options.json:
        Path(options.json).write_text(json.dumps(summary, indent=2, default=str))
    if options.write_docs:
        print(f"wrote {write_docs(summary, runs_markdown)}")
    return summary


def form(options: Options) -> str:
    """ "short", "full", or "custom" when a measured quantity differs from both forms' defaults."""
    bookkeeping = {"json", "write_docs", "keep", "argv", "from_json", "profile", "data", "short"}
    reference = Options.short_form() if options.short else Options()
    changed = [
        name
        for name in vars(options)
        if name not in bookkeeping and getattr(options, name) != getattr(reference, name)
    ]
    base = "short" if options.short else "full"
    return f"{base} form with {', '.join(changed)} changed" if changed else f"{base} form"


def runs_markdown(saved: dict) -> str:
    """The generated part of docs/performance.md: each saved run (``benchmarks.report.write_docs``)."""
    return "\n\n".join(markdown(run) for run in saved["runs"])


def markdown(summary: dict) -> str:
    """The generated part of docs/performance.md, from a run's summary (also one read back from ``--json``)."""
    options = summary["options"]
    figures = [Figure.from_json(f) for f in summary["figures"]]
    load = summary["load_average"]
    lines = [
        f"Run: {summary['date']}, revision {summary['revision']}, {summary['form']}: "
        f"`python -m benchmarks {' '.join(summary.get('argv', []))}`, sections {', '.join(summary['sections'])}, "
        f"{summary['seconds'] / 60:.1f} min.",
        "",
        f"Machine: {summary['machine']}; load average {load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end "
        "(other work shares the machine: absolute figures are inflated, ratios measured in the same run are what counts).",
        "",
        f"Model: {summary['model'] or 'none'}. OMP_NUM_THREADS={options['threads']} for the harness, servers and batch "
        f"commands; `mlflow models serve --workers` {', '.join(map(str, options['workers']))}; throughput "
        f"{options['clients']} clients × {options['duration']:g} s, {options['body_rows']}-row bodies; load test "
        f"{options['load_clients']} clients × {options['load_duration']:g} s; in-process sizes "
        f"{', '.join(f'{n:,}' for n in options['inprocess_rows'])} rows; batch sizes "
        f"{', '.join(f'{n:,}' for n in options['batch_rows'])} rows"
        + (
            f"; Spark cluster jobs {options['cluster_small_rows']:,} and {options['cluster_rows']:,} rows."
            if "cluster" in summary["sections"]
            else "."
        ),
        "",
        table(figures),
        "",
        f"{len(figures)} figures, {len(summary['misses'])} MISS, {len(summary['missing'])} missing, "
        f"{len(summary['errors'])} errors.",
    ]
    for error in summary["errors"]:
        lines += ["", f"Error: {error.splitlines()[0]}"]
    for name, text in summary.get("profiles", {}).items():
        lines += ["", f"Profile, {name}:", "", "```", text.rstrip(), "```"]
    return "\n".join(lines)


__all__ = ["run", "format_value"]
