"""Where a run's wall-clock time goes, from process start (imports included):

    python train.py +callbacks.stage_timer._target_=sdbert.bench.timing.StageTimer

prints one line per stage at the end of the run and writes ``stage_times.json`` into the run directory
(every run's metrics.json has the split from ``train()``'s start: ``wall_time_split_s``).
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


class StageTimer(timing.StageTimer):
    """:class:`sdbert.timing.StageTimer` from process start, reported when the test ends."""

    def __init__(self) -> None:
        now = time.perf_counter()
        age = _process_age_s()
        super().__init__(now - age if age is not None else now)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_test_end(trainer, pl_module)
        self.report(trainer)

    def report(self, trainer: L.Trainer) -> dict[str, float]:
        from sdbert.io import write_json

        times = self.split()
        times["total"] = round(time.perf_counter() - self.start, 1)
        print("stage times (s): " + ", ".join(f"{k} {v}" for k, v in times.items()), flush=True)
        write_json(Path(trainer.default_root_dir) / "stage_times.json", times)
        return times
