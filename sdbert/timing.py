"""Where a run's wall-clock time goes: setup, training, validation, test, checkpoints (metrics.json's
``wall_time_split_s``; ``sdbert.bench.timing`` prints the same split for benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L

#: the stages of :meth:`StageTimer.split`, in the order a run goes through them (``other``: the rest)
STAGES = ("setup", "training", "validation", "test", "checkpoints", "other")


class StageTimer(L.Callback):
    """Wall time per stage of one run, from Lightning's hooks.

    ``setup`` is ``start`` → fit start (config checks, data, model); ``training`` the training epochs
    (their batches, data loading and optimizer steps); ``validation`` Lightning's validation loops (the
    sanity check included); ``test`` the test loop and every pass run in :meth:`stage` ``("test")`` (the
    per-epoch test); ``checkpoints`` the saves (``on_save_checkpoint`` to the next hook). ``other`` is
    whatever lies between, up to the ``total`` given to :meth:`split`, so the stages add up to it.
    """

    def __init__(self, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else float(start)
        self.totals: dict[str, float] = {}
        self._open: dict[str, float] = {}
        self._save_started: float | None = None

    @staticmethod
    def of(trainer: L.Trainer) -> StageTimer | None:
        """The trainer's StageTimer, or None when it has none."""
        # Lightning's callback connector sets Trainer.callbacks; the class does not declare it
        return next((cb for cb in trainer.callbacks if isinstance(cb, StageTimer)), None)  # type: ignore[attr-defined]

    def _start(self, stage: str) -> None:
        self._close_save()
        self._open[stage] = time.perf_counter()

    def _stop(self, stage: str) -> None:
        self._close_save()
        if stage in self._open:
            self.totals[stage] = self.totals.get(stage, 0.0) + time.perf_counter() - self._open.pop(stage)

    def _close_save(self) -> None:
        if self._save_started is not None:
            spent = time.perf_counter() - self._save_started
            self.totals["checkpoints"] = self.totals.get("checkpoints", 0.0) + spent
            self._save_started = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the time inside the ``with`` block as ``name``; the stages open around it pause meanwhile."""
        paused = list(self._open)
        for open_stage in paused:
            self._stop(open_stage)
        self._start(name)
        try:
            yield
        finally:
            self._stop(name)
            for open_stage in paused:
                self._start(open_stage)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.totals.setdefault("setup", time.perf_counter() - self.start)

    def on_train_epoch_start(self, *_: Any) -> None:
        self._resume_training()

    def on_train_batch_start(self, *_: Any) -> None:
        self._resume_training()  # the first batch after a mid-epoch validation or checkpoint

    def _resume_training(self) -> None:
        if "training" not in self._open:
            self._start("training")

    def on_validation_start(self, *_: Any) -> None:
        self._stop("training")
        self._start("validation")

    def on_validation_end(self, *_: Any) -> None:
        self._stop("validation")

    def on_train_epoch_end(self, *_: Any) -> None:
        self._stop("training")

    def on_save_checkpoint(self, *_: Any) -> None:
        self._stop("training")  # a mid-epoch checkpoint (every_n_train_steps)
        self._save_started = time.perf_counter()

    def on_test_start(self, *_: Any) -> None:
        self._start("test")

    def on_test_end(self, *_: Any) -> None:
        self._stop("test")

    def on_fit_end(self, *_: Any) -> None:
        self._close_save()

    def split(self, total: float | None = None) -> dict[str, float]:
        """Seconds per stage (:data:`STAGES`, rounded to 0.1 s); ``total`` defaults to now − ``start``."""
        self._close_save()
        now = time.perf_counter()
        spent = {k: v + (now - self._open[k] if k in self._open else 0.0) for k, v in self.totals.items()}
        for k in self._open.keys() - spent.keys():
            spent[k] = now - self._open[k]
        total = now - self.start if total is None else total
        spent["other"] = max(total - sum(spent.values()), 0.0)
        return {k: round(spent.get(k, 0.0), 1) for k in STAGES}
