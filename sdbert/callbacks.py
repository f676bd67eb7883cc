"""sdbert's Lightning callbacks: the divergence guard, per-epoch test evaluation, per-optimizer-step
throughput and learning rates, and the progress bar factory (the bars are in sdbert.progress, the rest
come from Lightning itself)."""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor

from sdbert.errors import ConfigError, TrainingDiverged
from sdbert.module import SelfDistillationModule
from sdbert.progress import PlainProgress, RichBar, TqdmBar, batch_size, examples, pass_progress
from sdbert.timing import StageTimer


class DivergenceGuard(L.Callback):
    """Stops a run whose loss or logits run away (README "Stability": eval-mode teachers can diverge).

    Checks every training batch: a non-finite loss, a loss above ``max_loss`` or a mean |logit|
    above ``max_abs_logit`` raises ``TrainingDiverged`` with the knobs that usually fix it.
    """

    def __init__(self, max_loss: float = 25.0, max_abs_logit: float = 50.0) -> None:
        self.max_loss = max_loss
        self.max_abs_logit = max_abs_logit

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(outputs, dict) or "loss" not in outputs:
            return
        # "loss" is scaled by 1/accumulation
        loss = float(outputs["loss_value"] if "loss_value" in outputs else outputs["loss"])
        logit = float(outputs.get("logit_abs_mean", 0.0))
        if math.isfinite(loss) and loss <= self.max_loss and logit <= self.max_abs_logit:
            return
        what = (
            f"loss is {loss}" if not math.isfinite(loss) or loss > self.max_loss else f"mean |logit| is {logit:.1f}"
        )
        strategy = getattr(pl_module, "strategy", None)
        lam = getattr(strategy, "distill_weight", None)
        head_lr = getattr(pl_module, "optim", {}).get("head_lr")
        raise TrainingDiverged(
            f"training diverged at optimizer step {trainer.global_step} ({what}; bounds: loss <= {self.max_loss}, "
            f"mean |logit| <= {self.max_abs_logit}); try strategy.teacher_dropout=true, a smaller distill_weight "
            f"(now {lam}) or a smaller optim.head_lr (now {head_lr}); the bounds are "
            "callbacks.divergence_guard.max_loss / max_abs_logit"
        )


class EpochTestEvaluation(L.Callback):
    """Evaluates the test set(s) at the end of every ``every_n_epochs``-th training epoch (paper Fig. 5).

    Logs ``epoch_<test name>/err`` and ``/acc`` for the reported model (``epoch_test/err``) and, with
    ``extras=True``, for the strategy's other model too (``epoch_test/teacher/err``; SDV's voted teacher
    costs K forward passes), through the module's own
    :meth:`~sdbert.module.SelfDistillationModule.evaluate`. Training is not affected: the pass runs in
    eval mode, without gradients and without drawing random numbers. It costs one test-set pass per
    epoch, so it is off by default (``callbacks=with_epoch_test``).
    """

    def __init__(self, every_n_epochs: int = 1, extras: bool = False) -> None:
        if int(every_n_epochs) < 1:
            from sdbert.errors import ConfigError

            raise ConfigError(f"callbacks.epoch_test.every_n_epochs must be >= 1 (got {every_n_epochs})")
        self.every_n_epochs = int(every_n_epochs)
        self.extras = bool(extras)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from sdbert.strategies import metric_key

        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        if not isinstance(pl_module, SelfDistillationModule):
            raise TypeError(f"EpochTestEvaluation evaluates a SelfDistillationModule, not {type(pl_module).__name__}")
        # Lightning's data connector sets Trainer.datamodule; the class does not declare it
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        if datamodule is None:
            raise RuntimeError("EpochTestEvaluation needs trainer.fit(..., datamodule=...) to reach the test set")
        datamodule.setup("test")
        loaders = datamodule.test_dataloader()
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        names = list(getattr(pl_module, "test_names", None) or [f"test{i}" for i in range(len(loaders))])
        timer = StageTimer.of(trainer)
        with trainer.precision_plugin.test_step_context(), timer.stage("test") if timer else nullcontext():
            for name, loader in zip(names, loaders, strict=True):
                n_batches = len(loader) if hasattr(loader, "__len__") else math.inf
                with pass_progress(trainer, f"epoch {epoch}/{trainer.max_epochs} {name}", n_batches,
                                   examples(loader)) as progress:
                    accs = pl_module.evaluate(progress.track(loader), extras=self.extras)
                    progress.close(" · ".join(f"{metric_key(name, m, 'acc')} {a:.2f}" for m, a in accs.items()))
                for model_name, acc in accs.items():
                    for metric, value in (("acc", acc), ("err", 100.0 - acc)):
                        pl_module.log(metric_key(f"epoch_{name}", model_name, metric), value, on_epoch=True)


