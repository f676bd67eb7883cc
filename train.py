"""Fine-tune a BERT-family encoder with sdbert: ``python train.py strategy=sdv teacher_size=5 dataset=imdb``.

``python train.py --help`` explains the main keys and groups (conf/hydra/help/sdbert.yaml).
"""

from __future__ import annotations

import signal
import sys


def _stop(signum: int, frame: object) -> None:
    """SIGTERM / SIGINT outside a run (start-up, between a sweep's jobs): exit 128 + signal, one line;
    during a run sdbert.resume's handlers take over and record the stop in metrics.json."""
    print(f"sdbert: interrupted by {signal.Signals(signum).name} outside a run; nothing to record", file=sys.stderr)
    raise SystemExit(128 + signum)


for _signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signum, _stop)

import hydra  # noqa: E402  (after the handlers: importing torch takes seconds)
from omegaconf import DictConfig  # noqa: E402

import sdbert  # noqa: F401,E402  (registers the config resolvers)
from sdbert.errors import SdbertError  # noqa: E402


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
