"""From a composed config to the objects of a run: strategy, data module, LightningModule, trainer.

The one place that knows how the config's groups map onto constructors; training (``sdbert.run``) and
the after-the-fact tools (ensembles, prediction, export) build through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
from omegaconf import DictConfig, OmegaConf

from sdbert.classifier import compile_classifier
from sdbert.config import instantiate
from sdbert.module import SelfDistillationModule
from sdbert.strategies import TeacherStrategy


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` in a callbacks/logger group (template style); a factory
    may return None to add nothing (e.g. the progress bar when ``trainer.enable_progress_bar=false``)."""
    if not group:
        return []
    made = (instantiate(entry) for entry in group.values() if isinstance(entry, DictConfig) and "_target_" in entry)
    return [obj for obj in made if obj is not None]


def build_strategy(cfg: DictConfig) -> TeacherStrategy:
    """The teacher strategy (validates K and λ: call it before anything slow)."""
    return cast(TeacherStrategy, instantiate(cfg.strategy))


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return cast(L.LightningDataModule, instantiate(
        cfg.dataset, tokenizer=cfg.model.name_or_path, data_seed=cfg.data_seed, cache_dir=cfg.paths.cache_dir
    ))


def build_module(
    cfg: DictConfig, strategy: TeacherStrategy, prediction_dir: str | Path | None = None, training: bool = False
) -> SelfDistillationModule:
    """The classifier of ``cfg.model`` for the dataset's labels, under ``strategy``, with ``cfg.optim``'s recipe.

    ``training``: for a training job (train.py, the benchmark), which also honours ``cfg.compile``; the
    after-the-fact tools (prediction, ensembles) evaluate eager models.
    """
    label_names = list(cfg.dataset.label_names)
    model = instantiate(cfg.model, num_labels=len(label_names))
    if training and cfg.get("compile", False):
        compile_classifier(model)
    return SelfDistillationModule(
        model=model,
        strategy=strategy,
        optim=cast("dict[str, Any]", OmegaConf.to_container(cfg.optim, resolve=True)),
        label_names=label_names,
        test_names=list(cfg.dataset.test_splits),
        seed=cfg.seed,
        prediction_dir=prediction_dir,
        test_extras=bool(cfg.get("test_extras", False)),
    )


def build_trainer(cfg: DictConfig, loggers: list[Any], extra_callbacks: Sequence[Any] = ()) -> L.Trainer:
    """``cfg.trainer`` with the callbacks group (plus ``extra_callbacks``) and ``loggers``."""
    callbacks = [*instantiate_group(cfg.get("callbacks")), *extra_callbacks]
    return cast(L.Trainer, instantiate(cfg.trainer, callbacks=callbacks, logger=loggers))
