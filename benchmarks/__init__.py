"""Performance harness: every figure next to its limit, measured in one run.

``python -m benchmarks [--short] [--only SECTIONS] [--write-docs]``; see docs/performance.md
for the method and the latest full-form results, and ``python -m benchmarks --help``.
"""
