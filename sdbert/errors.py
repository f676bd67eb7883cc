"""One-line errors for bad input: each names what is wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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


class CacheReadOnly(SdbertError, OSError):
    """Something a run needs is missing from a cache this process cannot write (names the folder and
    ``SDBERT_CACHE``)."""


def _os_error(err: BaseException, codes: tuple[int, ...], known: type[SdbertError]) -> BaseException | None:
    """The first ``known`` error or ``OSError`` with an errno in ``codes`` in ``err``'s ``__cause__``/``__context__``
    chain (libraries often wrap the ``OSError`` in their own exception), else None."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, known) or (isinstance(e, OSError) and e.errno in codes):
            return e
        stack += [e.__cause__, e.__context__]
    return None


def disk_full_error(err: BaseException, where: str) -> DiskFull | None:
    """A one-line :class:`DiskFull` when ``err`` (or what caused it) is ``ENOSPC``/``EDQUOT``, else None.

    ``where`` names what was being written (a folder or file).
    """
    import errno

    found = _os_error(err, (errno.ENOSPC, errno.EDQUOT), DiskFull)
    if found is None or isinstance(found, DiskFull):
        return found
    return DiskFull(
        f"no space left on the disk while writing {where}; free space there, or point the cache "
        "elsewhere (SDBERT_CACHE=/other/disk, paths.cache_dir=...) and the runs (paths.log_dir=...)"
    )


def cache_write_error(err: BaseException, where: str) -> DiskFull | CacheReadOnly | None:
    """A failed write into a cache as one line: :class:`DiskFull`, or :class:`CacheReadOnly` when the cache
    may not be written (``EACCES``/``EPERM``/``EROFS``: a read-only shared cache that lacks what the run
    needs); None for anything else. ``where`` names the cache folder being written."""
    import errno

    full = disk_full_error(err, where)
    if full is not None:
        return full
    found = _os_error(err, (errno.EACCES, errno.EPERM, errno.EROFS), CacheReadOnly)
    if found is None or isinstance(found, CacheReadOnly):
        return found
    why = getattr(found, "strerror", None) or type(found).__name__
    return CacheReadOnly(
        f"{where} cannot be written ({why}) and lacks what this run needs; fill it once from an account that "
        "may write there (the same run, or python -m sdbert.sources.fetch), or point SDBERT_CACHE "
        "(paths.cache_dir=...) at a writable folder"
    )


@contextmanager
def writing_cache(where: str) -> Iterator[None]:
    """Raise a write into the cache folder ``where`` that fails as one line (:func:`cache_write_error`)."""
    try:
        yield
    except OSError as err:
        known = cache_write_error(err, where)
        if known is None or known is err:
            raise
        raise known from err
