"""The tables of docs/reliability.md: the bad-input matrix's, generated from its cases
(``testbed.bad_input.cases``), and the V2 runtime's hostile-input table, from the saved output of
``tests/integration/test_mlflowserver_hostile.py`` (``docs/figures/hostile-input.json``, written by
``make docs-hostile``): :func:`blocks` is every generated block by name."""

from __future__ import annotations

from testbed.bad_input.cases import (
    CLI_RAW,
    DATA_CASES,
    OTHER_SERVE_FORMS,
    SERVE_FORMS,
    SERVE_RAW,
    TARGETS,
    V2_RAW,
    DataCase,
    RawCase,
    sent,
    serve_cases,
)
from testbed.bad_input.expectations import Accepted, Echo, Known, Outcome, ServerError, StackTrace, Vague

HEADINGS = {
    "split": "split",
    "records": "records",
    "inputs": "inputs",
    "csv": "CSV",
    "v2": "V2",
    "cli": "CLI",
}
DEVIATIONS = {Echo: "echoes input", Vague: "vague message", StackTrace: "stack trace"}


class Notes:
    """Known deviations' reasons, numbered in order of first use."""

    def __init__(self):
        self.reasons: list[str] = []

    def ref(self, known: Known) -> str:
        if known.reason not in self.reasons:
            self.reasons.append(known.reason)
        return f"[{self.reasons.index(known.reason) + 1}]"

    def render(self) -> str:
        return "\n".join(f"[{number}] {reason}  " for number, reason in enumerate(self.reasons, 1)).rstrip()


def _status(outcome_status: int, target: str) -> str:
    if target == "cli":
        return "exit 0" if outcome_status == 200 else "exit ≠ 0"
    return str(outcome_status)


def _cell(outcome: Outcome, known: Known | None, target: str, notes: Notes) -> str:
    status = _status(outcome.status, target)
    if known is None:
        return f"{status} ✓"
    if known.kind is Accepted:
        return f"**{_status(200, target)}** {notes.ref(known)}"
    if known.kind is ServerError:
        return f"**5xx** {notes.ref(known)}"
    return f"{status}, {DEVIATIONS[known.kind]} {notes.ref(known)}"


def _data_cell(case: DataCase, target: str, notes: Notes) -> str:
    outcome = case.outcome(target)
    if outcome is None:
        return "n/a"
    if not sent(case, target):
        return "·"
    return _cell(outcome, case.known.get(target), target, notes)


def data_table(notes: Notes) -> str:
    """One row per case; a family's cases (one per column) that get the same cells share a row."""
    rows: list[tuple[list[DataCase], list[str]]] = []
    for case in DATA_CASES:
        cells = [_data_cell(case, target, Notes()) for target in TARGETS]  # compared before numbering
        same = [row for row in rows if case.family and row[0][0].family == case.family and row[1] == cells]
        if same:
            same[0][0].append(case)
        else:
            rows.append(([case], cells))
    lines = ["| case | " + " | ".join(HEADINGS[t] for t in TARGETS) + " |", "|---" * (len(TARGETS) + 1) + "|"]
    for cases, _ in rows:
        if len(cases) == 1:
            label = f"`{cases[0].id}`"
        else:
            columns = ", ".join(case.id[len(case.family) :] for case in cases)
            label = f"`{cases[0].family}` {columns} ({len(cases)} cases)"
        cells = [_data_cell(cases[0], target, notes) for target in TARGETS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(raw_cases: tuple[RawCase, ...], target: str, notes: Notes) -> str:
    lines = ["| case | outcome | message must mention |", "|---|---|---|"]
    for case in raw_cases:
        mentions = ", ".join(case.outcome.mentions) or "—"
        if case.why:
            mentions += f" ({case.why})"
        lines.append(f"| `{case.id}` | {_cell(case.outcome, case.known, target, notes)} | {mentions} |")
    return "\n".join(lines)


def targets_table() -> str:
    """Per target: what is sent, how many tests, how many of them are MLflow's known deviations."""
    forms = {form: sum(sent(case, form) for case in DATA_CASES) for form in (*SERVE_FORMS, "v2", "cli")}
    serve_known = sum(case.known.get(form) is not None for form, case in serve_cases())
    serve_known += sum(case.known is not None for case in SERVE_RAW)
    v2_known = sum(case.known.get("v2") is not None for case in DATA_CASES if sent(case, "v2"))
    v2_known += sum(case.known is not None for case in V2_RAW)
    cli_known = sum(case.known.get("cli") is not None for case in DATA_CASES if sent(case, "cli"))
    cli_known += sum(case.known is not None for case in CLI_RAW)
    others = ", ".join(
        f"{forms[form]} as {HEADINGS[form] if form == 'csv' else f'`{form}`'}" for form in OTHER_SERVE_FORMS
    )
    rows = [
        (
            "`mlflow models serve`",
            f"every data case ({forms['split']}) as JSON `dataframe_split`; {others} (`OTHER_SERVE_FORMS`: the cases "
            f"MLflow treats differently in that form, plus a refusal and an acceptance); {len(SERVE_RAW)} format "
            "cases; 100,000 rows (`dataframe_split`)",
            len(serve_cases()) + len(SERVE_RAW) + 1,
            serve_known,
        ),
        (
            "KServe V2 runtime (`python -m mlflowserver`)",
            f"every data case V2 can express ({forms['v2']}) as a V2 `InferRequest`, {len(V2_RAW)} format cases, "
            "100,000 rows",
            forms["v2"] + len(V2_RAW) + 1,
            v2_known,
        ),
        (
            "`mlflow models predict`",
            f"{forms['cli']} data cases as a `dataframe_split` JSON file, {len(CLI_RAW)} format cases, 100,000 rows "
            "as CSV; each a fresh process, shared out over the test workers",
            forms["cli"] + len(CLI_RAW) + 1,
            cli_known,
        ),
    ]
    lines = [
        "| target | how the cases are sent | cases | of which MLflow's known deviations |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {target} | {how} | {count} | {known} |" for target, how, count, known in rows]
    total, known = sum(row[2] for row in rows), sum(row[3] for row in rows)
    lines += ["", f"A green run: {total - known} passed, {known} xfailed (strict)."]
    return "\n".join(lines)


def blocks() -> dict[str, str]:
    """Every generated block of docs/reliability.md by name."""
    notes = Notes()
    return {
        "targets": targets_table(),
        "data-cases": data_table(notes),
        "serve-format-cases": format_table(SERVE_RAW, "split", notes),
        "v2-format-cases": format_table(V2_RAW, "v2", notes),
        "cli-format-cases": format_table(CLI_RAW, "cli", notes),
        "notes": notes.render(),
        "hostile-input": hostile_input_table(),
    }


def hostile_input_table() -> str:
    """One row per hostile-input case as the test last saved it: status, message, time, RSS."""
    from docsgen.pages import source

    saved = source("hostile-input")
    limits = ", ".join(f"`--{name}={value}`" for name, value in saved["limits"].items())
    lines = [
        f"Server limits in this run: {limits}.",
        "",
        "| input | status | message | time | server RSS after |",
        "|---|---|---|---|---|",
    ]
    for case in saved["cases"]:
        message = case["message"].replace("|", "\\|")
        lines.append(
            f"| {case['what']} | {case['status']} | `{message}` | {case['seconds']:.2f} s | {case['rss_mib']} MiB |"
        )
    return "\n".join(lines)
