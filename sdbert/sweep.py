"""How a sweep went: a Hydra callback that ends a multirun with a table of every job.

Registered in conf/hydra/default.yaml. At the end of ``python train.py -m ...`` it reads each job's
folder under the sweep directory (so it works with any launcher, jobs in other processes included),
prints one row per job (number, status, reported test accuracy, overrides, folder) and the error of
each failed one, and exits with status 1 when any job failed or left no result.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sdbert.paths import OVERRIDES_FILE
from sdbert.rundir import RunDir

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[assignment,misc]

COLUMNS = ("job", "status", "test acc (%)", "model", "overrides", "folder")


@dataclass(frozen=True)
class JobResult:
    """One job of a sweep as its folder tells it."""

    folder: Path
    status: str  # ok, failed, interrupted, or running (no metrics.json: killed, crashed, or still running)
    test_acc: float | None
    model: str | None
    overrides: str
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _job_key(folder: Path) -> tuple[int, str]:
    return (int(folder.name), "") if folder.name.isdigit() else (1 << 30, folder.name)


def read_job(folder: str | Path) -> JobResult:
    """The result of the job whose run directory is ``folder`` (its :class:`~sdbert.rundir.RunDir`)."""
    run = RunDir(folder)
    try:
        overrides = " ".join(run.overrides)
    except Exception:
        overrides = "?"
    summary = run.summary
    accs = [v for k, v in summary.test.items() if k.endswith("/acc") and k.count("/") == 1]
    return JobResult(
        folder=run.path,
        status=summary.status,
        test_acc=sum(accs) / len(accs) if accs else None,
        model=summary.data.get("model"),
        overrides=overrides,
        error=summary.error,
    )


def sweep_jobs(sweep_dir: str | Path) -> list[JobResult]:
    """Every job folder (one holding ``.hydra/``) directly under ``sweep_dir``, in job order."""
    root = Path(sweep_dir)
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir() and (p / OVERRIDES_FILE).parent.is_dir()]
    return [read_job(p) for p in sorted(folders, key=_job_key)]


def format_jobs(jobs: list[JobResult]) -> str:
    """A plain-text table of the jobs, then one ``failed: <folder>: <error>`` line per failed job."""
    rows = [list(COLUMNS)] + [
        [
            job.folder.name,
            job.status,
            f"{job.test_acc:.2f}" if job.test_acc is not None else "-",
            job.model or "-",
            job.overrides or "-",
            str(job.folder),
        ]
        for job in jobs
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [job for job in jobs if not job.ok]
    n_ok = len(jobs) - len(failed)
    lines.append(f"{n_ok} of {len(jobs)} jobs ok" + (f", {len(failed)} failed:" if failed else ""))
    lines += [f"  failed: {job.folder}: {job.error}" for job in failed]
    return "\n".join(lines)


class SweepReport(Callback):
    """Hydra callback: the end-of-sweep table; exit status 1 when a job failed (conf/hydra/default.yaml)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
        if sweep_dir is None:
            return
        jobs = sweep_jobs(str(sweep_dir))
        if not jobs:
            return
        print(f"\nsweep {sweep_dir}:\n{format_jobs(jobs)}", flush=True)
        if any(not job.ok for job in jobs):
            print(f"sdbert: error: {sum(not j.ok for j in jobs)} of {len(jobs)} sweep jobs failed (see above)",
                  file=sys.stderr, flush=True)
            raise SystemExit(1)
