"""Build → fit → test → summary, from one composed Hydra config."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from sdbert import checks, factory, loggers, provenance, resume, signals
from sdbert.checkpointing import check_checkpoint
from sdbert.errors import RunDirInUse, SdbertError, disk_full_error
from sdbert.io import write_json
from sdbert.module import STRATEGY_STATE_KEY, SelfDistillationModule
from sdbert.paths import PREDICTIONS_DIR, SUMMARY_FILE
from sdbert.rundir import check_fresh, rank_zero, run_lock
from sdbert.spec import RunSpec
from sdbert.summary import print_summary
from sdbert.timing import StageTimer

log = logging.getLogger("sdbert")


def _best_score(ckpt: Any) -> float | None:
    score = getattr(ckpt, "best_model_score", None)
    return round(float(score), 6) if score is not None else None


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items()}


def _best_epoch(ckpt: Any) -> int | None:
    """1-based epoch whose weights are the best checkpoint (read lazily from the checkpoint file)."""
    path = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    if not path or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        return int(state["epoch"]) + 1
    except Exception:  # an unreadable checkpoint is reported by trainer.test, not here
        return None


def _saved_val(trainer: L.Trainer) -> dict[str, float]:
    """The last validation metrics kept in the checkpoint (a run resumed after its last validation)."""
    # Lightning's callback connector sets Trainer.callbacks; the class does not declare it
    kept = [cb.last_val for cb in trainer.callbacks if isinstance(cb, resume.RunIdentity)]  # type: ignore[attr-defined]
    return _scalars(kept[0]) if kept else {}


class RunHooks:
    """Extra steps around one run, for tools above this layer (e.g. ``export=true``, :mod:`sdbert.export`).

    ``before`` runs after the strategy is validated and before anything slow: raise a one-line
    :class:`~sdbert.errors.SdbertError` to refuse the run. ``after_test`` runs after testing, before
    ``metrics.json`` is written, and may add keys to ``summary``.
    """

    def before(self, cfg: DictConfig) -> None:
        pass

    def after_test(self, cfg: DictConfig, summary: dict[str, Any]) -> None:
        pass


def build(
    cfg: DictConfig, hooks: RunHooks | None = None, ckpt_path: str | None = None, start: float | None = None
) -> tuple[L.LightningDataModule, SelfDistillationModule, L.Trainer, RunSpec]:
    """Data, module (model + strategy), trainer (callbacks, loggers) and spec of one run; ``ckpt_path`` is the
    checkpoint it continues from (``ckpt_path=`` or found by ``resume=``); ``start`` (``time.perf_counter``)
    is when the run began, for its :class:`~sdbert.timing.StageTimer` (default: now).

    Everything that can be checked without data is checked first (sdbert.checks, the run directory, the
    resume checkpoint, the hooks), so bad input fails in one line before any data is prepared.
    """
    output_dir = Path(cfg.paths.output_dir)
    check_fresh(output_dir, ckpt_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    checks.check_config(cfg)
    strategy = factory.build_strategy(cfg)  # validates K and λ before anything slow happens
    spec = RunSpec.from_config(cfg, strategy.describe(), loggers.model_choice())
    if hooks is not None:
        hooks.before(cfg)
    if cfg.get("flush_denormal", True):
        # CPU: denormal floats (Adam's second moments, tiny gradients) slow arithmetic down (README "Measured");
        # flushing them to zero changes nothing measurable. A no-op where unsupported.
        torch.set_flush_denormal(True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = factory.build_datamodule(cfg)
    module = factory.build_module(cfg, strategy, prediction_dir=output_dir / PREDICTIONS_DIR, training=True)
    if ckpt_path:
        saved = check_checkpoint(ckpt_path, module, STRATEGY_STATE_KEY)  # readable, sdbert's, the same shapes
        resume.check_fits(ckpt_path, saved, spec.checkpoint_identity())  # method, model, labels
    run_loggers = factory.instantiate_group(cfg.get("logger"))
    loggers.describe_wandb_runs(run_loggers, cfg, spec)
    identity = resume.RunIdentity(spec.checkpoint_identity())
    timer = StageTimer(start)
    return datamodule, module, factory.build_trainer(cfg, run_loggers, extra_callbacks=[identity, timer]), spec


def train(cfg: DictConfig, hooks: RunHooks | None = None) -> dict[str, Any]:
    """Fit and test one configuration; write ``metrics.json`` into the run directory and return it.

    A W&B run (``logger=wandb``) is finished before this returns or raises, so every Hydra job of a
    sweep is its own run. With ``resume`` set the run continues (see :func:`sdbert.resume.prepare`); a
    run stopped by a signal writes ``"status": "interrupted"`` and raises :class:`~sdbert.signals.RunInterrupted`.
    """
    start = time.perf_counter()
    cfg, ckpt_path, finished = resume.prepare(cfg)
    if finished is not None:
        log.info("sdbert: %s already finished (metrics.json status ok); not run again", cfg.paths.output_dir)
        return finished
    output_dir = Path(cfg.paths.output_dir)
    trainer: L.Trainer | None = None
    # continuing in its own folder: keep the CSV rows logged before the checkpoint (the logger deletes them)
    in_place_ckpt = ckpt_path if ckpt_path and Path(ckpt_path).resolve().is_relative_to(output_dir.resolve()) else None
    in_place = in_place_ckpt is not None
    resumed_step = resume.checkpoint_step(in_place_ckpt) if in_place_ckpt is not None else None
    start -= resume.time_spent(output_dir) if in_place else 0.0  # wall_time_s is the whole run's
    earlier_log = resume.set_aside_log(output_dir) if in_place else None
    check_fresh(output_dir, ckpt_path)  # before the lock: a folder of another run gets nothing written
    try:
        with run_lock(output_dir), signals.stop_on_signals(
                lambda: trainer.global_step if trainer is not None else resumed_step or 0):
            datamodule, module, trainer, spec = build(cfg, hooks, ckpt_path, start)
            with resume.quiet_restore_warnings() if in_place else contextlib.nullcontext():
                summary = _fit_and_test(cfg, spec, datamodule, module, trainer, start, ckpt_path)
            if hooks is not None:
                hooks.after_test(cfg, summary)
    except signals.RunInterrupted as stop:
        loggers.finish_failed(trainer.loggers if trainer is not None else [])
        _rank_zero_write(output_dir / SUMMARY_FILE, {
            "status": "interrupted", "error": str(stop), "checkpoint": stop.checkpoint,
            "optimizer_steps": stop.step, "output_dir": str(output_dir),
            "wall_time_s": round(time.perf_counter() - start, 1),
        })
        raise
    except BaseException:
        loggers.finish_failed(trainer.loggers if trainer is not None else [])
        raise
    finally:
        resume.restore_log(output_dir, earlier_log, resumed_step)
    _rank_zero_write(output_dir / SUMMARY_FILE, summary)
    return summary


def _rank_zero_write(path: Path, payload: dict[str, Any]) -> None:
    """metrics.json is the run's, written once (by global rank 0 under data parallelism)."""
    if rank_zero():
        write_json(path, payload)


