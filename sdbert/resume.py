"""Runs that survive preemption: stop on a signal with a checkpoint, and continue exactly where they stopped.

* :class:`Preemption` (a callback): SIGTERM / SIGINT (and SLURM's pre-emption SIGTERM) ask the run to
  stop; it finishes the current optimizer step's accumulation window, writes ``checkpoints/last.ckpt``
  and raises :class:`RunInterrupted`. ``sdbert.run`` records ``"status": "interrupted"`` and exits
  with 128 + the signal number, so a scheduler sees a stopped job, not a finished one.
* :func:`prepare`: ``resume=auto`` (this job's own directory, e.g. a fixed sweep directory) or
  ``resume=RUN_DIR`` continue a run from its newest checkpoint, in its own folder, with its own saved
  ``.hydra/config.yaml`` plus only the overrides given now; a finished run (``metrics.json`` with
  status ok) is not run again. A checkpoint made for another strategy, K, model or label set is
  refused in one line naming both sides (:class:`RunIdentity` writes what identifies a run into every
  checkpoint).

Exactness comes from the pieces the run already has: the data order is a stateful sampler under a
``StatefulDataLoader`` (its position is in the checkpoint), dropout is seeded per (seed, epoch, batch),
the teacher state is the strategy's ``state_dict``, and Lightning's ``ModelCheckpoint`` keeps its
best score and path in the checkpoint's callback states.
"""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from sdbert.checkpointing import load_for_check
from sdbert.config import resume_requested
from sdbert.errors import ConfigError
from sdbert.io import write_text
from sdbert.paths import CONFIG_FILE
from sdbert.rundir import RunDir, rank_zero
from sdbert.signals import RunInterrupted

log = logging.getLogger("sdbert")

#: the key of a checkpoint's run identity (the method, model, labels)
IDENTITY_KEY = "sdbert_run"
#: where Hydra writes a resumed job's own view of its config (the run's ``.hydra/config.yaml`` stays)
RESUMED_SUBDIR = ".hydra/resumed"
LAST_CHECKPOINT = "last.ckpt"


class Preemption(L.Callback):
    """Stop cleanly on SIGTERM / SIGINT: finish the optimizer step, save, raise :class:`RunInterrupted`.

    The handlers are installed when training starts (after Lightning's own, which they replace for
    SIGTERM: Lightning would stop in the middle of a gradient-accumulation window) and the previous
    ones are put back when training ends. A second SIGINT stops at once (KeyboardInterrupt). The stop
    happens at the end of the first training batch that completes an optimizer step, so the saved
    state is a time-step boundary (at an epoch's last step: after that epoch's validation); with
    several processes the ranks agree on it first. A signal that arrives after the last training batch
    stops the run when training ends (before the test). A second SIGINT (Ctrl-C twice) stops at once,
    without a new checkpoint. Outside training, :func:`sdbert.signals.stop_on_signals` stops the run at once.
    """

    def __init__(self, dirpath: str | Path, filename: str = LAST_CHECKPOINT) -> None:
        self.path = Path(dirpath) / filename
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._step_at_start = -1
        self._trainer: L.Trainer | None = None

    def request_stop(self, signum: int) -> None:
        """What the handlers do; callable directly (tests, other schedulers' hooks)."""
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise RunInterrupted(signum, None, self._trainer.global_step if self._trainer is not None else 0)
        self.signum = int(signum)

    def _handler(self, signum: int, frame: Any) -> None:
        self.request_stop(signum)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer = trainer
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled on the main thread
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handler)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._step_at_start = trainer.global_step

    def _requested(self, trainer: L.Trainer) -> bool:
        wanted = self.signum is not None
        if trainer.world_size > 1:  # every rank must stop at the same step (a collective per step)
            wanted = bool(trainer.strategy.reduce_boolean_decision(wanted, all=False))
            if wanted and self.signum is None:
                self.signum = int(signal.SIGTERM)
        return wanted

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kw: Any) -> None:
        if trainer.global_step == self._step_at_start:
            return  # inside an accumulation window
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch's validation comes first (on_train_epoch_end stops)
        if self._requested(trainer):
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's ModelCheckpoints run after every other callback: let them save this epoch's end
        # (best.ckpt, last.ckpt with the best score in its state), then stop before the next epoch.
        if self._requested(trainer):
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        try:
            if self._requested(trainer):
                # last_checkpoint (conf/callbacks/default.yaml) wrote this epoch's end; save only if it did not
                current = self.path.is_file() and checkpoint_step(self.path) == trainer.global_step
                if not trainer.strategy.broadcast(current, src=0):
                    trainer.save_checkpoint(self.path)
                raise RunInterrupted(self.signum or signal.SIGTERM, str(self.path), trainer.global_step)
        finally:
            self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def _stop(self, trainer: L.Trainer) -> None:
        assert self.signum is not None
        trainer.save_checkpoint(self.path)
        raise RunInterrupted(self.signum, str(self.path), trainer.global_step)


