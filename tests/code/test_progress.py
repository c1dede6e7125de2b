"""model.progress: a tqdm bar per stage on a terminal (a real pseudo-terminal here), lines off one;
redrawn while a step runs; and train()'s stages agree with the folds its hooks report."""

from __future__ import annotations

import io
import re
import time

import pytest

from model.progress import Stage, StagedProgress
from model.train import TrainingConfig, cross_validated_rmse, fit_model, training_stages
from testbed.terminal import PseudoTerminal

STAGES = [Stage("warm-up", 0, "fold"), Stage("folds", 2, "fold"), Stage("final fit", 1, "fit")]


def wait_until(condition, timeout: float = 60.0) -> bool:
    """Poll ``condition`` (a busy machine may delay the ticker thread: never a timed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_off_a_terminal_each_stage_is_a_line_when_it_starts_and_after_each_step():
    stream = io.StringIO()
    with StagedProgress("train", STAGES, stream=stream) as progress:
        for _ in range(3):
            progress.advance()
    lines = stream.getvalue().splitlines()
    assert [re.sub(r", \d\d:\d\d elapsed.*", "", line) for line in lines] == [
        "train [1/2] folds: 0/2 folds done",  # the stage without steps is left out of the numbering
        "train [1/2] folds: 1/2 folds done",
        "train [1/2] folds: 2/2 folds done",
        "train [2/2] final fit: 0/1 fits done",
        "train [2/2] final fit: 1/1 fits done",
    ]
    assert "\r" not in stream.getvalue()
    assert lines[0].endswith("? left (?fold/s)")  # no estimate before a step is done…
    assert re.search(
        r", \d\d:\d\d left \( *[\d.]+(s/fold|fold/s)\)$", lines[1]
    )  # …then one from the steps done


def test_off_a_terminal_lines_keep_coming_while_a_step_runs():
    stream = io.StringIO()
    with StagedProgress("train", STAGES, stream=stream, interval=0.01) as progress:
        assert wait_until(lambda: stream.getvalue().count("folds: 0/2 folds done") >= 3)
        progress.advance()
    assert "folds: 1/2 folds done" in stream.getvalue()


def test_a_step_beyond_the_plan_is_an_error():
    with StagedProgress("train", [Stage("folds", 1, "fold")], stream=io.StringIO()) as progress:
        progress.advance()
        with pytest.raises(RuntimeError, match="a step beyond the 1 planned stages"):
            progress.advance()


def test_on_a_terminal_each_stage_is_a_bar_redrawn_in_place_even_while_a_step_runs():
    terminal = PseudoTerminal()
    try:
        with StagedProgress("train", STAGES, stream=terminal.stream, interval=0.01) as progress:
            # tqdm redraws only on an update: these frames come from the progress's own refresh.
            assert wait_until(lambda: terminal.output.count("| 0/2 [") >= 3)
            progress.advance()
            progress.advance()
            progress.advance()
    finally:
        output = terminal.close()
    frames = [frame for frame in re.split(r"[\r\n]+", output) if frame.strip()]
    assert frames[0].startswith("train [1/2] folds:   0%|") and frames[0].rstrip().endswith(
        "[00:00<?, ?fold/s]"
    )
    assert any(re.match(r"train \[1/2\] folds:  50%\|█+[▏▎▍▌▋▊▉]? +\| 1/2 \[", frame) for frame in frames)
    assert re.match(r"train \[2/2\] final fit: 100%\|█+\| 1/1 \[", frames[-1])
    # Finished stages stay on screen, one line each: redraws of a stage start with a carriage return.
    assert output.count("\n") == 2


def test_train_stages_are_the_steps_its_hooks_report(split):
    """The plan train() shows is the number of folds cross-validation and calibration report."""
    config = TrainingConfig(n_estimators=5, n_models=1, cv_folds=3)
    steps = []
    cross_validated_rmse(split[0], config, on_fold=lambda: steps.append("cross-validation"))
    fit_model(split[0], config, on_fold=lambda: steps.append("calibration"))
    stages = training_stages(config.cv_folds)
    hooked = [stage for stage in stages if stage.unit == "fold"]
    assert len(steps) == sum(stage.steps for stage in hooked)
    assert steps.count("cross-validation") == stages[0].steps == 3
    # train() advances once more after fit_model (the final fit) and after registering.
    assert [(stage.name, stage.steps) for stage in stages if stage.unit != "fold"] == [
        ("final fit", 1),
        ("evaluation and registration", 1),
    ]
    assert training_stages(1)[0].steps == training_stages(0)[0].steps == 0


def test_batch_rows_off_a_terminal_are_lines_once_the_job_has_run_an_interval(capsys, monkeypatch):
    """model.batch.local's bar: a short job's log holds nothing else; a longer one gets lines."""
    from model.batch import local

    bar = local._progress_bar(1000, None)
    bar.update(1000)
    bar.close()
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("model.progress.LOG_INTERVAL", 0.01)
    bar = local._progress_bar(1000, None)
    for _ in range(4):
        time.sleep(0.02)
        bar.update(250)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[-1].startswith("batch_predict: 100%|") and "1.00k/1.00k" in lines[-1]
    assert not any("\r" in line for line in lines)
