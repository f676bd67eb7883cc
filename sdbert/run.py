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
from omegaconf import DictConfig, OmegaConf

from sdbert.config import instantiate
from sdbert.errors import SdbertError
from sdbert.module import SelfDistillationModule

log = logging.getLogger("sdbert")
SUMMARY_FILE = "metrics.json"


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` in a callbacks/logger group (template style)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if isinstance(entry, DictConfig) and "_target_" in entry]


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


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, SelfDistillationModule, L.Trainer]:
    """Instantiate data, model, strategy, module, callbacks, loggers and trainer from ``cfg``."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    strategy = instantiate(cfg.strategy)  # validates K and λ before anything slow happens
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
    )
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=_instantiate_group(cfg.get("callbacks")), logger=_instantiate_group(cfg.get("logger"))
    )
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test one configuration; write ``metrics.json`` into the run directory and return it."""
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    datamodule, module, trainer = build(cfg)
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
        "val": {k: v for k, v in fit_metrics.items() if k.startswith("val/")},
        "test": test_metrics,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "output_dir": str(output_dir),
    }
    write_json_atomic(output_dir / SUMMARY_FILE, summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """A few lines a person reads at the end of a run."""
    head = [k for k in summary["test"] if k.endswith("/acc") and k.count("/") == 1]
    result = ", ".join(f"{k} {summary['test'][k]:.2f}%" for k in head)
    k = summary.get("teacher_size", "-")
    lam = summary.get("distill_weight", "-")
    print(
        f"\nsdbert: {summary['dataset']} · {summary['strategy']} (K={k}, λ={lam}) · {result} · "
        f"{summary['wall_time_s']:.0f}s\nsdbert: outputs in {summary['output_dir']}"
    )


def main_job(cfg: DictConfig) -> dict[str, Any] | None:
    """Entry for ``train.py``: one clear line on bad input; in a multirun the sweep goes on."""
    try:
        summary = train(cfg)
    except SdbertError as err:
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
