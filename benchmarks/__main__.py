"""``python -m benchmarks [--short] [--only SECTION,...] [--write-docs]`` (the sections: ``--help``).

Prints a table — figure | value | limit | ratio | PASS/MISS — and exits 1 if anything
failed to run (an error, a failed request, a figure that could not be measured); a MISS
is a result, not a failure. ``--short`` (CI) takes about a minute and a half on an idle
2-core machine: 1 k rows, second-long windows, no training run and no trade-off curve. The full form
(``make bench``) runs the default ``train``, 1 M rows in process, 1 M and 10 M rows per
batch command and minute-long server windows: its length is mostly the model's own
predict and fit cost (``--inprocess-rows``/``--batch-rows`` shorten it).
"""

from __future__ import annotations

import argparse
import os
import sys

# Import nothing heavy before OMP_NUM_THREADS is set: OpenMP reads it once, at load time.
from benchmarks.options import SECTIONS, Options


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(float(part)) for part in text.split(",") if part)


def parse(argv=None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--short",
        action="store_true",
        help="the CI form: tiny durations, 1 k rows, no Spark cluster, no training, no trade-off curve",
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated sections among {','.join(SECTIONS)} (default: all; --short leaves out "
        f"{', '.join(s for s in SECTIONS if s not in Options.short_form().only)})",
    )
    parser.add_argument(
        "--write-docs", action="store_true", help="replace the generated part of docs/performance.md"
    )
    parser.add_argument("--json", metavar="PATH", help="also write every figure and error as JSON")
    parser.add_argument("--workers", type=int_list, help="`mlflow models serve --workers` values, e.g. 1,2")
    parser.add_argument(
        "--threads", type=int, help="OMP_NUM_THREADS of the harness, servers and batch commands (1)"
    )
    parser.add_argument("--clients", type=int, help="concurrent clients of the throughput figure (8)")
    parser.add_argument("--duration", type=float, help="seconds of each throughput window")
    parser.add_argument("--load-clients", type=int, help="concurrent clients of the load test (16)")
    parser.add_argument("--load-duration", type=float, help="seconds of the load test")
    parser.add_argument(
        "--limits-duration", type=float, help="seconds of the limits section's worst allowed mix (60)"
    )
    parser.add_argument(
        "--inprocess-rows", type=int_list, help="in-process batch sizes, e.g. 1000,100000,1000000"
    )
    parser.add_argument("--target-rows", type=int, help="the in-process size held to 1.5x the bare regressor")
    parser.add_argument("--batch-rows", type=int_list, help="batch file sizes, e.g. 1000000,10000000")
    parser.add_argument("--cluster-rows", type=int, help="rows of the cluster section's large job (1000000)")
    parser.add_argument(
        "--rss-cap-gib", type=float, help="kill a batch command past this RSS (6; the figure then MISSes)"
    )
    parser.add_argument(
        "--train-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a `-P` parameter for the training run (repeatable; the figure is then not the default)",
    )
    parser.add_argument("--data", help="the raw housing CSV (default: data/raw/housing.csv or ../shared)")
    parser.add_argument(
        "--model-uri", help="benchmark this artifact instead of fitting the default configuration"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile each server's request handler in-process (cProfile) into the report",
    )
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="measure nothing: render docs/performance.md (with --write-docs) from a --json file",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    args = parser.parse_args(argv)

    overrides = {
        "write_docs": args.write_docs,
        "json": args.json,
        "data": args.data,
        "model_uri": args.model_uri,
        "keep": args.keep,
        "profile": args.profile,
        "train_params": tuple(args.train_param),
        "argv": tuple(sys.argv[1:] if argv is None else argv),
    }
    for name in (
        "workers",
        "threads",
        "clients",
        "duration",
        "load_clients",
        "load_duration",
        "limits_duration",
        "inprocess_rows",
        "target_rows",
        "batch_rows",
        "cluster_rows",
        "rss_cap_gib",
    ):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.only:
        only = tuple(part.strip() for part in args.only.split(",") if part.strip())
        unknown = set(only) - set(SECTIONS)
        if unknown:
            parser.error(f"unknown sections {sorted(unknown)}; choose among {','.join(SECTIONS)}")
        overrides["only"] = only
    options = Options.short_form(**overrides) if args.short else Options(**overrides)
    options.from_json = args.from_json
    if options.target_rows not in options.inprocess_rows:
        options.inprocess_rows = tuple(sorted({*options.inprocess_rows, options.target_rows}))
    return options


def main(argv=None) -> int:
    options = parse(argv)
    os.environ["OMP_NUM_THREADS"] = str(options.threads)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if options.from_json:
        import json

        from benchmarks.report import write_docs
        from benchmarks.run import markdown, runs_markdown

        summary = json.loads(open(options.from_json).read())
        print(markdown(summary))
        if options.write_docs:
            print(f"wrote {write_docs(summary, runs_markdown)}")
        return 0
    from benchmarks.run import run

    summary = run(options)
    return 1 if summary["errors"] or summary["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
