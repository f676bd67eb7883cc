"""Progress of a run, the same way for training and for every evaluation pass: on a terminal the bar, in
a log file (a cluster job) plain lines. Validation, test and predict in Lightning's loops report through
the progress bar's hooks; a pass outside them (the per-epoch test, sdbert-predict) through a
:class:`PassProgress` from :func:`pass_progress` or :func:`console_pass`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TextIO, runtime_checkable

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

from sdbert.errors import ConfigError

log = logging.getLogger("sdbert")


def duration(seconds: float) -> str:
    """``3m12s``, ``1h02m``."""
    s = max(round(seconds), 0)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def batch_size(batch: Any) -> int:
    """The number of examples in a batch (the first dimension of its labels), 0 when unknown."""
    if isinstance(batch, Mapping):
        batch = batch.get("labels", next(iter(batch.values()), None))
    if isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    shape = getattr(batch, "shape", None)
    return int(shape[0]) if shape else 0


def examples(loaders: Any) -> int | None:
    """Examples in a dataloader or a list of them (their datasets' lengths), None when one has no length."""
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    try:
        return sum(len(loader.dataset) for loader in loaders)
    except (AttributeError, TypeError):
        return None


def _count(n: float) -> str:
    return str(int(n)) if math.isfinite(n) else "?"


class PassProgress:
    """Progress of one evaluation pass: a dataset, batch by batch.

    The contract: an instance is made when the pass starts (and may say so at once); :meth:`advance` is
    called after each batch with the number of examples it held; :meth:`close` once when the pass ends,
    with what it found (e.g. ``val/acc 71.20``), also after an error (``with`` does that); later calls
    do nothing. This base reports nothing: the progress of a run whose progress bar is off.
    """

    def advance(self, samples: int) -> None:
        pass

    def close(self, outcome: str = "") -> None:
        pass

    def track(self, batches: Iterable[Any]) -> Iterator[Any]:
        """``batches``, with :meth:`advance` called after each (for a loop that takes an iterable)."""
        for batch in batches:
            yield batch
            self.advance(batch_size(batch))

    def __enter__(self) -> PassProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainPass(PassProgress):
    """Plain lines, through ``emit``: at the start ``test · 1563 batches · 25000 examples · started``, at
    most one every ``every_n_seconds`` (counted from the previous line) ``test · batch 120/1563 · 31.0
    samples/s · ETA 12m02s``, at the end ``test · done in 13m02s · 1563 batches`` and the outcome.
    ``on_close`` receives the pass's seconds."""

    def __init__(
        self,
        name: str,
        total: float,
        emit: Callable[[str], None],
        every_n_seconds: float,
        n_examples: int | None = None,
        on_close: Callable[[float], None] | None = None,
    ) -> None:
        self.name, self.total, self.emit, self.every_n_seconds = name, total, emit, every_n_seconds
        self.on_close = on_close
        self.done = self.samples = 0
        self._closed = False
        size = [f"{_count(total)} batches", *([f"{n_examples} examples"] if n_examples is not None else [])]
        emit(" · ".join([name, *size, "started"]))
        self._start = self._last = time.monotonic()

    def advance(self, samples: int) -> None:
        self.done += 1
        self.samples += samples
        now = time.monotonic()
        if self._closed or now - self._last < self.every_n_seconds:
            return
        self._last = now
        elapsed = now - self._start
        parts = [self.name, f"batch {self.done}/{_count(self.total)}"]
        if elapsed > 0 and self.samples:
            parts.append(f"{self.samples / elapsed:.1f} samples/s")
        if math.isfinite(self.total) and self.total > self.done:
            parts.append(f"ETA {duration(elapsed / self.done * (self.total - self.done))}")
        self.emit(" · ".join(parts))

    def close(self, outcome: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        elapsed = time.monotonic() - self._start
        self.emit(" · ".join([self.name, f"done in {duration(elapsed)}", f"{self.done} batches",
                              *([outcome] if outcome else [])]))
        if self.on_close is not None:
            self.on_close(elapsed)


class TqdmPass(PassProgress):
    """A tqdm bar (terminals): one step per batch, removed at the end."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def advance(self, samples: int) -> None:
        self.bar.update(1)

    def close(self, outcome: str = "") -> None:
        self.bar.close()


class RichPass(PassProgress):
    """A task on a running Rich progress display (the Rich bar's, on a terminal), removed at the end."""

    def __init__(self, bar: RichProgressBar, name: str, total: float) -> None:
        self.bar, self.progress = bar, bar.progress
        self.task = self.progress.add_task(name, total=total) if self.progress is not None else None

    def advance(self, samples: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1)
            self.bar.refresh()

    def close(self, outcome: str = "") -> None:
        if self.progress is not None and self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
            self.bar.refresh()


@runtime_checkable
class PassReporter(Protocol):
    """A progress bar that also shows passes run outside Lightning's loops (every bar sdbert makes)."""

    def begin_pass(self, name: str, total: float, n_examples: int | None = None) -> PassProgress: ...


def pass_progress(trainer: L.Trainer, name: str, total: float, n_examples: int | None = None) -> PassProgress:
    """The progress of a pass that a callback runs itself (outside Lightning's loops), shown the way the
    trainer's progress bar shows the rest; silent without one (or on ranks other than 0)."""
    bar = trainer.progress_bar_callback
    if isinstance(bar, PassReporter) and bar.is_enabled:
        return bar.begin_pass(name, total, n_examples)
    return PassProgress()


def console_pass(name: str, total: int, every_n_seconds: float = 30.0, stream: TextIO | None = None,
                 n_examples: int | None = None) -> PassProgress:
    """A pass of a script without a trainer (sdbert-predict) on ``stream`` (stderr): a tqdm bar on a
    terminal, else :class:`PlainPass` lines."""
    out = stream if stream is not None else sys.stderr
    if out.isatty():
        from tqdm.auto import tqdm

        return TqdmPass(tqdm(total=total, desc=name, unit="batch", file=out, leave=False))

    def emit(line: str) -> None:
        print(line, file=out, flush=True)

    return PlainPass(name, total, emit, every_n_seconds, n_examples)


#: the short names and formats of the metrics a run shows on its bar; any other shows under its own key
BAR_METRICS = {"train/loss": ("loss", ".3f"), "perf/samples_per_s": ("samples/s", ".1f")}
#: the format of a float metric that :data:`BAR_METRICS` does not name (accuracies, in %)
BAR_FORMAT = ".2f"
#: the widest the Rich bar itself gets; narrower where the line would pass the terminal's width
RICH_BAR_WIDTH = 40


def bar_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics as a bar shows them (:data:`BAR_METRICS`; floats formatted, the rest as they are), short
    enough that the training bar fits an 80-column terminal."""
    import torch

    shown: dict[str, Any] = {}
    for key, value in metrics.items():
        name, fmt = BAR_METRICS.get(key, (key, BAR_FORMAT))
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        shown[name] = format(value, fmt) if isinstance(value, float) else value
    return shown


class RichBar(RichProgressBar):
    """Lightning's Rich bar, with :class:`PassReporter` (a task per pass outside the loops), that fits an
    80-column terminal: the metrics short (:func:`bar_metrics`) and one a line beside the bar, the bar as
    wide as the line leaves (up to :data:`RICH_BAR_WIDTH`), time left instead of elapsed and left, no
    batches/s (the ``samples/s`` metric says it)."""

    def __init__(
        self, refresh_rate: int = 100, leave: bool = False, console_kwargs: dict[str, Any] | None = None
    ) -> None:
        from lightning.pytorch.callbacks.progress.rich_progress import RichProgressBarTheme

        super().__init__(refresh_rate=refresh_rate, leave=leave, console_kwargs=console_kwargs,
                         theme=RichProgressBarTheme(metrics_text_delimiter="\n"))  # one metric a line

    def begin_pass(self, name: str, total: float, n_examples: int | None = None) -> PassProgress:
        return RichPass(self, name, total)

    def configure_columns(self, trainer: L.Trainer) -> list[Any]:
        from lightning.pytorch.callbacks.progress.rich_progress import BatchesProcessedColumn, CustomBarColumn
        from rich.progress import TextColumn, TimeRemainingColumn
        from rich.table import Column

        return [
            TextColumn("[progress.description]{task.description}", style=self.theme.description),
            CustomBarColumn(
                bar_width=None, complete_style=self.theme.progress_bar, finished_style=self.theme.progress_bar_finished,
                pulse_style=self.theme.progress_bar_pulse, table_column=Column(max_width=RICH_BAR_WIDTH),
            ),
            BatchesProcessedColumn(style=self.theme.batch_progress),
            TimeRemainingColumn(table_column=Column(style=self.theme.time)),
        ]

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return bar_metrics(super().get_metrics(trainer, pl_module))


class TqdmBar(TQDMProgressBar):
    """Lightning's tqdm bar, with :class:`PassReporter` (a validation-style bar per pass outside the loops),
    that fits an 80-column terminal: batches done without the percentage, time left instead of elapsed and
    left, no batches/s (the ``samples/s`` metric says it) and the metrics short (:func:`bar_metrics`)."""

    BAR_FORMAT = "{desc}: {bar}| {n_fmt}/{total_fmt} [{remaining}{postfix}]"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return bar_metrics(super().get_metrics(trainer, pl_module))

    def begin_pass(self, name: str, total: float, n_examples: int | None = None) -> PassProgress:
        bar = self.init_validation_tqdm()
        bar.reset(total=total)
        bar.set_description(name)
        return TqdmPass(bar)


class PlainProgress(ProgressBar):
    """Progress for logs that are not a terminal (a log file, a cluster job), through the ``sdbert`` logger.

    Training: one line every ``every_n_seconds``, e.g. ``epoch 1/3 · step 120/282 · train/loss 0.612 ·
    41.3 samples/s · ETA 3m12s``; the step is the optimizer step out of
    ``trainer.estimated_stepping_batches``, the ETA extrapolates the training time per step so far
    (evaluation passes excluded). Every evaluation pass (validation, test, predict, and the passes of
    :func:`pass_progress`): the :class:`PlainPass` lines, its start, its progress every
    ``every_n_seconds`` and its end with the time it took (and ``val/acc`` ... after validation).
    """

    def __init__(self, every_n_seconds: float = 30.0) -> None:
        super().__init__()
        if not every_n_seconds > 0:
            raise ConfigError(f"callbacks.progress_bar.every_n_seconds must be > 0 (got {every_n_seconds})")
        self.every_n_seconds = float(every_n_seconds)
        self._enabled = True
        self._start: float | None = None
        self._start_step = 0
        self._last = 0.0
        self._evaluating_s = 0.0  # evaluation passes since training started
        self._pass: PassProgress = PassProgress()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _emit(self, line: str) -> None:
        if logging.getLogger().hasHandlers():
            log.info(line)
        else:  # no logging configured (not under train.py): still visible
            print(line, flush=True)

    def _evaluated(self, seconds: float) -> None:
        self._evaluating_s += seconds

    def begin_pass(self, name: str, total: float, n_examples: int | None = None) -> PassProgress:
        return PlainPass(name, total, self._emit, self.every_n_seconds, n_examples, on_close=self._evaluated)

    # -- training ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._start_step = trainer.global_step
        self._evaluating_s = 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if not self._enabled or self._start is None or now - self._last < self.every_n_seconds:
            return
        self._last = now
        self._emit(self.line(trainer, pl_module, now))

    def line(self, trainer: L.Trainer, pl_module: L.LightningModule, now: float) -> str:
        total = int(trainer.estimated_stepping_batches)
        step = trainer.global_step
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", f"step {step}/{total}"]
        metrics = self.get_metrics(trainer, pl_module)
        for key, fmt in (("train/loss", "train/loss {:.4f}"), ("perf/samples_per_s", "{:.1f} samples/s")):
            value = metrics.get(key)
            if isinstance(value, (int, float)):
                parts.append(fmt.format(float(value)))
        done = step - self._start_step
        if done > 0 and self._start is not None and total > step:
            training_s = now - self._start - self._evaluating_s
            parts.append(f"ETA {duration(training_s / done * (total - step))}")
        return " · ".join(parts)

    # -- evaluation passes in Lightning's loops -----------------------------------------------------
    def _begin(self, name: str, batches: Any, loaders: Any) -> None:
        if not self._enabled:
            return
        total = sum(batches) if isinstance(batches, list) else batches
        self._pass = self.begin_pass(name, total, examples(loaders))

    def _end(self, trainer: L.Trainer, stages: Iterable[str] = ()) -> None:
        wanted = set(stages)
        shown = " · ".join(
            f"{k} {float(v):.2f}" for k, v in sorted(trainer.callback_metrics.items())
            if k.count("/") == 1 and k.split("/")[0] in wanted and not k.endswith("/err")
        )
        self._pass.close(shown)
        self._pass = PassProgress()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            fitting = trainer.state.fn == "fit"
            name = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} validation" if fitting else "validation"
            self._begin(name, trainer.num_val_batches, trainer.val_dataloaders)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._pass.advance(batch_size(batch))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(trainer, ["val"])

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin("test", trainer.num_test_batches, trainer.test_dataloaders)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._pass.advance(batch_size(batch))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(trainer, getattr(pl_module, "test_names", None) or ["test"])

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin("predict", trainer.num_predict_batches, trainer.predict_dataloaders)

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._pass.advance(batch_size(batch))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(trainer)
