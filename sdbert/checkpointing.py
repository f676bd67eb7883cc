"""Checkpoints: written atomically in their own folder, the newest one kept current, and checked before a
run relies on one.

Lightning's ``TorchCheckpointIO`` stages a checkpoint through fsspec's transaction, whose temp file
lives in the system temp directory; when that is another filesystem, the final copy is not atomic and a
kill or a full disk during it leaves a 0-byte or partial ``last.ckpt``. :class:`AtomicCheckpointIO`
writes through :func:`sdbert.io.save_torch` instead (temp file beside the target, then ``os.replace``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sdbert.errors import ConfigError, disk_full_error
from sdbert.io import save_torch

log = logging.getLogger("sdbert")

#: what :func:`sdbert.io.atomic_path` names its temp files: ``.<target name>.tmp-<random>``
TEMP_GLOB = ".{name}.tmp-*"


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files a killed save of ``path`` left beside it (only this file's own, by name)."""
    path = Path(path)
    stale = sorted(path.parent.glob(TEMP_GLOB.format(name=path.name))) if path.parent.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic on the checkpoint's own filesystem.

    A reader (or a resumed run) sees the old file or the new one, never a partial one. Before each save,
    temp files left by an earlier save of the same file that was killed (SIGKILL skips every cleanup)
    are removed. A full disk raises :class:`sdbert.errors.DiskFull` naming the file. Remote paths
    (``s3://`` ...) keep Lightning's own behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        remove_stale_temps(path)
        try:
            save_torch(path, checkpoint)
        except OSError as err:
            full = disk_full_error(err, str(path))
            if full is not None:
                raise full from err
            raise


class _SameStateKey(ModelCheckpoint):
    """Keeps ``ModelCheckpoint``'s state key (class name + triggers), so checkpoints written with Lightning's
    class and with these subclasses restore each other's callback state."""

    @property
    def state_key(self) -> str:
        return ModelCheckpoint.__qualname__ + super().state_key[len(type(self).__qualname__):]


class BestCheckpoint(_SameStateKey):
    """``checkpoints/best.ckpt``: Lightning's ``ModelCheckpoint`` for the best-scoring weights, which, restored
    from a checkpoint whose best file is gone (``resume=`` sets an unreadable one aside), warns and starts
    tracking the best afresh instead of keeping a path to nothing (that the run would later test)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        best = str(self.best_model_path or "")
        if not best or "://" in best or Path(best).is_file():
            return
        log.warning("the best checkpoint %s is gone (score %s); from here on the best is tracked afresh",
                    best, None if self.best_model_score is None else round(float(self.best_model_score), 6))
        import torch

        self.best_model_path, self.best_model_score, self.best_k_models = "", None, {}
        self.kth_best_model_path = ""
        self.kth_value = torch.tensor(-torch.inf if self.mode == "max" else torch.inf)


class LastCheckpoint(_SameStateKey):
    """``checkpoints/last.ckpt``: the newest state, rewritten at every epoch end (after its validation, so
    when training ends too) and, with ``every_n_train_steps=N``, also after every N-th optimizer step.

    A ``ModelCheckpoint`` that keeps one file (``monitor`` None, ``save_top_k`` 1; not ``save_last``, which
    Lightning rewrites only when a top-k checkpoint was saved) saving per epoch; the step saves come on
    top (Lightning's own ``every_n_train_steps`` excludes ``every_n_epochs``). The step save that would
    fall on an epoch's last batch is left to the epoch end, which follows at the same step.
    """

    def __init__(self, dirpath: str | os.PathLike[str], filename: str = "last",
                 every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        if every_n_train_steps is not None and (isinstance(every_n_train_steps, bool)
                                                or not isinstance(every_n_train_steps, int) or every_n_train_steps < 1):
            raise ConfigError(f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps!r}: give a whole "
                              "number of optimizer steps >= 1, or null for epoch ends only")
        defaults = {"monitor": None, "save_top_k": 1, "save_last": False, "save_on_train_epoch_end": True,
                    "enable_version_counter": False}
        super().__init__(dirpath=os.fspath(dirpath), filename=filename, every_n_epochs=1, **{**defaults, **kwargs})
        self.every_n_steps = every_n_train_steps

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.every_n_steps
        if not n or trainer.global_step % n or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


# --------------------------------------------------------------------------- checks before a run


def _ckpt_error(path: Any, what: str) -> ConfigError:
    return ConfigError(f"ckpt_path={path}: {what}")


def load_for_check(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """Open a checkpoint the way Lightning will (``torch.load``, weights only, memory-mapped), or raise one line.

    Missing, empty, truncated and foreign files (random bytes, a pickle that is not a Lightning
    checkpoint) are refused with a :class:`~sdbert.errors.ConfigError` that names the file.
    """
    import torch

    p = Path(path).expanduser()
    if not p.exists():
        raise _ckpt_error(path, "no such file; point ckpt_path at a checkpoint (e.g. <run dir>/checkpoints/last.ckpt) "
                                "or drop it to start from scratch")
    if not p.is_file():
        raise _ckpt_error(path, "is a folder, not a checkpoint file; name the .ckpt file inside it")
    size = p.stat().st_size
    if size == 0:
        raise _ckpt_error(path, "is empty (0 bytes; a save that never finished?); use another checkpoint, "
                                "e.g. best.ckpt beside it")
    try:
        state = torch.load(p, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # truncated zip, random bytes, a pickle of foreign objects ...
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise _ckpt_error(
            path, f"is not a readable checkpoint ({size:,} bytes; {type(err).__name__}: {reason}); it is truncated, "
                  "corrupt or not a PyTorch file: use another checkpoint or drop ckpt_path") from None
    if not isinstance(state, Mapping) or "state_dict" not in state or "pytorch-lightning_version" not in state:
        keys = ", ".join(sorted(map(str, state))[:6]) if isinstance(state, Mapping) else type(state).__name__
        raise _ckpt_error(
            path, f"is not a Lightning checkpoint (found {keys}); resume only from an sdbert run's checkpoints/*.ckpt")
    return state


def check_checkpoint(path: str | os.PathLike[str], module: Any, strategy_state_key: str) -> Mapping[str, Any]:
    """Refuse, in one line, a checkpoint this run cannot resume from: unreadable, or made by another setup;
    returns the loaded (memory-mapped) checkpoint for further checks.

    ``module`` is the freshly built LightningModule: every parameter and buffer of the checkpoint must
    exist in it with the same shape, and the checkpoint must hold the strategy state an sdbert run saves.
    """
    state = load_for_check(path)
    saved = state["state_dict"]
    if strategy_state_key not in state:
        raise _ckpt_error(path, "was not written by sdbert (no teacher-strategy state); resume only from an "
                                "sdbert run's checkpoints/*.ckpt")
    own = module.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        what = "lacks" if missing else "has the extra"
        raise _ckpt_error(
            path, f"does not fit this model: it {what} parameter '{first}' ({len(missing)} missing, "
                  f"{len(unexpected)} unexpected); resume with the model= and dataset= the checkpoint was trained with")
    for key, tensor in own.items():
        got = tuple(getattr(saved[key], "shape", ()))
        if got != tuple(tensor.shape):
            raise _ckpt_error(
                path, f"does not fit this model: '{key}' has shape {list(got)} there and {list(tensor.shape)} here; "
                      "resume with the model= and dataset= the checkpoint was trained with")
    return state
