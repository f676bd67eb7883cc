"""Watching runs on W&B: the logger's mode decision, naming, grouping and finishing.

Nothing here talks to the network to decide anything, and nothing asks for input:

* ``resolve_mode`` picks ``online``/``offline``/``disabled`` from ``logger.wandb.mode``, ``$WANDB_MODE``
  or the presence of W&B credentials (``$WANDB_API_KEY``, an identity token file or a ``.netrc`` entry);
  without credentials it is ``offline``, and wandb is never left in a state where it would prompt.
* ``WandbLogger`` is Lightning's logger with sdbert's run identity (name, tags, group, the full resolved
  config), a fall-back to offline when an online start fails, and ``finish`` that ends the run (one W&B
  run per Hydra job) and says how to upload it later.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only

from sdbert.errors import ConfigError
from sdbert.rundir import rank_zero
from sdbert.spec import RunSpec

MODES = ("online", "offline", "disabled")
_MODE_ALIASES = {"dryrun": "offline", "run": "online", "shared": "online"}
DEFAULT_BASE_URL = "https://api.wandb.ai"
#: what ``logger.wandb.console`` may be (``wandb.Settings(console=...)``, which refuses anything else)
WandbConsole = Literal["auto", "off", "wrap", "redirect", "wrap_raw", "wrap_emu"]


# -- mode ------------------------------------------------------------------------------------------
def _normalise_mode(value: str, source: str) -> str:
    mode = _MODE_ALIASES.get(value.strip().lower(), value.strip().lower())
    if mode not in MODES:
        raise ConfigError(f"{source}={value!r} is not a W&B mode; use one of {', '.join(MODES)} (or null: automatic)")
    return mode


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def has_credentials(base_url: str | None = None) -> bool:
    """Whether wandb would find credentials without asking: env key, identity token file or ``.netrc``.

    Reads only the environment and local files (the same sources, in the same order, as wandb's own
    login), never the network.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    try:
        from wandb.sdk.lib.wbauth import HostUrl, read_netrc_auth

        return bool(read_netrc_auth(host=HostUrl(host)))
    except ImportError:  # pragma: no cover - another wandb layout: read the .netrc ourselves
        pass
    except Exception:  # a malformed key or .netrc: wandb would not use it either
        return False
    import netrc

    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        creds = netrc.netrc(str(path)).authenticators(urlsplit(host).netloc)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def resolve_mode(mode: str | None = None) -> tuple[str, str]:
    """``(mode, why)``: the W&B mode this run uses and a few words on why.

    ``mode`` (``logger.wandb.mode``) wins, then ``$WANDB_MODE`` / ``$WANDB_DISABLED``; otherwise online
    only when credentials are found, else offline. An online request without credentials becomes
    offline too: wandb would otherwise stop to ask for an API key.
    """
    if mode:
        resolved, why = _normalise_mode(str(mode), "logger.wandb.mode"), "set by logger.wandb.mode"
    elif os.environ.get("WANDB_MODE"):
        resolved, why = _normalise_mode(os.environ["WANDB_MODE"], "WANDB_MODE"), "set by WANDB_MODE"
    elif _truthy(os.environ.get("WANDB_DISABLED")):
        return "disabled", "set by WANDB_DISABLED"
    elif has_credentials():
        return "online", "W&B credentials found"
    else:
        return "offline", "no W&B credentials; `wandb login` or WANDB_API_KEY to log online"
    if resolved == "online" and not has_credentials():
        return "offline", f"online {why} but no W&B credentials; `wandb login` or WANDB_API_KEY"
    return resolved, why


# -- identity --------------------------------------------------------------------------------------
def fmt_number(value: Any) -> str:
    """``1.0`` → ``1``, ``0.5`` → ``0.5``, ``'all'`` → ``all`` (names, tags, tables)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _hydra_config() -> Any | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get() if HydraConfig.initialized() else None
    except Exception:
        return None


def model_choice() -> str | None:
    """The ``model=`` choice of the Hydra job (its short name for run names), else None."""
    hc = _hydra_config()
    choice = hc.runtime.choices.get("model") if hc is not None else None
    return str(choice) if choice else None


def sweep_group() -> str | None:
    """The sweep directory's name in a Hydra multirun (every job of one sweep shares it), else None."""
    hc = _hydra_config()
    if hc is None:
        return None
    from hydra.types import RunMode

    return Path(str(hc.sweep.dir)).name if hc.mode == RunMode.MULTIRUN else None


