"""The Compose stack's measured steps in docs/environments/docker.md, from the saved output of
``make compose-test COMPOSE_FIGURES=docs/figures/compose.json`` (tests/compose/conftest.py)."""

from __future__ import annotations

from benchmarks.report import format_value
from docsgen.pages import source

NAME = "compose"


def blocks() -> dict[str, str]:
    saved = source(NAME)
    load = saved["load_average"]
    rows = [
        f"Measured by `make compose-test` ({saved['date']}, revision {saved['revision']}; load average"
        f" {load['start']:.1f} at its start, {load['end']:.1f} at its end, on 2 cores):",
        "",
        "| step | wall time |",
        "| --- | --- |",
    ]
    rows += [f"| {name} | {format_value(f['value'], f['unit'])} |" for name, f in saved["figures"].items()]
    return {"compose-phases": "\n".join(rows)}
