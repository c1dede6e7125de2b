"""The docs that describe the code must match the code: README's layout table and
docs/codebase/overview.md's module map list exactly the modules that exist; and every generated
figure and table of docs/ and README is what its saved output, or the code that declares a
setting, gives (docsgen)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docsgen import pages
from model.data import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
OVERVIEW = PROJECT_ROOT / "docs" / "codebase" / "overview.md"


def python_packages() -> set[str]:
    """The project's top-level Python packages, as ``name/``."""
    return {f"{init.parent.name}/" for init in PROJECT_ROOT.glob("*/__init__.py")}


def modules(package: Path) -> set[str]:
    """Every module and subpackage below ``package``, relative to it (``data.py``, ``batch/``, ``batch/job.py``)."""
    found = set()
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        if path.name != "__init__.py":
            found.add(relative.as_posix())
        elif relative.parent != Path("."):
            found.add(f"{relative.parent.as_posix()}/")
    return found


def layout_table() -> dict[str, str]:
    """README's Layout table: each path of the first column → the row's description."""
    section = README.read_text().split("## Layout", 1)[1]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            paths, what = (cell.strip() for cell in line.strip("|").split("|", 1))
            for path in re.findall(r"`([^`]+)`", paths):
                rows[path] = what
    return rows


def test_readme_layout_lists_every_package_and_only_paths_that_exist():
    rows = layout_table()
    assert python_packages() <= set(rows), f"missing from README's Layout: {python_packages() - set(rows)}"
    assert [path for path in rows if not (PROJECT_ROOT / path).exists()] == []


def test_readme_layout_names_every_module_of_the_model_package():
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", layout_table()["model/"]))
    top_level = {
        module for module in modules(PROJECT_ROOT / "model") if module.count("/") <= int(module.endswith("/"))
    }
    assert named == top_level


def module_map() -> set[str]:
    """The paths overview.md's module map (its first code block) lists, nested by indentation."""
    block = OVERVIEW.read_text().split("```\n", 2)[1]
    listed, parents = set(), []
    for line in block.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.endswith(("/", ".py")):
            continue  # a description's continuation line
        depth = (len(line) - len(line.lstrip())) // 2
        parents = parents[:depth]
        path = "".join(parents) + name
        listed.add(path)
        if name.endswith("/"):
            parents.append(name)
    return listed


def test_overview_module_map_lists_every_module_and_only_modules_that_exist():
    listed = module_map()
    assert python_packages() <= listed, f"missing from the module map: {python_packages() - listed}"
    model = {f"model/{module}" for module in modules(PROJECT_ROOT / "model")}
    assert model <= listed, f"missing from the module map: {model - listed}"
    assert [path for path in listed if not (PROJECT_ROOT / path).exists()] == []


def test_every_generated_part_of_every_page_is_what_its_source_gives():
    stale = [str(page.relative_to(PROJECT_ROOT)) for page in pages.stale()]
    assert stale == [], (
        f"{stale} differ from their sources in docs/figures/ (or the bad-input cases): run `make docs`"
    )


def test_a_figure_edited_by_hand_is_a_difference():
    page = PROJECT_ROOT / "docs" / "model-quality.md"
    text = page.read_text()
    first = pages.FIGURE.search(text)
    assert first, "docs/model-quality.md shows its figures through markers"
    edited = text[: first.start("text")] + "1" + text[first.start("text") :]
    assert pages.rendered(edited) == text != edited


def test_a_figure_marker_left_open_is_refused_rather_than_swallowing_the_text_after_it():
    closed = "<!-- figure model-quality:rmse -->37,132 USD<!-- /figure -->"
    with pytest.raises(ValueError, match="without its own"):
        pages.rendered(f"<!-- figure model-quality:mae -->23,675 USD and prose, then {closed}")


@pytest.mark.parametrize("kind", ["ratio", "status", "settings"])
def test_a_ratio_status_or_setting_edited_by_hand_is_a_difference(kind):
    for page in pages.pages():
        text = page.read_text()
        for shown in pages.FIGURE.finditer(text):
            if kind in (shown["field"], shown["source"]):
                edited = text[: shown.start("text")] + "1" + text[shown.start("text") :]
                assert pages.rendered(edited) == text != edited
                return
    pytest.fail(f"no page shows a figure of kind {kind!r}")


def test_a_setting_a_page_shows_follows_the_code_that_declares_it(monkeypatch):
    from docsgen import settings

    page = PROJECT_ROOT / "docs" / "mlflow" / "model-registry.md"
    text = page.read_text()
    assert "<!-- figure settings:gates.coverage_band -->" in text
    monkeypatch.setattr(settings, "COVERAGE_TOLERANCE", settings.COVERAGE_TOLERANCE * 2)
    assert pages.rendered(text) != text


def test_a_benchmark_run_replaces_the_saved_runs_of_its_sections_and_keeps_the_others(tmp_path, monkeypatch):
    from benchmarks import report

    monkeypatch.setattr(report, "SUMMARY_PATH", tmp_path / "benchmarks.json")
    page = tmp_path / "performance.md"
    page.write_text("intro\n")

    def run(sections: list[str], date: str) -> dict:
        return {"sections": sections, "date": date}

    def render(saved: dict) -> str:
        return "; ".join(f"{'+'.join(r['sections'])} {r['date']}" for r in saved["runs"])

    report.write_docs(run(["batch", "cluster"], "d1"), render, page)
    report.write_docs(run(["engine"], "d2"), render, page)
    report.write_docs(run(["cluster"], "d3"), render, page)
    assert [(r["sections"], r["date"]) for r in report.saved_runs()] == [
        (["engine"], "d2"),
        (["cluster"], "d3"),
    ]
    assert "engine d2; cluster d3" in page.read_text()
