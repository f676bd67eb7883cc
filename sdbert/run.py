"""Build → fit → test → summary, from one composed Hydra config."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from sdbert import tracking
from sdbert.config import instantiate
from sdbert.errors import SdbertError
from sdbert.module import SelfDistillationModule

log = logging.getLogger("sdbert")
SUMMARY_FILE = "metrics.json"


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` in a callbacks/logger group (template style); a factory
    may return None to add nothing (e.g. the progress bar when ``trainer.enable_progress_bar=false``)."""
    if not group:
        return []
    made = (instantiate(entry) for entry in group.values() if isinstance(entry, DictConfig) and "_target_" in entry)
    return [obj for obj in made if obj is not None]


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so that a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _best_score(ckpt: Any) -> float | None:
    score = getattr(ckpt, "best_model_score", None)
    return round(float(score), 6) if score is not None else None


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
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


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, SelfDistillationModule, L.Trainer]:
    """Instantiate data, model, strategy, module, callbacks, loggers and trainer from ``cfg``."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    strategy = instantiate(cfg.strategy)  # validates K and λ before anything slow happens
    if cfg.get("flush_denormal", True):
        # CPU: denormal floats (Adam's second moments, tiny gradients) make arithmetic ~2x slower;
        # flushing them to zero changes nothing measurable. A no-op where unsupported.
        torch.set_flush_denormal(True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(
        cfg.dataset, tokenizer=cfg.model.name_or_path, data_seed=cfg.data_seed, cache_dir=cfg.paths.cache_dir
    )
    label_names = list(cfg.dataset.label_names)
    model = instantiate(cfg.model, num_labels=len(label_names))
    module = SelfDistillationModule(
        model=model,
        strategy=strategy,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        label_names=label_names,
        test_names=list(cfg.dataset.test_splits),
        seed=cfg.seed,
        prediction_dir=output_dir / "predictions",
        test_extras=bool(cfg.get("test_extras", False)),
    )
    loggers = _instantiate_group(cfg.get("logger"))
    wandb_loggers = tracking.wandb_loggers(loggers)
    if wandb_loggers:
        config = OmegaConf.to_container(cfg, resolve=True)
        identity = tracking.run_identity(cfg, strategy.describe())
        for lg in wandb_loggers:
            lg.describe_run(config, identity)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=_instantiate_group(cfg.get("callbacks")), logger=loggers)
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test one configuration; write ``metrics.json`` into the run directory and return it.

    A W&B run (``logger=wandb``) is finished before this returns or raises, so every Hydra job of a
    sweep is its own run.
    """
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    trainer: L.Trainer | None = None
    try:
        datamodule, module, trainer = build(cfg)
        summary = _fit_and_test(cfg, datamodule, module, trainer, start)
    except BaseException:
        tracking.finish_failed(trainer.loggers if trainer is not None else [])
        raise
    write_json_atomic(output_dir / SUMMARY_FILE, summary)
    return summary


def _fit_and_test(
    cfg: DictConfig, datamodule: L.LightningDataModule, module: SelfDistillationModule, trainer: L.Trainer, start: float
) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_metrics = _scalars(trainer.callback_metrics)
    ckpt = trainer.checkpoint_callback
    test_ckpt = cfg.get("test_ckpt", "best")
    best_path = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    ckpt_path = (best_path or None) if test_ckpt == "best" else None
    results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    test_metrics: dict[str, float] = {}
    for res in results:
        test_metrics.update(_scalars(res))
    summary: dict[str, Any] = {
        "status": "ok",
        "dataset": cfg.dataset.name,
        "model": cfg.model.name_or_path,
        **module.strategy.describe(),
        "seed": cfg.seed,
        "data_seed": cfg.data_seed,
        "epochs": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "tested_checkpoint": ckpt_path or "last",
        "best_val_acc": _best_score(ckpt),
        "best_epoch": _best_epoch(ckpt),
        "val": {k: v for k, v in fit_metrics.items() if k.startswith("val/")},
        "test": test_metrics,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "output_dir": str(output_dir),
        "wandb": None,
    }
    for lg in tracking.wandb_loggers(trainer.loggers):
        if lg.log_best_model and best_path:
            lg.log_checkpoint(best_path, {"best_val_acc": summary["best_val_acc"], "epoch": summary["best_epoch"]})
        final = {
            **test_metrics,
            **{k: summary[k] for k in ("best_val_acc", "best_epoch", "epochs", "optimizer_steps")},
            "wall_time_s": round(time.perf_counter() - start, 1),
        }
        summary["wandb"] = lg.finish({k: v for k, v in final.items() if v is not None}, exit_code=0)
    return summary


SUMMARY_COLUMNS = ("dataset", "strategy", "K", "λ", "test acc (%)", "best epoch", "wall time", "output directory")


def _wall(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def summary_row(summary: dict[str, Any]) -> list[str]:
    """One table row: the test accuracy of the reported model on each test split (``test/acc`` ...)."""
    accs = {k.split("/")[0]: v for k, v in summary.get("test", {}).items() if k.endswith("/acc") and k.count("/") == 1}
    test = f"{next(iter(accs.values())):.2f}" if len(accs) == 1 else ", ".join(f"{k} {v:.2f}" for k, v in accs.items())
    best = summary.get("best_epoch")
    return [
        str(summary.get("dataset", "-")),
        str(summary.get("strategy", "-")),
        str(summary.get("teacher_size", "-")),
        tracking.fmt_number(summary["distill_weight"]) if "distill_weight" in summary else "-",
        test or "-",
        f"{best}/{summary.get('epochs', '?')}" if best is not None else "-",
        _wall(float(summary.get("wall_time_s", 0.0))),
        str(summary.get("output_dir", "-")),
    ]


def format_summary_table(summaries: list[dict[str, Any]]) -> str:
    """A plain-text table (no truncation, no colour: it ends up in log files) of finished runs."""
    rows = [list(SUMMARY_COLUMNS), *(summary_row(s) for s in summaries)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(SUMMARY_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_summary(summary: dict[str, Any]) -> None:
    """The table a person reads at the end of a run, then where its W&B run went (if any)."""
    print("\n" + format_summary_table([summary]))
    if (hint := tracking.wandb_hint(summary.get("wandb"))) is not None:
        print(hint)


def main_job(cfg: DictConfig) -> dict[str, Any] | None:
    """Entry for ``train.py``: one clear line on bad input; in a multirun the sweep goes on."""
    try:
        summary = train(cfg)
    except SdbertError as err:
        tracking.finish_any_active_run(exit_code=1)
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        failure = {"status": "failed", "error": str(err), "error_type": type(err).__name__}
        write_json_atomic(output_dir / SUMMARY_FILE, failure)
        print(f"sdbert: error: {err}", file=sys.stderr)
        if _in_multirun():
            return None
        raise SystemExit(1) from None
    print_summary(summary)
    return summary


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False
