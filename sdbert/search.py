"""Hyperparameter search (``python train.py hparams_search=sdbert_optuna``): the objective a job returns to
Hydra's sweeper, and the trials table written into the sweep directory when the search ends.

The search itself is Hydra's Optuna sweeper (``hydra-optuna-sweeper``, ``pip install -e '.[search]'``),
configured in ``conf/hparams_search/``; it writes ``optimization_results.yaml`` (best parameters and value).
:class:`TrialsTable` checks ``optimized_metric`` before the first trial and adds ``trials.csv`` and
``trials.md`` at the end: every trial's parameters, status and objective.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sdbert.errors import ConfigError
from sdbert.module import EVAL_METRICS

log = logging.getLogger("sdbert")

#: ``optimized_metric`` alias of the best validation accuracy (the checkpoint callback's monitored score)
BEST_VAL = "val/acc_best"
#: what a run reports per split and evaluated model: the module's metrics and the error rate (100 − acc)
METRICS = (*EVAL_METRICS, "err")


def check_metric(metric: str, test_splits: Iterable[str]) -> None:
    """Refuse an ``optimized_metric`` that no run of this config can report, before any trial trains.

    A reported metric is ``<split>/<metric>`` (the reported model) or ``<split>/<model>/<metric>`` (a
    strategy's other model, e.g. ``val/teacher/acc``), where ``<split>`` is ``val`` or one of the dataset's
    test splits and ``<metric>`` one of :data:`METRICS`; or :data:`BEST_VAL`. The model name is not
    checked here: strategies are pluggable, and a sweep may vary the strategy.
    """
    splits = ["val", *test_splits]
    parts = metric.split("/")
    if metric == BEST_VAL or (len(parts) in (2, 3) and parts[0] in splits and parts[-1] in METRICS and all(parts)):
        return
    names = [BEST_VAL, *(f"{split}/{m}" for split in splits for m in METRICS)]
    raise ConfigError(
        f"optimized_metric={metric} is not a metric sdbert reports; use one of: {', '.join(names)} "
        "(or <split>/<model>/<metric> for a strategy's other model, e.g. val/teacher/acc)"
    )


def objective(summary: dict[str, Any], metric: str) -> float:
    """The value of ``metric`` in a run's summary (``metrics.json``).

    ``val/acc_best``: the best validation accuracy over the epochs (the score of the tested ``best``
    checkpoint); any other key is looked up in the summary's ``val`` (end of training) and ``test`` metrics,
    e.g. ``val/acc``, ``val/f1``, ``test/acc``.
    """
    if metric == BEST_VAL:
        value = summary.get("best_val_acc")
        if value is None:
            raise ConfigError(
                f"optimized_metric={BEST_VAL} needs the checkpoint callback's score (callbacks.model_checkpoint "
                "monitoring val/acc); use optimized_metric=val/acc"
            )
        return float(value)
    for part in ("val", "test"):
        if metric in (summary.get(part) or {}):
            return float(summary[part][metric])
    known = [BEST_VAL, *(summary.get("val") or {}), *(summary.get("test") or {})]
    raise ConfigError(f"optimized_metric={metric!r} is not a metric of this run; use one of: {', '.join(known)}")


class TrialsTable(Callback):
    """Writes ``trials.csv`` and ``trials.md`` into the sweep directory at the end of a multirun.

    One row per job directory: its number, the swept parameters (the job's command-line overrides that
    differ between jobs), status (``ok``/``failed``/``incomplete``), ``metric`` and the test accuracy; the
    best ``ok`` trial is marked. Read from the run directories alone, so it also lists failed trials.
    """

    def __init__(self, metric: str = BEST_VAL, direction: str = "maximize") -> None:
        self.metric = metric
        self.direction = direction

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A metric no run reports is refused in one line (exit 1) before the first trial."""
        try:
            check_metric(self.metric, (config.get("dataset") or {}).get("test_splits") or {"test": "test"})
        except ConfigError as err:
            print(f"sdbert: error: {err}", file=sys.stderr)
            raise SystemExit(1) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = trials(sweep_dir, self.metric)
        if not rows:
            return
        write_trials(sweep_dir, rows, self.metric, self.direction)
        log.info("trials: %s", sweep_dir / "trials.md")


def trials(sweep_dir: Path, metric: str) -> list[dict[str, Any]]:
    """One dict per job directory of ``sweep_dir`` (numbered subfolders), in job order."""
    from sdbert.analysis.rundirs import RunDirError, load_run

    rows: list[dict[str, Any]] = []
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for job in jobs:
        try:
            run = load_run(job)
        except RunDirError:
            continue
        params = dict(o.split("=", 1) for o in run.overrides if "=" in o)
        value: float | None = None
        error = run.error or ""
        if run.ok:
            try:
                value = objective(run.metrics, metric)
            except ConfigError as err:
                error = str(err)
        test = {k: v for k, v in (run.metrics.get("test") or {}).items() if k.endswith("/acc") and k.count("/") == 1}
        rows.append({"trial": int(job.name), "params": params, "status": run.status, "value": value,
                     "test_acc": next(iter(test.values()), None) if len(test) == 1 else None, "error": error})
    swept = {k for r in rows for k in r["params"] if len({str(x["params"].get(k)) for x in rows}) > 1}
    for r in rows:
        r["params"] = {k: v for k, v in r["params"].items() if k in swept}
    return rows


def write_trials(sweep_dir: Path, rows: list[dict[str, Any]], metric: str, direction: str = "maximize") -> None:
    from sdbert.io import write_text

    keys = sorted({k for r in rows for k in r["params"]})
    scored = [r for r in rows if r["value"] is not None]
    best = (max if direction == "maximize" else min)(scored, key=lambda r: r["value"]) if scored else None
    header = ["trial", *keys, "status", metric, "test acc", "best", "error"]
    table = [
        [str(r["trial"]), *(str(r["params"].get(k, "")) for k in keys), r["status"],
         "" if r["value"] is None else f"{r['value']:.2f}", "" if r["test_acc"] is None else f"{r['test_acc']:.2f}",
         "*" if r is best else "", r["error"]]
        for r in rows
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(table)
    write_text(sweep_dir / "trials.csv", buffer.getvalue())
    lines = [f"# Trials ({direction} {metric})", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table]
    write_text(sweep_dir / "trials.md", "\n".join(lines) + "\n")
