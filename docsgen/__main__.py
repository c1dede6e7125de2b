"""``python -m docsgen [--check]`` (``make docs``): rewrite every page's generated text from
the saved outputs in docs/figures/ (or, with ``--check``, list the pages that differ)."""

from __future__ import annotations

import argparse
import sys

from docsgen.pages import stale
from model.data import PROJECT_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docsgen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page differs")
    check = parser.parse_args(argv).check
    changed = stale()
    for page, text in changed.items():
        if not check:
            page.write_text(text)
        print(f"{'differs' if check else 'wrote'} {page.relative_to(PROJECT_ROOT)}")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
