"""Run directories: unique, readable names, and never two runs in one folder.

The default name (conf/hydra/default.yaml) is ``<time>_<strategy>[-K<k>]_<dataset>_seed<seed>_<id>``
(:func:`sdbert.config.run_tag`): runs started in the same second (one per seed, the common case)
differ in their seed, and two identical ones in the per-process id.

A folder *holds a run* when it has a finished run's ``metrics.json`` or any checkpoint. Starting a new
run there is refused in one line (:class:`~sdbert.errors.RunDirInUse`) before Hydra writes anything into
it, unless the run resumes that run: ``resume=auto`` / ``resume=RUN_DIR`` (sdbert.resume), or a
``ckpt_path=<dir>/checkpoints/...`` inside that folder (:func:`is_resuming` decides).
"""

from __future__ import annotations

import json
import os
import sys
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
    """Hydra callback (conf/hydra/default.yaml): refuse a run whose folder holds another run.

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
        except RunDirInUse as err:
            print(f"sdbert: error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