def _fit_and_test(
    cfg: DictConfig,
    spec: RunSpec,
    datamodule: L.LightningDataModule,
    module: SelfDistillationModule,
    trainer: L.Trainer,
    start: float,
    ckpt_path: str | None = None,
) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    fit_metrics = _scalars(trainer.callback_metrics)
    ckpt = trainer.checkpoint_callback
    test_ckpt = cfg.get("test_ckpt", "best")
    best_path = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    tested = (best_path or None) if test_ckpt == "best" else None
    results = trainer.test(module, datamodule=datamodule, ckpt_path=tested, verbose=False)
    wall, timer = time.perf_counter() - start, StageTimer.of(trainer)
    test_metrics: dict[str, float] = {}
    for res in results:
        test_metrics.update(_scalars(res))
    summary: dict[str, Any] = {
        "status": "ok",
        **spec.summary_fields(),
        "epochs": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "tested_checkpoint": tested or "last",
        "best_val_acc": _best_score(ckpt),
        "best_epoch": _best_epoch(ckpt),
        "val": {k: v for k, v in fit_metrics.items() if k.startswith("val/")} or _saved_val(trainer),
        "test": test_metrics,
        "wall_time_s": round(wall, 1),
        "wall_time_split_s": timer.split(wall) if timer is not None else None,
        "output_dir": str(output_dir),
        "provenance": provenance.collect(str(trainer.strategy.root_device), str(trainer.precision)),
        "wandb": None,
    }
    summary["wandb"] = loggers.finish_wandb_runs(trainer.loggers, summary, best_path)
    return summary


def _one_line_error(err: Exception, output_dir: Path) -> SdbertError | None:
    """``err`` as a one-line sdbert error (a full disk anywhere becomes one), or None for a real bug."""
    if isinstance(err, SdbertError):
        return err
    return disk_full_error(err, str(output_dir))


def main_job(cfg: DictConfig, hooks: RunHooks | None = None) -> dict[str, Any] | None:
    """Entry for ``train.py``: one clear line on bad input; in a multirun the sweep goes on.

    A failed run leaves ``metrics.json`` with ``"status": "failed"`` and the reason (except when the
    folder belongs to another run: nothing is written there). In a multirun any failure, a traceback
    included (it goes to the job's log), is recorded and the next job starts; the sweep's end-of-run
    table (sdbert.sweep) names it and the sweep exits non-zero.
    """
    output_dir = Path(cfg.paths.output_dir)
    try:
        summary = train(cfg, hooks)
    except signals.RunInterrupted as stop:
        # never "finished": a scheduler must see a stopped job (and a sweep stops with it)
        print(f"sdbert: {stop}; continue with resume={cfg.paths.output_dir}", file=sys.stderr)
        raise SystemExit(stop.exit_code) from None
    except Exception as err:
        known = _one_line_error(err, output_dir)
        multirun = _in_multirun()
        if known is None and not multirun:
            raise
        loggers.finish_any_active_run(exit_code=1)
        if known is None:
            log.exception("job failed")
        message = str(known) if known is not None else f"{type(err).__name__}: {' '.join(str(err).split())}"
        if not isinstance(err, RunDirInUse):
            failure = {"status": "failed", "error": message, "error_type": type(known or err).__name__}
            output_dir.mkdir(parents=True, exist_ok=True)
            _rank_zero_write(output_dir / SUMMARY_FILE, failure)
        print(f"sdbert: error: {message}", file=sys.stderr)
        if multirun:
            return None
        raise SystemExit(1) from None
    if rank_zero():
        print_summary(summary)
    return summary


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False
