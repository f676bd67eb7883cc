"""A trained sdbert model back from disk: a run directory or one of its checkpoints → the run's config and
its LightningModule (built by :mod:`sdbert.factory`, weights and strategy state loaded, eval mode).

Shared by prediction (``sdbert.predict``) and export (``sdbert.export``). A checkpoint is read together
with the run directory it lives in (``<run>/checkpoints/<name>.ckpt``): the model and dataset config come
from the run's ``.hydra/config.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sdbert import factory
from sdbert.errors import SdbertError
from sdbert.module import STRATEGY_STATE_KEY, SelfDistillationModule
from sdbert.paths import CHECKPOINT_DIR, CONFIG_FILE
from sdbert.rundir import RunDir, RunDirError


class TrainedModelError(SdbertError, ValueError):
    """A path is not an sdbert run directory or checkpoint, or the model cannot be used as asked."""


@dataclass
class Trained:
    """A run's resolved config, its module (eval mode) and where they came from."""

    cfg: DictConfig
    module: SelfDistillationModule
    run_dir: Path
    checkpoint: Path
    summary: dict[str, Any]

    @property
    def label_names(self) -> list[str]:
        return list(self.module.label_names)

    @property
    def text_fields(self) -> list[str]:
        return [str(f) for f in self.cfg.dataset.text_fields]

    @property
    def max_length(self) -> int:
        return int(self.cfg.dataset.max_length)

    def model(self, name: str) -> Any:
        """The ``torch.nn.Module`` of evaluated model ``name`` (``reported``, ``teacher``, ``student``): one the
        strategy's ``describe()`` lists as exportable."""
        strategy = self.module.strategy
        description = strategy.describe()
        if name not in description.models:
            raise TrainedModelError(
                f"strategy {description.name} has no model '{name}' (it evaluates: {', '.join(description.models)}); "
                "use --model reported"
            )
        found = strategy.eval_model(self.module.model, name) if name in description.exportable else None
        if found is None:
            raise TrainedModelError(
                f"strategy {description.name}'s '{name}' is not one set of weights (it exports: "
                f"{', '.join(description.exportable) or 'nothing'}); export the reported model (--model reported)"
            )
        return found.eval()


def _run_and_checkpoint(source: Path) -> tuple[Path, Path | None]:
    if source.is_dir():
        return source, None
    if source.is_file():
        run_dir = source.resolve().parent.parent
        if source.resolve().parent.name != CHECKPOINT_DIR or not (run_dir / CONFIG_FILE).is_file():
            raise TrainedModelError(
                f"{source}: a checkpoint is read with its run directory (<run>/{CHECKPOINT_DIR}/<name>.ckpt next "
                f"to <run>/{CONFIG_FILE}); pass the run directory, or keep the checkpoint inside it"
            )
        return run_dir, source
    raise TrainedModelError(f"{source} does not exist; pass a run directory (logs/train/runs/<time>) or a checkpoint")


def _run_config(folder: RunDir) -> DictConfig:
    """The run's config, resolved, with ``paths.output_dir`` pointing at where the run now lies."""
    try:
        cfg = folder.config.copy()
    except RunDirError as err:
        raise TrainedModelError(str(err)) from None
    run_dir, config_file = folder.path, folder.config_file
    with open_dict(cfg):
        if "paths" in cfg:
            cfg.paths.output_dir = str(run_dir)
        for key in ("hydra", "logger", "callbacks"):  # where it logged does not matter here
            cfg.pop(key, None)
    try:
        OmegaConf.resolve(cfg)
    except Exception as err:
        raise TrainedModelError(f"{config_file} does not resolve ({str(err).splitlines()[0]})") from None
    return cfg


def _checkpoint(folder: RunDir, which: str) -> Path:
    """``tested`` (the weights the test saw: best or last), ``best`` or ``last``."""
    try:
        return folder.checkpoint(which)  # type: ignore[arg-type]
    except RunDirError as err:
        raise TrainedModelError(str(err)) from None


def load_trained(source: str | os.PathLike[str], checkpoint: str = "tested", device: Any = "cpu") -> Trained:
    """The trained module of a run directory (its ``checkpoint``: tested, best or last) or of a checkpoint file,
    on ``device``. The strategy's state (SE's average, SDA's teacher) is placed there too: do not move the
    module afterwards (a strategy set up on another device starts afresh)."""
    import torch

    run_dir, ckpt = _run_and_checkpoint(Path(source))
    folder = RunDir(run_dir)
    cfg = _run_config(folder)
    summary = dict(folder.summary.data)
    ckpt = ckpt or _checkpoint(folder, checkpoint)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TrainedModelError(f"{ckpt} is not a readable PyTorch checkpoint ({reason})") from None
    if not isinstance(state, dict) or "state_dict" not in state or STRATEGY_STATE_KEY not in state:
        raise TrainedModelError(
            f"{ckpt} is not an sdbert checkpoint (no 'state_dict' and '{STRATEGY_STATE_KEY}'); pass a checkpoint "
            "written by train.py (<run>/checkpoints/best.ckpt or last.ckpt)"
        )
    module = factory.build_module(cfg, factory.build_strategy(cfg))
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise TrainedModelError(f"{ckpt} does not fit the model of {run_dir / CONFIG_FILE} ({first})") from None
    module.on_load_checkpoint(state)  # the strategy keeps it until setup allocates its tensors
    module.to(device)
    module.strategy.setup(module.model)
    module.eval()
    return Trained(cfg=cfg, module=module, run_dir=run_dir, checkpoint=Path(ckpt), summary=summary)
