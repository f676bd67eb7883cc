"""Where a benchmarked run's wall-clock time goes, from process start (imports included):

    python train.py +callbacks.stage_timer._target_=sdbert.bench.timing.StageTimer

prints one line per stage when the test ends and writes ``stage_times.json`` into the run directory: the
run's own split (:class:`sdbert.timing.StageTimer`, metrics.json's ``wall_time_split_s``) with
``startup``, the process's time before the run began (imports, Hydra), and ``total`` in front.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L

from sdbert import timing


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
    """Reports the run's :class:`sdbert.timing.StageTimer` split from process start when the test ends."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = timing.StageTimer.of(trainer)
        if timer is not None:
            self.report(trainer, timer)

    def report(self, trainer: L.Trainer, timer: timing.StageTimer) -> dict[str, float | None]:
        from sdbert.io import write_json

        in_run = time.perf_counter() - timer.start
        age = _process_age_s()
        times = {"startup": round(age - in_run, 1) if age is not None else None, **timer.split(in_run),
                 "total": round(age if age is not None else in_run, 1)}
        print("stage times (s): " + ", ".join(f"{k} {v}" for k, v in times.items()), flush=True)
        write_json(Path(trainer.default_root_dir) / "stage_times.json", times)
        return times