def wandb_identity(spec: RunSpec) -> dict[str, Any]:
    """``name``, ``tags`` and ``group`` of one run's W&B run, from its :class:`~sdbert.spec.RunSpec`.

    name: ``sda-K2-snli-minilm-s42-d42``, with each key that differs from its default after K
    (``sdv-K3-distill_weight0.5-...``); tags: ``strategy=sda``, ``K=2``, every key of the method
    (``distill_weight=1``), ``dataset=snli``, ``model=minilm``, ``seed=42``, ``data_seed=42``; group: the
    sweep directory's name in a multirun.
    """
    description, model = spec.strategy, spec.model_short
    parts, tags = [description.name], [f"strategy={description.name}"]
    if description.teacher_size is not None:
        parts.append(f"K{fmt_number(description.teacher_size)}")
        tags.append(f"K={fmt_number(description.teacher_size)}")
    parts += [f"{key}{fmt_number(description.keys[key])}" for key in description.changed]
    tags += [f"{key}={fmt_number(value)}" for key, value in description.keys.items() if key != "teacher_size"]
    parts += [spec.dataset, model, f"s{spec.seed}", f"d{spec.data_seed}"]
    tags += [f"dataset={spec.dataset}", f"model={model}", f"seed={spec.seed}", f"data_seed={spec.data_seed}"]
    return {"name": "-".join(parts), "tags": tags, "group": sweep_group()}


