"""Config-time checks: combinations that would fail (or mean nothing) late are refused or flagged early.

:func:`check_config` runs first in :func:`sdbert.run.build`, before any data is prepared or any model
is built; each problem is one :class:`~sdbert.errors.ConfigError` line that names the key and the fix.
:func:`recorded_model` is the name runs are recorded under (metrics.json, the report, the summary table).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from sdbert.errors import ConfigError

log = logging.getLogger("sdbert")

#: model types whose position ids start after the padding index (RoBERTa-style): 2 positions fewer
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "mpnet": 2, "longformer": 2}
#: top-level keys that only mean something to a strategy whose config uses them
STRATEGY_KEYS = ("teacher_size", "distill_weight")


def recorded_model(model: Mapping[str, Any]) -> str:
    """The model a run used, as recorded: ``model.label`` (else ``name_or_path``), marked when random-init.

    A ``model=tiny`` run is thus ``tiny (random init)``, never the pretrained model whose geometry and
    tokenizer it borrows.
    """
    label = str(model.get("label") or model.get("name_or_path"))
    if model.get("random_init") and "random" not in label:
        label += " (random init)"
    return label


def command_line_overrides() -> list[str] | None:
    """The task overrides of the running Hydra job (``teacher_size=3`` ...), or None outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:
        return None


def check_config(cfg: DictConfig, overrides: Sequence[str] | None = None) -> None:
    """Refuse what cannot work, warn about what means nothing; cheap (reads at most a model's config.json).

    ``overrides`` are the command-line overrides (default: the running Hydra job's); they tell an
    explicit ``teacher_size=3`` from the config's default.
    """
    check_trainer(cfg)
    check_compile(cfg)
    check_strategy_keys(cfg, command_line_overrides() if overrides is None else overrides)
    check_max_length(cfg)


def check_trainer(cfg: DictConfig) -> None:
    trainer = cfg.get("trainer") or {}
    epochs = trainer.get("max_epochs")
    if epochs is not None and int(epochs) == 0:
        raise ConfigError(
            "trainer.max_epochs=0 would test an untrained model; use at least 1 (or -1 with trainer.max_steps)"
        )
    steps = trainer.get("max_steps")
    if steps is not None and int(steps) == 0:
        raise ConfigError("trainer.max_steps=0 would test an untrained model; use -1 (no limit) or at least 1")
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator} but this machine has no usable GPU (experiment=paper and "
                "trainer=gpu ask for one); add trainer=cpu, or use experiment=main (the CPU-sized job)"
            )


def check_compile(cfg: DictConfig) -> None:
    value = cfg.get("compile", False)
    if not isinstance(value, bool):
        raise ConfigError(
            f"compile must be true or false (got {value!r}); true runs the classifier through torch.compile"
        )


def _explicit(overrides: Sequence[str], key: str) -> str | None:
    for item in overrides:
        name, sep, value = str(item).lstrip("+~").partition("=")
        if sep and name == key:
            return value
    return None


def check_strategy_keys(cfg: DictConfig, overrides: Sequence[str] | None) -> None:
    """Warn when ``teacher_size``/``distill_weight`` is set on the command line but the strategy has no use for it.

    A strategy uses a key when its config has it (conf/strategy/sda.yaml: ``teacher_size: ${teacher_size}``);
    base and se have no teacher. A warning, not a refusal: sweeps like ``strategy=base,sda teacher_size=1,2``
    stay runnable.
    """
    strategy = cfg.get("strategy") or {}
    for key in STRATEGY_KEYS:
        value = _explicit(overrides or [], key)
        if value is not None and key not in strategy:
            name = str(strategy.get("_target_", "?")).rsplit(".", 1)[-1]
            log.warning(
                "%s=%s has no effect: the strategy (%s) has no teacher; it is ignored (use strategy=sda or sdv)",
                key, value, name,
            )


def position_limit(model: Mapping[str, Any]) -> int | None:
    """The longest input (tokens) the model's position embeddings allow, from its config; None if unknown.

    Reads only ``config.json`` (embedded or local models; a hub model whose config is not reachable is
    left to the model loader, which names the problem itself).
    """
    from transformers import AutoConfig

    from sdbert.errors import SourceError
    from sdbert.sources.models import quiet_transformers, resolve_pretrained

    quiet_transformers()
    name = str(model.get("name_or_path"))
    try:
        resolved = resolve_pretrained(name)
        config = AutoConfig.from_pretrained(resolved, local_files_only=True)  # a hub model: its cached config
    except (SourceError, OSError, ValueError):
        return None
    random_init = dict(model.get("random_init") or {})
    positions = random_init.get("max_position_embeddings", getattr(config, "max_position_embeddings", None))
    if positions is None:
        return None
    return int(positions) - POSITION_OFFSET.get(str(getattr(config, "model_type", "")), 0)


def check_max_length(cfg: DictConfig) -> None:
    max_length = cfg.get("dataset", {}).get("max_length")
    if max_length is None or "model" not in cfg:
        return
    limit = position_limit(cfg.model)
    if limit is not None and int(max_length) > limit:
        raise ConfigError(
            f"dataset.max_length={max_length} is longer than the model allows ({recorded_model(cfg.model)}: "
            f"{limit} positions); use dataset.max_length={limit} or less"
        )
