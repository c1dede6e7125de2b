"""The generated parts of docs/ and README, and the saved outputs they come from.

Every measured figure a page shows comes from a file in ``docs/figures/``, the saved output
of the run that measured it; ``make docs`` (``python -m docsgen``) rewrites each generated
part from its source without measuring anything, and ``tests/code/test_docs.py`` fails when
a committed page differs from what its sources give. Three kinds of generated text:

* a figure anywhere in a page, ``<!-- figure SOURCE:KEY -->37,132 USD<!-- /figure -->``:
  figure KEY of ``docs/figures/SOURCE.json``, formatted for its unit; a benchmark figure's
  ratio to its reference or its PASS/MISS with ``SOURCE:KEY ratio`` or ``SOURCE:KEY status``;
  a setting the code declares, which a page restates, with ``settings:KEY``
  (:mod:`docsgen.settings`: not measured, but declared once);
* a block, ``<!-- generated: NAME -->`` … ``<!-- end generated: NAME -->``: the table
  :func:`blocks` makes under NAME (the bad-input matrix's, from its cases; the model's
  interval coverage, from ``model-quality.json``; the monitoring thresholds' behaviour, from
  ``monitoring-study.json``);
* the benchmark run's part of docs/performance.md, between ``benchmarks.report``'s BEGIN
  and END markers: rendered from ``benchmarks.json``.

What saves each source: ``make bench`` (``python -m benchmarks --write-docs``) saves
``benchmarks.json``; ``python -m docsgen.quality`` (``make docs-measure``) fits the default
model and saves ``model-quality.json``; ``python -m model.monitoring.study --write-docs``
saves ``monitoring-study.json``.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from benchmarks.report import GENERATED, format_value, generated_block
from model.data import PROJECT_ROOT

FIGURES_DIR = PROJECT_ROOT / "docs" / "figures"
BLOCK = re.compile(r"(<!-- generated: (\S+) -->\n).*?(<!-- end generated: \2 -->)", re.S)
FIGURE = re.compile(
    r"(?P<open><!-- figure (?P<source>[\w-]+):(?P<key>[\w.\-]+)(?: (?P<field>ratio|status))? -->)"
    r"(?P<text>(?:(?!<!-- figure ).)*?)(?P<close><!-- /figure -->)",
    re.S,
)
FIGURE_OPENING = "<!-- figure "


def pages() -> list[Path]:
    """Every page that may hold generated text."""
    return [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]


@cache
def source(name: str) -> dict:
    """A saved output, as saved."""
    path = FIGURES_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path.relative_to(PROJECT_ROOT)}: no saved output of that name")
    return json.loads(path.read_text())


def figure(name: str, key: str, field: str = "value") -> str:
    """Figure ``key`` of the saved output ``name``, as pages show it: its value, or (``field``)
    a benchmark figure's ``ratio`` to its reference or ``status`` (PASS, MISS, info)."""
    if name == "settings":
        if field != "value":
            raise KeyError(f"figure settings:{key} {field}: a setting has no {field}")
        from docsgen import settings

        return settings.text(key)
    saved = source(name)
    # Benchmark runs (benchmarks.report.write_docs) or one run (--json) hold lists of
    # benchmarks.report.Figure; other outputs a mapping of key to figure.
    runs = saved.get("runs", [saved])
    if isinstance(runs[0]["figures"], list):
        figures = {item["key"]: item for run in runs for item in run["figures"]}
    else:
        figures = saved["figures"]
    if key not in figures:
        raise KeyError(f"figure {name}:{key}: docs/figures/{name}.json has no figure {key!r}")
    found = figures[key]
    if field == "value":
        return format_value(found["value"], found["unit"])
    if found.get(field) is None:
        raise KeyError(f"figure {name}:{key} {field}: docs/figures/{name}.json saved no {field} for it")
    return f"{found['ratio']:.2f}×" if field == "ratio" else found["status"]


@cache
def blocks() -> dict[str, str]:
    """Every generated block by name."""
    from docsgen import compose, quality, reliability
    from model.monitoring import study

    return {
        **compose.blocks(),
        **reliability.blocks(),
        **quality.blocks(),
        "monitoring-study": study.markdown(source("monitoring-study")),
    }


def rendered(text: str) -> str:
    """``text`` with every generated part replaced by what its source gives."""
    if text.count(FIGURE_OPENING) != len(FIGURE.findall(text)):
        # Else the marker's text would run on to the next one's end and swallow what is between.
        raise ValueError(f"a figure marker ({FIGURE_OPENING}…) without its own <!-- /figure -->")
    text = BLOCK.sub(lambda m: f"{m.group(1)}{_block(m.group(2))}\n{m.group(3)}", text)
    text = FIGURE.sub(
        lambda m: m["open"] + figure(m["source"], m["key"], m["field"] or "value") + m["close"], text
    )
    if GENERATED.search(text):
        from benchmarks.run import runs_markdown

        block = generated_block(runs_markdown(source("benchmarks")))
        text = GENERATED.sub(lambda _: block, text, count=1)
    return text


def _block(name: str) -> str:
    if name not in blocks():
        raise KeyError(f"generated block {name!r}: no such block (docsgen.pages.blocks)")
    return blocks()[name]


def stale() -> dict[Path, str]:
    """Each page whose generated text differs from its sources → its text as rendered."""
    changed = {}
    for page in pages():
        text = page.read_text()
        if (new := rendered(text)) != text:
            changed[page] = new
    return changed