# -- the logger ------------------------------------------------------------------------------------
class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` that never prompts or blocks, and knows sdbert's runs.

    Args:
        save_dir: the run directory; wandb writes ``<save_dir>/wandb/{offline-,}run-<time>-<id>/``.
        project, entity: where the run goes on the server (entity None: your default).
        mode: ``online``, ``offline``, ``disabled`` or None (automatic, see ``resolve_mode``).
        group, name: None for sdbert's (the sweep's name; strategy-K-λ-dataset-model-seeds).
        tags: added to sdbert's automatic tags.
        log_model: True to upload the best checkpoint as a ``model`` artifact at the end of the run.
        init_timeout: seconds an online start may take before the run falls back to offline.
        console: wandb's console capture (``auto``, ``off``, ``wrap``, ``redirect``).
        **kwargs: passed to ``wandb.init``.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str] = ".",
        project: str = "sdbert",
        entity: str | None = None,
        mode: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        log_model: bool = False,
        init_timeout: float = 60.0,
        console: WandbConsole = "auto",
        **kwargs: Any,
    ) -> None:
        try:
            import wandb
        except ModuleNotFoundError as err:
            if err.name != "wandb":
                raise
            raise ConfigError(
                "logger=wandb needs the wandb package, which is not installed: pip install wandb "
                "(or log to CSV only: logger=csv)"
            ) from None

        self.mode, self.mode_reason = resolve_mode(mode)
        if log_model not in (True, False):
            raise ConfigError(f"logger.wandb.log_model={log_model!r}: use true (upload the best checkpoint) or false")
        self.log_best_model = bool(log_model)
        self._user: dict[str, Any] = {"name": name, "group": group, "tags": list(tags or [])}
        self._finished: dict[str, Any] | None = None  # {} once a disabled run is finished
        settings = wandb.Settings(silent=True, init_timeout=float(init_timeout), console=console)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            save_dir=os.fspath(save_dir), project=project, entity=entity, name=name, group=group, tags=list(tags or []),
            log_model=False, mode=self.mode, settings=settings, **kwargs,
        )
        self._wandb_init.pop("anonymous", None)  # deprecated in wandb, warns even when None

    def describe_run(self, config: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
        """Set the run's config, and its name/group/tags where the user gave none; before the run starts."""
        if self._experiment is not None:
            raise RuntimeError("describe_run() must be called before the W&B run starts")
        init = self._wandb_init
        init["config"] = dict(config)
        init["name"] = self._user["name"] or identity.get("name")
        init["group"] = self._user["group"] or identity.get("group")
        init["tags"] = list(dict.fromkeys([*identity.get("tags", []), *self._user["tags"]]))
        self._name = init["name"]

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """Lightning's module/datamodule hyperparameters go under ``hparams``: the run config's top level is
        sdbert's resolved config, which they would otherwise mix into (e.g. the datamodule's ``name``)."""
        import json
        from argparse import Namespace

        from omegaconf import OmegaConf

        def plain(value: Any) -> Any:
            return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else str(value)

        params = vars(params) if isinstance(params, Namespace) else dict(params)
        params = json.loads(json.dumps(params, default=plain))
        self.experiment.config.update({"hparams": params}, allow_val_change=True)

    @property
    def experiment(self) -> Any:
        """The wandb run, started on first use; an online start that fails is retried offline."""
        if self._experiment is not None:
            return self._experiment
        try:
            run = super().experiment
        except Exception as err:
            if self._wandb_init.get("mode") != "online":
                raise
            import wandb

            print(f"sdbert: W&B online start failed ({str(err).splitlines()[0]}); logging offline", file=sys.stderr)
            if wandb.run is not None:
                wandb.finish(exit_code=1)
            self.mode, self.mode_reason = "offline", f"online start failed: {str(err).splitlines()[0]}"
            self._wandb_init["mode"] = "offline"
            self._experiment = None
            run = super().experiment
        self._announce(run)
        return run

    def _announce(self, run: Any) -> None:
        if self.mode == "disabled" or not rank_zero():
            return
        where = f"at {run.url}" if self.mode == "online" else f"in {run.settings.sync_dir}"
        print(f"sdbert: W&B run {run.name} ({self.mode}: {self.mode_reason}) {where}")

    @property
    def run_dir(self) -> str | None:
        """The run's local directory (``.../wandb/offline-run-<time>-<id>``), once it has started."""
        run = self._experiment
        return getattr(getattr(run, "settings", None), "sync_dir", None) if run is not None else None

    def log_checkpoint(self, path: str | os.PathLike[str], metadata: Mapping[str, Any]) -> None:
        """The checkpoint at ``path`` as the ``model-<run id>`` artifact (aliases ``best``, ``latest``).

        The file is referenced, not copied: offline, ``wandb sync`` reads it from the run directory.
        """
        import wandb

        run = self.experiment
        artifact = wandb.Artifact(name=f"model-{run.id}", type="model", metadata=dict(metadata))
        artifact.add_file(str(path), name="model.ckpt", policy="immutable")
        run.log_artifact(artifact, aliases=["best", "latest"])

    def finish(self, summary: Mapping[str, Any] | None = None, exit_code: int = 0) -> dict[str, Any] | None:
        """Write ``summary`` into the run's summary and end the run; returns where it is and how to upload it.

        Idempotent; None when the run never started (or W&B is disabled).
        """
        if self._finished is not None:
            return self._finished or None
        run = self._experiment
        if run is None or not rank_zero():
            return None
        if self.mode == "disabled":  # a no-op run, but wandb.run until finished
            run.finish(exit_code=exit_code)
            self._finished = {}
            return None
        if summary:
            run.summary.update(dict(summary))
        info = {
            "mode": self.mode,
            "project": run.project,
            "id": run.id,
            "name": run.name,
            "group": run.group or None,
            "run_dir": run.settings.sync_dir,
            "run_file": run.settings.sync_file,
            "url": run.url if self.mode == "online" else None,
            "sync_command": f"wandb sync {run.settings.sync_dir}" if self.mode == "offline" else None,
            "exit_code": exit_code,
        }
        run.finish(exit_code=exit_code)
        self._finished = info
        return info


def wandb_loggers(loggers: Iterable[Any]) -> list[WandbLogger]:
    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


# -- a run's life cycle on W&B -----------------------------------------------------------------------
def describe_wandb_runs(loggers: Iterable[Any], cfg: Any, spec: RunSpec) -> None:
    """Before training: each W&B run gets the resolved config and sdbert's name, tags and group."""
    targets = wandb_loggers(loggers)
    if not targets:
        return
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    identity = wandb_identity(spec)
    for lg in targets:
        lg.describe_run(config, identity)  # type: ignore[arg-type]


#: what the end of a run puts into the W&B run's summary besides the test metrics
FINAL_KEYS = ("best_val_acc", "best_epoch", "epochs", "optimizer_steps", "wall_time_s")


def finish_wandb_runs(loggers: Iterable[Any], summary: Mapping[str, Any], best_path: str) -> dict[str, Any] | None:
    """After testing: upload the best checkpoint where asked (``log_model``), write the summary, end the run.

    Returns where the (last) W&B run went, for ``metrics.json``; None without W&B.
    """
    info = None
    for lg in wandb_loggers(loggers):
        if lg.log_best_model and best_path:
            lg.log_checkpoint(best_path, {"best_val_acc": summary["best_val_acc"], "epoch": summary["best_epoch"]})
        final = {**summary["test"], **{k: summary[k] for k in FINAL_KEYS}}
        info = lg.finish({k: v for k, v in final.items() if v is not None}, exit_code=0)
    return info


def finish_any_active_run(exit_code: int = 1) -> None:
    """End a wandb run left open (e.g. by a job that failed early), so the next job starts its own."""
    wandb = sys.modules.get("wandb")  # never import wandb just to find nothing
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def finish_failed(loggers: Iterable[Any]) -> None:
    """After a job failed: end its W&B run (exit code 1) and say where it is; never raises over the failure."""
    for lg in wandb_loggers(loggers):
        try:
            hint = wandb_hint(lg.finish(exit_code=1))
        except Exception as err:  # the job's own error matters more
            hint = f"sdbert: W&B run could not be finished: {err}"
        if hint is not None:
            print(hint, file=sys.stderr)
    try:
        finish_any_active_run(exit_code=1)
    except Exception as err:
        print(f"sdbert: W&B run could not be finished: {err}", file=sys.stderr)


def wandb_hint(info: Mapping[str, Any] | None) -> str | None:
    """The one line that tells where a W&B run went and how to upload or view it."""
    if not info:
        return None
    if info.get("mode") == "online":
        return f"sdbert: W&B run {info['name']}: {info['url']}"
    return (
        f"sdbert: W&B run {info['name']} logged offline; upload it with `{info['sync_command']}` "
        f"or view it here with `wandb leet {info['run_dir']}`"
    )
