"""Fine-tune a BERT-family encoder with sdbert: ``python train.py strategy=sdv teacher_size=5 dataset=imdb``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import sdbert  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one job; returns the reported test accuracy (used by Hydra sweepers)."""
    from sdbert.run import main_job

    summary = main_job(cfg)
    if summary is None:
        return None
    accs = [v for k, v in summary["test"].items() if k.endswith("/acc") and k.count("/") == 1]
    return sum(accs) / len(accs) if accs else None


if __name__ == "__main__":
    main()
