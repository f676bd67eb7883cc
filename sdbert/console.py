"""One copy of each console line: Lightning's own log handler removed (Hydra's prints every record), and
Lightning's advertising tip dropped.

Lightning adds a ``StreamHandler`` to ``lightning.pytorch`` / ``lightning.fabric`` when it is imported
before logging is configured (always, under ``@hydra.main``), and keeps the records from propagating;
Hydra then configures the root logger, and every Lightning line appeared twice: ``INFO: …`` and
``[time][lightning…][INFO] - …``. :func:`quiet_console` runs once Hydra has configured logging.
"""

from __future__ import annotations

import logging
import warnings

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
#: records whose message starts with one of these are dropped (advertising, not information about the run)
DROPPED_PREFIXES = ("💡 Tip:",)


class DropAdvertising(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DROPPED_PREFIXES)


def quiet_console() -> None:
    """Let Lightning's records reach the root logger's (Hydra's) handlers only, without the tip (idempotent);
    also silence the deprecation warnings third-party code raises on every run (not ours to fix): Lightning 2.6
    against torch 2.13, and torchdata's StatefulDataLoader calling torch.set_vital."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated", category=UserWarning)
    root_has_handlers = logging.getLogger().hasHandlers()
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if root_has_handlers:
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:  # Lightning's own; file handlers stay
                    logger.removeHandler(handler)
            logger.propagate = True
        for holder in (logger, *logger.handlers):
            if not any(isinstance(f, DropAdvertising) for f in holder.filters):
                holder.addFilter(DropAdvertising())
    # records are filtered where they are created too: logger filters do not apply to child loggers' records
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropAdvertising) for f in logger.filters):
            logger.addFilter(DropAdvertising())
