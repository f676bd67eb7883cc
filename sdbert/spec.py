"""RunSpec: what one run is, built once from the composed config after the strategy described itself.

Everything after start-up that needs a run's identity, names or labels takes the RunSpec rather than the
raw config: the resume check (:meth:`RunSpec.checkpoint_identity`, written into every checkpoint), the
W&B name and tags (:func:`sdbert.loggers.wandb_identity`) and the fields of ``metrics.json`` that say
which run it was (:meth:`RunSpec.summary_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbert.checks import recorded_model
from sdbert.strategies.description import SUMMARY_KEY, Description


@dataclass(frozen=True)
class RunSpec:
    """The identity of one run: data, model, labels, method, seeds, where it writes, what it tests."""

    dataset: str
    #: the model as runs record it (``model.label``, else ``name_or_path``; marked when random-init)
    model: str
    #: where the weights come from (``model.name_or_path``)
    model_source: str
    #: the ``model=`` choice of the Hydra job, else the tail of ``name_or_path`` (short, for names)
    model_short: str
    labels: tuple[str, ...]
    strategy: Description
    seed: int
    data_seed: int
    output_dir: Path
    test_ckpt: str

    @classmethod
    def from_config(cls, cfg: Any, description: Description, model_short: str | None = None) -> RunSpec:
        """The spec of the run ``cfg`` composes, with its strategy's ``describe()``."""
        source = str(cfg.model.name_or_path)
        if model_short is None:
            tail = source.replace(":", "/").rstrip("/").rsplit("/", 1)[-1]
            model_short = f"{tail}-random" if cfg.model.get("random_init") else tail
        return cls(
            dataset=str(cfg.dataset.name),
            model=recorded_model(cfg.model),
            model_source=source,
            model_short=model_short,
            labels=tuple(str(n) for n in cfg.dataset.label_names),
            strategy=description,
            seed=int(cfg.seed),
            data_seed=int(cfg.data_seed),
            output_dir=Path(cfg.paths.output_dir),
            test_ckpt=str(cfg.get("test_ckpt", "best")),
        )

    def checkpoint_identity(self) -> dict[str, Any]:
        """What a checkpoint must share with a run to continue it: the method (the strategy's name and every
        key of its description), the model's weights and the label set."""
        return {
            "strategy": self.strategy.name,
            **{f"strategy.{key}": value for key, value in self.strategy.plain().keys.items()},
            "model": self.model_source,
            "labels": list(self.labels),
        }

    def summary_fields(self) -> dict[str, Any]:
        """The fields of ``metrics.json`` that say which run it was."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "model_source": self.model_source,
            SUMMARY_KEY: self.strategy.to_dict(),
            "seed": self.seed,
            "data_seed": self.data_seed,
        }
