"""Fine-tune a BERT-family encoder with sdbert: ``python train.py strategy=sdv teacher_size=5 dataset=imdb``.

``python train.py --help`` explains the main keys and groups (conf/hydra/help/sdbert.yaml).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import sdbert  # noqa: F401  (registers the config resolvers)
from sdbert.errors import SdbertError


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one job; returns ``cfg.optimized_metric`` (default: the best validation accuracy) for Hydra's
    sweepers (``hparams_search=…``), or None when the job failed with a one-line error in a multirun."""
    from sdbert.console import quiet_console
    from sdbert.run import main_job
    from sdbert.search import objective

    hooks = None
    if cfg.get("export", False):
        from sdbert.export import ExportAfterTest

        hooks = ExportAfterTest()
    quiet_console()
    summary = main_job(cfg, hooks)
    if summary is None:
        return None
    try:
        return objective(summary, str(cfg.get("optimized_metric") or "val/acc_best"))
    except SdbertError as err:  # the run itself is fine; only a sweeper needs the value
        print(f"sdbert: warning: no objective for a sweeper: {err}", file=sys.stderr)
        return None


if __name__ == "__main__":
    from sdbert.config import non_ascii_hint

    hint = non_ascii_hint(sys.argv[1:])
    if hint is not None:
        print(f"sdbert: error: {hint}", file=sys.stderr)
        raise SystemExit(1)
    main()
