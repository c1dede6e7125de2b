"""Entry point `monitor`: judge a window of served rows against the version that served them."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry: off

from model.monitoring.monitor import MonitorJob  # noqa: E402
from model.monitoring.monitor import run as monitor  # noqa: E402
from model.monitoring.window import MonitorError  # noqa: E402
from projects.cli import FAILURES, run  # noqa: E402


def main(job: MonitorJob) -> str:
    outcome, failed = monitor(job)
    if failed:
        print(outcome.text)
        raise SystemExit(f"monitor: verdict {outcome.assessment.verdict} (fail_on={job.fail_on})")
    return outcome.text


if __name__ == "__main__":
    run(main, prefix="monitor", failures=(*FAILURES, MonitorError))
