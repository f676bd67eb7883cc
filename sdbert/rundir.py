"""Run directories: unique, readable names, and never two runs in one folder.

The default name (conf/hydra/default.yaml) is ``<time>_<strategy>[-K<k>]_<dataset>_seed<seed>_<id>``
(:func:`sdbert.config.run_tag`): runs started in the same second (one per seed, the common case)
differ in their seed, and two identical ones in the per-process id.

A folder *holds a run* when it has a finished run's ``metrics.json`` or any checkpoint. Starting a new
run there is refused in one line (:class:`~sdbert.errors.RunDirInUse`) before Hydra writes anything into
it, unless the run resumes that run: ``resume=auto`` / ``resume=RUN_DIR`` (sdbert.resume), or a
``ckpt_path=<dir>/checkpoints/...`` inside that folder (:func:`is_resuming` decides).

A running run holds its folder's exclusive lock (:func:`run_lock`, ``fcntl.flock`` on ``.sdbert.lock``),
so two runs started together in one folder cannot both run there: the second is refused in one line.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sdbert.config import resume_requested
from sdbert.errors import RunDirInUse
from sdbert.paths import CHECKPOINT_DIR, SUMMARY_FILE


def holds_run(folder: str | os.PathLike[str]) -> str | None:
    """What shows that ``folder`` already holds a run (a finished ``metrics.json``, checkpoints), else None.

    A ``metrics.json`` with ``"status": "failed"`` and no checkpoints does not count: the run stopped at
    a bad input before it made anything, and the folder may be reused.
    """
    folder = Path(folder)
    ckpts = sorted((folder / CHECKPOINT_DIR).glob("*.ckpt")) if (folder / CHECKPOINT_DIR).is_dir() else []
    if ckpts:
        return f"checkpoints ({', '.join(p.name for p in ckpts[:3])})"
    summary = folder / SUMMARY_FILE
    if summary.is_file():
        try:
            status = json.loads(summary.read_text(encoding="utf-8")).get("status")
        except (OSError, ValueError, AttributeError):
            status = "unreadable"
        if status != "failed":
            return f"a {SUMMARY_FILE} (status {status})"
    return None


def is_resuming(folder: str | os.PathLike[str], ckpt_path: Any, resume: Any = None) -> bool:
    """Whether this run continues the one in ``folder`` (``resume`` set, or ``ckpt_path`` inside ``folder``),
    so the folder is its own."""
    if resume_requested(resume):
        return True
    if not ckpt_path:
        return False
    try:
        return Path(folder).resolve() in Path(str(ckpt_path)).expanduser().resolve().parents
    except OSError:
        return False


def check_fresh(folder: str | os.PathLike[str], ckpt_path: Any = None, resume: Any = None) -> None:
    """Raise :class:`RunDirInUse` when ``folder`` holds another run and this run does not resume it."""
    held = holds_run(folder)
    if held is None or is_resuming(folder, ckpt_path, resume):
        return
    raise RunDirInUse(
        f"run directory {folder} already holds a run ({held}); start this one elsewhere (drop hydra.run.dir for "
        "a fresh folder) or continue that run with resume=<that dir>"
    )


#: the file whose exclusive ``flock`` a running run holds in its folder
LOCK_FILE = ".sdbert.lock"
#: the locks this process holds: resolved folder -> (file descriptor, how many holders)
_HELD: dict[Path, tuple[int, int]] = {}


def _rank_zero() -> bool:
    """Whether this process is rank 0 (ranks >= 1 of a data-parallel run share rank 0's folder and lock)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def acquire_run_lock(folder: str | os.PathLike[str]) -> bool:
    """Take ``folder``'s exclusive run lock for this process (re-entrant: counted), creating the folder;
    :class:`RunDirInUse` naming the holder's process when another process holds it. Returns whether a lock
    was taken (False on ranks >= 1 and where the filesystem has no locks)."""
    import fcntl

    if not _rank_zero():
        return False
    key = Path(folder).resolve()
    if key in _HELD:
        fd, holders = _HELD[key]
        _HELD[key] = (fd, holders + 1)
        return True
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
            return False  # no locks on this filesystem: the checks of holds_run still apply
        raise RunDirInUse(
            f"run directory {folder} is in use by a run still going (process {holder}); start this one "
            "elsewhere (drop hydra.run.dir for a fresh folder) or wait for that run to finish"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = (fd, 1)
    return True


def release_run_lock(folder: str | os.PathLike[str]) -> None:
    """Give back one hold of ``folder``'s lock taken by :func:`acquire_run_lock` (the last one unlocks)."""
    key = Path(folder).resolve()
    if key not in _HELD:
        return
    fd, holders = _HELD.pop(key)
    if holders > 1:
        _HELD[key] = (fd, holders - 1)
    else:
        os.close(fd)  # closing the descriptor drops the flock


@contextmanager
def run_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``folder``'s exclusive run lock for the block (:func:`acquire_run_lock`)."""
    taken = acquire_run_lock(folder)
    try:
        yield
    finally:
        if taken:
            release_run_lock(folder)


def _select(config: DictConfig, key: str) -> str | None:
    try:
        value = OmegaConf.select(config, key, throw_on_missing=True)
    except Exception:
        return None
    return None if value is None else str(value)


try:  # Hydra is a dependency, but keep this module importable on its own
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[assignment,misc]


class FreshRunDir(Callback):  # type: ignore[misc,valid-type]
    """Hydra callback (conf/hydra/default.yaml): refuse a run whose folder holds another run, or is locked
    by one still going (:func:`run_lock`; this process then holds the lock until it ends).

    It runs before Hydra writes ``.hydra/`` into the folder, so the old run's config stays intact. The
    refusal is one line on stderr and exit status 1; nothing is written.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = _select(config, "hydra.run.dir")
        if folder is not None:
            self._refuse_if_held(folder, config.get("ckpt_path"), config.get("resume"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = _select(config, "hydra.sweep.dir")
        if folder is None or not Path(folder).is_dir() or is_resuming(folder, None, config.get("resume")):
            return  # resume=auto: finished jobs are skipped, cut-off ones continue (sdbert.resume)
        held = [str(job) for job in sorted(Path(folder).iterdir()) if job.is_dir() and holds_run(job)]
        if held:
            print(
                f"sdbert: error: sweep directory {folder} already holds runs ({', '.join(held[:3])}); drop "
                "hydra.sweep.dir for a fresh folder",
                file=sys.stderr,
            )
            raise SystemExit(1)

    @staticmethod
    def _refuse_if_held(folder: str, ckpt_path: Any, resume: Any = None) -> None:
        try:
            check_fresh(folder, ckpt_path, resume)
            acquire_run_lock(folder)  # held until this process ends: Hydra writes .hydra/ next
        except RunDirInUse as err:
            print(f"sdbert: error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
