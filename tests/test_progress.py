"""Progress of every pass (training, validation, test, the epoch test, sdbert-predict) and where a run's
time went (sdbert.progress, sdbert.timing)."""

from __future__ import annotations

import io
import json
import logging
import re
from types import SimpleNamespace

import pytest
import torch

from sdbert import progress, timing
from sdbert.progress import PassProgress, PlainPass, PlainProgress, console_pass, pass_progress
from sdbert.timing import STAGES, StageTimer


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(progress.time, "monotonic", c)
    monkeypatch.setattr(timing.time, "perf_counter", c)
    return c


def _batch(n: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.zeros(n, 3, dtype=torch.long), "labels": torch.zeros(n, dtype=torch.long)}


def test_plain_pass_says_start_progress_at_most_every_interval_and_end(clock: Clock) -> None:
    lines: list[str] = []
    closed: list[float] = []
    report = PlainPass("test", 10, lines.append, every_n_seconds=30.0, n_examples=40, on_close=closed.append)
    assert lines == ["test · 10 batches · 40 examples · started"]
    for _ in range(3):  # 3 batches of 4 in 20 s: no line yet
        clock.now += 20 / 3
        report.advance(4)
    assert len(lines) == 1
    clock.now += 10.0  # 30 s after the start line
    report.advance(4)
    assert lines[1] == "test · batch 4/10 · 0.5 samples/s · ETA 0m45s"  # 16 examples / 30 s; 7.5 s a batch
    clock.now += 29.0
    report.advance(4)
    assert len(lines) == 2  # 29 s after the last line
    clock.now += 31.0
    report.close("test/acc 75.81")
    report.close("again")
    assert lines[2] == "test · done in 1m30s · 5 batches · test/acc 75.81" and len(lines) == 3
    assert closed == [90.0]


def test_a_pass_of_unknown_length_has_no_eta(clock: Clock) -> None:
    lines: list[str] = []
    report = PlainPass("predict", float("inf"), lines.append, every_n_seconds=1.0)
    clock.now += 2.0
    report.advance(8)
    assert lines == ["predict · ? batches · started", "predict · batch 1/? · 4.0 samples/s"]


def test_track_advances_after_each_batch() -> None:
    seen: list[int] = []

    class Counting(PassProgress):
        def advance(self, samples: int) -> None:
            seen.append(samples)

    batches = [_batch(4), _batch(2)]
    out = []
    for batch in Counting().track(batches):
        out.append(batch)
        assert len(seen) == len(out) - 1  # counted once the batch is done with
    assert seen == [4, 2] and out == batches


def test_training_eta_leaves_out_evaluation_passes(clock: Clock) -> None:
    bar = PlainProgress(every_n_seconds=1.0)
    trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=20, current_epoch=0, max_epochs=1,
                              callback_metrics={}, progress_bar_metrics={}, loggers=[])
    bar.on_train_start(trainer, None)
    clock.now += 10.0  # 10 steps of training: 1 s a step
    trainer.global_step = 10
    with bar.begin_pass("epoch 1/1 validation", 5):
        clock.now += 80.0
    assert bar.line(trainer, None, clock.now).endswith("ETA 0m10s")  # 10 steps left, not 90 s / 10 each


def test_pass_progress_follows_the_trainers_bar() -> None:
    silent = pass_progress(SimpleNamespace(progress_bar_callback=None), "epoch 1/1 test", 3)
    assert type(silent) is PassProgress
    bar = PlainProgress(every_n_seconds=30.0)
    trainer = SimpleNamespace(progress_bar_callback=bar)
    assert isinstance(pass_progress(trainer, "epoch 1/1 test", 3), PlainPass)
    bar.disable()  # ranks other than 0
    assert type(pass_progress(trainer, "epoch 1/1 test", 3)) is PassProgress


def test_console_pass_writes_plain_lines_when_not_a_terminal(clock: Clock) -> None:
    out = io.StringIO()
    with console_pass("sdbert-predict: predicting", 2, every_n_seconds=5.0, stream=out, n_examples=3) as report:
        clock.now += 6.0
        report.advance(2)
        report.advance(1)
    assert out.getvalue().splitlines() == [
        "sdbert-predict: predicting · 2 batches · 3 examples · started",
        "sdbert-predict: predicting · batch 1/2 · 0.3 samples/s · ETA 0m06s",
        "sdbert-predict: predicting · done in 0m06s · 2 batches",
    ]


