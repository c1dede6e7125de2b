"""Watching a served version: what it learned from, what it is asked, and how right it still is.

* ``reference``: per-column distributions of the training blocks and of the model's
  predictions, logged with every registered version (``log_reference``), from which drift is
  tested without the raw data or DVC.
* ``window``: the rows to judge, from the V2 runtime's capture files (``mlflowserver.capture``)
  or a ``batch_predict`` output with its input, cut to a time range, joined to true values.
* ``statistics``: the drift tests (Evidently), live RMSE and interval coverage, and the verdict
  (``ok`` / ``drift`` / ``degraded``) under the default thresholds.
* ``monitor``: one monitoring run: compute, log it linked to the model version, tag the version.

docs/workflows/monitoring.md explains the statistics, the thresholds and the verdicts.
"""
