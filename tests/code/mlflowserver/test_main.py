"""Unit tests of ``python -m mlflowserver``'s command line, in process (no server started)."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


from mlflowserver import MLFLOW_HTTP_DEFAULTS


def test_cli_defaults_and_refusals(tmp_path, capsys, monkeypatch):
    from mlflowserver import __main__ as cli

    for key in MLFLOW_HTTP_DEFAULTS:  # main() setdefault()s these: keep this process's env unchanged
        monkeypatch.setenv(key, os.environ.get(key, MLFLOW_HTTP_DEFAULTS[key]))

    args, _ = cli.parser.parse_known_args(["--model_dir=/mnt/models"])
    assert (args.http_host, args.enable_grpc, args.workers, args.model_name) == (
        "127.0.0.1",
        False,
        1,
        "model",
    )
    assert cli.parser.parse_known_args(["--model_dir=x", "--http_host=0.0.0.0"])[0].http_host == "0.0.0.0"

    assert cli.main(["--model_dir=x", "--workers=2"]) == 2
    assert "--workers must be 1" in capsys.readouterr().err
    assert cli.main(["--model_dir", str(tmp_path / "missing"), "--configure_logging=false"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlflowserver: cannot load model ") and "\n" not in err