def test_stage_timer_splits_the_wall_time(clock: Clock) -> None:
    start = clock.now
    timer = StageTimer(start)

    def at(hook: str, seconds: float) -> None:
        clock.now += seconds
        getattr(timer, hook)(None, None)

    at("on_fit_start", 5.0)  # setup 5
    at("on_validation_start", 1.0)  # the sanity check: 2
    at("on_validation_end", 2.0)
    at("on_train_epoch_start", 1.0)
    at("on_train_batch_start", 0.0)
    at("on_validation_start", 10.0)  # training 10, then a mid-epoch validation of 3
    at("on_validation_end", 3.0)
    at("on_train_batch_start", 1.0)  # training again after it: 4
    clock.now += 2.0
    with timer.stage("test"):  # a pass run by a callback: 6, training paused
        clock.now += 6.0
    clock.now += 2.0
    at("on_save_checkpoint", 0.0)  # the checkpoint: 1.5
    at("on_train_epoch_start", 1.5)
    at("on_train_epoch_end", 0.0)
    at("on_test_start", 0.5)
    at("on_test_end", 4.0)  # test 4 + 6
    split = timer.split(clock.now - start + 0.5)
    assert list(split) == list(STAGES)
    assert split == {"setup": 5.0, "training": 14.0, "validation": 5.0, "test": 10.0, "checkpoints": 1.5,
                     "other": 4.0}  # 1 + 1 + 1 + 0.5 between the stages, 0.5 after the test
    assert StageTimer.of(SimpleNamespace(callbacks=[object(), timer])) is timer


def test_a_run_reports_each_pass_and_splits_its_time(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.conftest import train_run

    caplog.set_level(logging.INFO, logger="sdbert")
    run = train_run(tmp_path / "run", ["callbacks=with_epoch_test", "dataset.eval_batch_size=4"])
    lines = [r.getMessage() for r in caplog.records if r.name == "sdbert"]
    for name, outcome in (("epoch 1/1 validation", "val/acc"), ("epoch 1/1 test", "test/acc"), ("test", "test/acc")):
        assert f"{name} · 4 batches · 16 examples · started" in lines, (name, lines)
        assert any(line.startswith(f"{name} · done in ") and f"· 4 batches · {outcome} " in line for line in lines)
    summary = json.loads((run / "metrics.json").read_text())
    split = summary["wall_time_split_s"]
    # every stage is there; how long the tiny evaluation passes take (they may round to 0.0 s) is the
    # fake-clock test's to check exactly
    assert set(split) == set(STAGES) and all(v >= 0 for v in split.values()) and split["training"] > 0
    assert abs(sum(split.values()) - summary["wall_time_s"]) <= 0.4  # each rounded to 0.1 s


#: the widest a run's bar metrics get: a 4-digit throughput, after the first validation
BAR_METRICS = {"train/loss": torch.tensor(0.61234), "perf/samples_per_s": 1234.56, "val/acc": 87.1234}


def test_the_rich_bar_fits_80_columns_with_every_metric_whole() -> None:
    from lightning.pytorch.callbacks.progress.rich_progress import MetricsTextColumn
    from rich.console import Console
    from rich.progress import Progress

    bar = progress.RichBar()
    trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), sanity_checking=False, training=True,
                              progress_bar_callback=bar)
    console = Console(width=80, file=io.StringIO(), force_terminal=True, color_system=None)
    # the display Lightning's bar builds: the bar's columns, then Lightning's metrics column with the bar's theme
    metrics = MetricsTextColumn(trainer, bar.theme.metrics, bar.theme.metrics_text_delimiter, bar.theme.metrics_format)
    display = Progress(*bar.configure_columns(trainer), metrics, console=console)
    bar.train_progress_bar_id = display.add_task("Epoch 10/19", total=12345, completed=1234)
    metrics.update(bar.get_metrics(SimpleNamespace(loggers=[], progress_bar_metrics=BAR_METRICS), None))
    display.add_task("Validation", total=1563, completed=120)
    console.print(display.make_tasks_table(display.tasks))
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].startswith("Epoch 10/19 ━") and "1234/12345" in lines[0]
    shown = [m[1] if (m := re.search(r"(\S+: \S+)$", line)) else line for line in lines[:3]]
    assert shown == ["loss: 0.612", "samples/s: 1234.6", "val/acc: 87.12"]  # whole, one a line
    assert len(lines) == 4 and lines[3].startswith("Validation")


def test_the_tqdm_bar_fits_80_columns_with_every_metric_whole() -> None:
    from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

    out = io.StringIO()
    bar = Tqdm(total=12345, desc="Epoch 10", file=out, ncols=80, bar_format=progress.TqdmBar.BAR_FORMAT, mininterval=0)
    bar.update(1234)
    bar.set_postfix(progress.TqdmBar().get_metrics(SimpleNamespace(loggers=[], progress_bar_metrics=BAR_METRICS), None))
    bar.close()
    line = out.getvalue().split("\r")[-1].rstrip("\n")
    assert len(line) <= 80 and line.startswith("Epoch 10:") and "1234/12345" in line
    assert line.endswith(", loss=0.612, samples/s=1234.6, val/acc=87.12]"), line
