"""Where a run's wall-clock time goes: start-up, training, validation, checkpoints, test.

    python train.py +callbacks.stage_timer._target_=sdbert.bench.timing.StageTimer

prints one line per stage at the end of the run and writes ``stage_times.json`` into the run directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), or None."""
    try:
        import os

        ticks = os.sysconf("SC_CLK_TCK")
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start
    except (OSError, ValueError, IndexError):
        return None


class StageTimer(L.Callback):
    """Wall time per stage. ``startup`` is process start → fit start (imports, data, model); ``train``
    the training batches; ``validation`` and ``test`` the evaluation loops; ``checkpoint`` the saves
    (measured around ``on_save_checkpoint`` to the next hook); ``other`` whatever lies between."""

    def __init__(self) -> None:
        self.created = time.perf_counter()
        age = _process_age_s()
        self.process_start = self.created - age if age is not None else self.created
        self.totals: dict[str, float] = {}
        self._open: dict[str, float] = {}
        self._save_started: float | None = None

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
            self.totals["checkpoint"] = self.totals.get("checkpoint", 0.0) + spent
            self._save_started = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.totals.setdefault("startup", time.perf_counter() - self.process_start)

    def on_train_epoch_start(self, *_: Any) -> None:
        self._start("train")

    def on_validation_start(self, *_: Any) -> None:
        self._stop("train")
        self._start("validation")

    def on_validation_end(self, *_: Any) -> None:
        self._stop("validation")

    def on_train_epoch_end(self, *_: Any) -> None:
        self._stop("train")

    def on_save_checkpoint(self, *_: Any) -> None:
        self._close_save()
        self._save_started = time.perf_counter()

    def on_test_start(self, *_: Any) -> None:
        self._start("test")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop("test")
        self.report(trainer)

    def on_fit_end(self, *_: Any) -> None:
        self._close_save()

    def report(self, trainer: L.Trainer) -> dict[str, float]:
        from sdbert.io import write_json

        total = time.perf_counter() - self.process_start
        times = {k: round(v, 1) for k, v in self.totals.items()}
        times["other"] = round(total - sum(self.totals.values()), 1)
        times["total"] = round(total, 1)
        print("stage times (s): " + ", ".join(f"{k} {v}" for k, v in times.items()), flush=True)
        write_json(Path(trainer.default_root_dir) / "stage_times.json", times)
        return times
