"""Run directories: one folder per run (:class:`RunDir`), unique readable names, never two runs in one folder.

:class:`RunDir` owns what a run folder holds: its paths, its config (loaded once), its summary
(``metrics.json``, typed: :class:`RunSummary`, status ``ok | failed | interrupted | running``), its
checkpoints (``checkpoint("best" | "last")``) and whether it holds a run. Everything that reads a run
folder back goes through it.

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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from sdbert.config import resume_requested
from sdbert.errors import RunDirInUse, SdbertError
from sdbert.paths import CHECKPOINT_DIR, CONFIG_FILE, OVERRIDES_FILE, PREDICTIONS_DIR, SUMMARY_FILE

#: what became of a run: finished, stopped at an error, stopped by a signal (resumable), or no summary yet
#: (still running, or killed before it could write one)
Status = Literal["ok", "failed", "interrupted", "running"]
STATUSES: tuple[Status, ...] = ("ok", "failed", "interrupted", "running")
Which = Literal["best", "last"]


class RunDirError(SdbertError, ValueError):
    """A path is not a run or sweep directory, or a run lacks what is asked of it."""


@dataclass(frozen=True)
class RunSummary:
    """A run's ``metrics.json``: its status and what it recorded (``data``; empty while running)."""

    status: Status
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> str | None:
        """Why the run is not finished (None when it is)."""
        if self.status == "running":
            return f"no {SUMMARY_FILE}: the job crashed, was killed or is still running"
        if self.status in ("failed", "interrupted"):
            return str(self.data.get("error") or f"{self.status} without a message")
        return None

    @property
    def strategy(self) -> Mapping[str, Any] | None:
        """The strategy's ``describe()`` as written (``sdbert.strategies.Description.from_dict`` reads it)."""
        value = self.data.get("strategy")
        return value if isinstance(value, Mapping) else None

    @property
    def test(self) -> Mapping[str, float]:
        return dict(self.data.get("test") or {})

    @property
    def val(self) -> Mapping[str, float]:
        return dict(self.data.get("val") or {})

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        if not path.is_file():
            return cls("running")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            return cls("failed", {"error": f"unreadable {SUMMARY_FILE} ({err})"})
        if not isinstance(data, dict):
            return cls("failed", {"error": f"{SUMMARY_FILE} holds no mapping"})
        status = data.get("status")
        return cls(status if status in STATUSES else "failed", data)


class RunDir:
    """One run folder (a Hydra output directory). Reads are lazy and each file is read once."""

    def __init__(self, path: str | os.PathLike[str], config: DictConfig | None = None,
                 summary: RunSummary | None = None) -> None:
        """``config`` / ``summary``: use these instead of reading the folder's files (tests, tools)."""
        self.path = Path(path)
        if config is not None:
            self.__dict__["config"] = config
        if summary is not None:
            self.__dict__["summary"] = summary

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths --------------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def predictions_file(self, test_name: str) -> Path:
        return self.path / PREDICTIONS_DIR / f"{test_name}.pt"

    @property
    def is_run(self) -> bool:
        """Whether train.py wrote a config here."""
        return self.config_file.is_file()

    # -- what it holds ------------------------------------------------------------------------------
    @cached_property
    def config(self) -> DictConfig:
        """The run's ``.hydra/config.yaml`` as saved (unresolved)."""
        if not self.is_run:
            raise RunDirError(f"{self.path} is not a run directory (no {CONFIG_FILE}); pass train.py output "
                              "directories (logs/train/runs/<time>)")
        config = OmegaConf.load(self.config_file)
        if not isinstance(config, DictConfig):
            raise RunDirError(f"{self.config_file} holds no mapping; it is not a config train.py wrote")
        return config

    @cached_property
    def overrides(self) -> list[str]:
        """The command-line overrides the run was started with."""
        path = self.path / OVERRIDES_FILE
        return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []

    @cached_property
    def summary(self) -> RunSummary:
        return RunSummary.read(self.summary_file)

    def reload(self) -> RunDir:
        """A fresh view of the folder (after the run wrote to it)."""
        return RunDir(self.path)

    def checkpoints(self) -> list[Path]:
        """Every checkpoint file of the run (``checkpoints/*.ckpt``), by name."""
        return sorted(self.checkpoint_dir.glob("*.ckpt")) if self.checkpoint_dir.is_dir() else []

    def checkpoint(self, which: Which | Literal["tested"] = "tested") -> Path:
        """``best`` (by validation accuracy), ``last``, or ``tested`` (the one the test saw: best or last)."""
        if which == "tested":
            tested = str(self.summary.data.get("tested_checkpoint") or self.config.get("test_ckpt") or "best")
            which = "last" if tested == "last" else "best"
        if which not in ("best", "last"):
            raise RunDirError(f"checkpoint must be 'tested', 'best' or 'last' (got {which!r})")
        path = self.checkpoint_dir / f"{which}.ckpt"
        if not path.is_file():
            raise RunDirError(f"run {self.path} has no {CHECKPOINT_DIR}/{which}.ckpt (did it finish training?)")
        return path

    def holds_a_run(self) -> str | None:
        """What shows that the folder already holds a run (a ``metrics.json``, checkpoints), else None.

        A ``metrics.json`` with ``"status": "failed"`` and no checkpoints does not count: the run stopped at
        a bad input before it made anything, and the folder may be reused.
        """
        ckpts = self.checkpoints()
        if ckpts:
            return f"checkpoints ({', '.join(p.name for p in ckpts[:3])})"
        if self.summary_file.is_file():
            status = self.summary.data.get("status", "unreadable")
            if status != "failed":
                return f"a {SUMMARY_FILE} (status {status})"
        return None


def holds_run(folder: str | os.PathLike[str]) -> str | None:
    """:meth:`RunDir.holds_a_run` of ``folder``."""
    return RunDir(folder).holds_a_run()


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


def rank_zero() -> bool:
    """Whether this process is global rank 0 (ranks >= 1 of a data-parallel run share rank 0's folder and
    lock). Lightning sets ``rank_zero_only.rank`` on import; it is an attribute its type does not declare."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0)) == 0


def acquire_run_lock(folder: str | os.PathLike[str]) -> bool:
    """Take ``folder``'s exclusive run lock for this process (re-entrant: counted), creating the folder;
    :class:`RunDirInUse` naming the holder's process when another process holds it. Returns whether a lock
    was taken (False on ranks >= 1 and where the filesystem has no locks)."""
    import fcntl

    if not rank_zero():
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


class FreshRunDir(Callback):
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
                f"sdbert: error: sweep directory {folder} already holds runs ({', '.join(held[:3])}); add "
                "resume=auto to skip its finished jobs and continue the cut-off ones, or drop hydra.sweep.dir for a "
                "fresh folder",
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