@contextmanager
def quiet_restore_warnings() -> Iterator[None]:
    """Hide Lightning's warnings that the run's own folders are not empty (the CSV log's "will be deleted",
    the checkpoint folder's): a run continued in place restores those folders (:func:`set_aside_log`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(Experiment logs|Checkpoint) directory .* exists and is not empty")
        yield


def time_spent(run_dir: Path) -> float:
    """Wall time the earlier attempts of a stopped run took (its ``metrics.json``'s ``wall_time_s``), else 0."""
    summary = RunDir(run_dir).summary
    try:
        return float(summary.data.get("wall_time_s") or 0.0) if not summary.ok else 0.0
    except (ValueError, TypeError):
        return 0.0


# -- what a checkpoint was made for ------------------------------------------------------------------


class RunIdentity(L.Callback):
    """Writes the run's identity (``RunSpec.checkpoint_identity``) into every checkpoint (key ``sdbert_run``),
    and keeps the latest validation metrics in its callback state, so a run resumed after its last validation
    still reports them."""

    def __init__(self, identity: dict[str, Any]) -> None:
        self.identity = dict(identity)
        self.last_val: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.last_val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def state_dict(self) -> dict[str, Any]:
        return {"last_val": dict(self.last_val)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_val = dict(state_dict.get("last_val", {}))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[IDENTITY_KEY] = self.identity


def check_fits(path: str | Path, checkpoint: Mapping[str, Any], identity: dict[str, Any]) -> None:
    """Refuse (one line) a checkpoint (loaded from ``path``) whose run identity differs from this config's."""
    saved = checkpoint.get(IDENTITY_KEY)
    if saved is None:
        return  # made before identities were recorded: Lightning's own loading reports a misfit
    keys = [*identity, *(k for k in saved if k not in identity)]
    diffs = [f"{k} {saved.get(k)!r} vs {identity.get(k)!r}" for k in keys if saved.get(k) != identity.get(k)]
    if diffs:
        raise ConfigError(
            f"checkpoint {path} does not fit this config (checkpoint vs config: {'; '.join(diffs)}); "
            "resume with the run's own settings, or start a new run"
        )


# -- resume=auto / resume=RUN_DIR --------------------------------------------------------------------


def checkpoint_step(path: str | Path) -> int:
    """The optimizer steps a checkpoint was taken after."""
    import torch

    return int(torch.load(str(path), map_location="cpu", mmap=True, weights_only=False).get("global_step", 0))


#: what :func:`newest_checkpoint` appends to the name of a checkpoint it cannot read (kept for inspection)
UNREADABLE_SUFFIX = ".unreadable"


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The readable checkpoint of ``run_dir`` with the most optimizer steps (``last.ckpt`` on a tie).

    An unreadable one (truncated, corrupt) is named in a warning and renamed ``<name>.unreadable``, so
    nothing later loads it (a best checkpoint that is gone is tracked afresh: sdbert.checkpointing).
    """
    candidates = RunDir(run_dir).checkpoints()
    candidates += sorted(run_dir.glob("hpc_ckpt_*.ckpt"))  # SLURMEnvironment(auto_requeue=True) saves these
    best: tuple[int, int, Path] | None = None
    for path in candidates:
        try:
            state = load_for_check(path)
        except ConfigError:
            aside = path.with_name(path.name + UNREADABLE_SUFFIX)
            size = path.stat().st_size
            if rank_zero():  # under DDP every rank looks; one renames
                path.replace(aside)
            log.warning("resume: checkpoint %s is unreadable (%s bytes: truncated or corrupt); set aside as %s, "
                        "continuing from the newest readable checkpoint", path, f"{size:,}", aside.name)
            continue
        key = (int(state.get("global_step", 0)), int(path.name == LAST_CHECKPOINT), path)
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best is not None else None


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``metrics.json`` if it finished (status ok), else None."""
    summary = RunDir(run_dir).summary
    return dict(summary.data) if summary.ok else None


def _in_hydra() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def _current_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if _in_hydra() else []


def merge_overrides(saved: DictConfig, overrides: Sequence[str], choices: dict[str, Any]) -> DictConfig:
    """``saved`` with the key=value ``overrides`` applied; ``resume`` and ``hydra.*`` are skipped, and a
    config-group override (``model=tiny``) must name the group's saved choice (else one-line refusal)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = saved.copy()
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra") or key.startswith("hydra/"):
            continue
        if key in choices or "/" in key:
            value = override.value()
            if str(value) != str(choices.get(key)):
                raise ConfigError(
                    f"resume: {key}={value} differs from the run's {key}={choices.get(key)}; a run continues "
                    "with its own config groups (start a new run for another one)"
                )
            continue
        if override.is_delete():
            OmegaConf.update(cfg, key, None, force_add=True)
            continue
        with open_dict(cfg):
            OmegaConf.update(cfg, key, override.value(), merge=False, force_add=True)
    return cfg


def prepare(cfg: DictConfig) -> tuple[DictConfig, str | None, dict[str, Any] | None]:
    """(config to run, checkpoint to continue from or None, summary of an already finished run or None).

    ``resume`` null: ``cfg`` and its ``ckpt_path`` as given. ``auto``: this job's output directory;
    ``RUN_DIR``: that run's directory (``conf/hydra`` points Hydra's run directory there). Either way the
    directory's ``.hydra/config.yaml`` plus this command's overrides is the config (and is written back
    there), its newest checkpoint is the start, and a finished run is returned as is.
    """
    mode = cfg.get("resume")
    if not resume_requested(mode):
        return cfg, cfg.get("ckpt_path"), None
    run_dir = Path(cfg.paths.output_dir) if str(mode) == "auto" else Path(str(mode)).expanduser()
    # under Hydra the run's config was there before this job iff Hydra wrote this job's to .hydra/resumed
    existed = (run_dir / RESUMED_SUBDIR).is_dir() if _in_hydra() else (run_dir / CONFIG_FILE).is_file()
    if str(mode) != "auto" and not existed:
        raise ConfigError(
            f"resume={mode}: not the folder of an earlier run (it had no {CONFIG_FILE}); pass a run's folder "
            "(logs/train/runs/<time>) or resume=auto"
        )
    done = finished_summary(run_dir)
    if done is not None:
        return cfg, None, done
    saved_file = run_dir / CONFIG_FILE
    if saved_file.is_file() and (run_dir / RESUMED_SUBDIR).is_dir():
        # Hydra wrote this job's composition to .hydra/resumed: the run's own config is still in place
        saved = RunDir(run_dir).config
        hydra_file = run_dir / ".hydra" / "hydra.yaml"
        choices: dict[str, Any] = {}
        if hydra_file.is_file():
            hydra_yaml = cast("dict[str, Any]", OmegaConf.to_container(OmegaConf.load(hydra_file)))
            choices = dict(hydra_yaml.get("hydra", {}).get("runtime", {}).get("choices", {}) or {})
        merged = merge_overrides(saved, _current_overrides(), choices)
        with open_dict(merged):
            merged.resume = None
            merged.paths.output_dir = str(run_dir)
        if rank_zero():  # under DDP every rank runs this; the run's config is written once
            write_text(saved_file, OmegaConf.to_yaml(merged))
        cfg = merged
    else:
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
    ckpt = newest_checkpoint(run_dir)
    return cfg, str(ckpt) if ckpt is not None else cfg.get("ckpt_path"), None


# -- the CSV log across a resume ---------------------------------------------------------------------

#: Lightning's CSVLogger file in a run directory (conf/logger/csv.yaml)
CSV_LOG = Path("csv") / "metrics.csv"
_EARLIER = ".before-resume.csv"


def set_aside_log(run_dir: Path) -> Path | None:
    """Move ``csv/metrics.csv`` out of the way before a resumed run starts (Lightning's CSVLogger deletes
    it); :func:`restore_log` puts the rows logged before the checkpoint back."""
    log = run_dir / CSV_LOG
    if not rank_zero() or not log.is_file():
        return None
    aside = log.with_suffix(_EARLIER)
    if aside.is_file():  # a previous resume that did not get to restore: that file is the older record
        restore_log(run_dir, aside, step=None)
    log.replace(aside)
    return aside


def restore_log(run_dir: Path, aside: Path | None, step: int | None) -> None:
    """``csv/metrics.csv`` = the set-aside rows logged before optimizer step ``step`` (the checkpoint's),
    then this run's rows; the set-aside file is removed."""
    import pandas as pd

    from sdbert.io import write_with

    if aside is None or not aside.is_file():
        return
    earlier = pd.read_csv(aside)
    if step is not None and "step" in earlier:
        earlier = earlier[earlier["step"] < step]
    log = run_dir / CSV_LOG
    frames = [earlier, pd.read_csv(log)] if log.is_file() else [earlier]
    merged = pd.concat(frames, ignore_index=True, sort=False)
    write_with(log, lambda tmp: merged.to_csv(tmp, index=False))
    aside.unlink()