class Throughput(L.Callback):
    """Logs ``perf/step_time_s`` and ``perf/samples_per_s`` once per optimizer step (on the progress bar too).

    Step time is the wall time from the end of the previous optimizer step to the end of this one, so
    it covers all micro-batches of a gradient-accumulation window and their data loading; the first
    step of an epoch, or after a validation, is timed from its first batch. ``samples_per_s`` divides
    the window's training examples by it.
    """

    def __init__(self, prog_bar: bool = True) -> None:
        self.prog_bar = prog_bar
        self._start: float | None = None
        self._samples = 0
        self._step = -1

    def _reset(self, trainer: L.Trainer) -> None:
        self._start, self._samples, self._step = None, 0, trainer.global_step

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:
            self._start, self._step = time.perf_counter(), trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._samples += batch_size(batch)
        if trainer.global_step == self._step or self._start is None:
            return  # still accumulating gradients
        if pl_module.device.type == "cuda":
            import torch

            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        pl_module.log("perf/step_time_s", elapsed, on_step=True, on_epoch=False, batch_size=1)
        pl_module.log(
            "perf/samples_per_s", self._samples / elapsed, on_step=True, on_epoch=False, prog_bar=self.prog_bar,
            batch_size=1,
        )
        self._start, self._samples, self._step = now, 0, trainer.global_step


def stdout_is_terminal() -> bool:
    """Whether the console is interactive (a live bar) or a log file / pipe (plain lines)."""
    return sys.stdout.isatty()


def progress_bar(
    kind: str = "rich",
    refresh_rate: int = 1,
    leave: bool = True,
    enabled: bool = True,
    not_a_terminal: str | None = "plain",
    every_n_seconds: float = 30.0,
) -> L.Callback | None:
    """The progress bar (live ``train/loss``, ``perf/samples_per_s``, ``val/acc``), or None when disabled.

    ``kind`` is the bar on a terminal: ``rich`` or the classic ``tqdm``. When stdout is not a terminal
    and ``not_a_terminal='plain'``, a :class:`PlainProgress` line every ``every_n_seconds`` replaces it
    (``not_a_terminal=null`` keeps ``kind``: rich then prints only its final state). ``enabled`` follows
    ``trainer.enable_progress_bar``: Lightning refuses a progress bar callback when that is false.
    """
    if not enabled:
        return None
    if not_a_terminal not in (None, "plain"):
        raise ConfigError(f"callbacks.progress_bar.not_a_terminal={not_a_terminal!r}: use plain or null")
    if not_a_terminal == "plain" and not stdout_is_terminal():
        return PlainProgress(every_n_seconds=every_n_seconds)
    if kind == "rich":
        return RichBar(refresh_rate=refresh_rate, leave=leave)
    if kind == "tqdm":
        return TqdmBar(refresh_rate=refresh_rate, leave=leave)
    raise ConfigError(f"callbacks.progress_bar.kind={kind!r}: use rich or tqdm")


class StepLearningRateMonitor(LearningRateMonitor):
    """``LearningRateMonitor`` (keys ``lr-AdamW/<param group name>``) logged once per optimizer step.

    Lightning's own logs at every micro-batch of a gradient-accumulation window, with the same step;
    this one logs at the window's first micro-batch, i.e. the rate the coming optimizer step uses.
    """

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        batch_idx = kwargs.get("batch_idx", args[2] if len(args) > 2 else 0)
        if batch_idx % max(int(trainer.accumulate_grad_batches), 1):
            return
        super().on_train_batch_start(trainer, *args, **kwargs)
