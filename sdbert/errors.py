"""One-line errors for bad input: each names what is wrong and how to fix it."""

from __future__ import annotations


class SdbertError(Exception):
    """Base class: ``str(err)`` is a single line meant for the user, not a traceback."""


class ConfigError(SdbertError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class DataError(SdbertError, ValueError):
    """A dataset row, column or split is unusable (names dataset, split, column and row)."""


class SourceError(SdbertError, RuntimeError):
    """A model or data source could not be fetched, verified or reached."""


class TrainingDiverged(SdbertError, RuntimeError):
    """The loss or the logits left the configured bounds during training."""


class RunDirInUse(ConfigError):
    """The run directory already holds another run (nothing is written into it)."""


class DiskFull(SdbertError, OSError):
    """A write failed because the disk is full (names the path and how to free or move it)."""


def disk_full_error(err: BaseException, where: str) -> DiskFull | None:
    """A one-line :class:`DiskFull` when ``err`` (or what caused it) is ``ENOSPC``/``EDQUOT``, else None.

    ``where`` names what was being written (a folder or file); libraries often wrap the ``OSError`` in
    their own exception, so the whole ``__cause__``/``__context__`` chain is searched.
    """
    import errno

    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DiskFull):
            return e
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(
                f"no space left on the disk while writing {where}; free space there, or point the cache "
                "elsewhere (SDBERT_CACHE=/other/disk, paths.cache_dir=...) and the runs (paths.log_dir=...)"
            )
        stack += [e.__cause__, e.__context__]
    return None
