"""Read runs back from their directories, after the fact and offline: config, summary, curves, predictions.

A run directory is what ``train.py`` leaves behind (:class:`sdbert.rundir.RunDir`): ``.hydra/config.yaml``,
``metrics.json`` (with the strategy's ``describe()``), ``csv/metrics.csv``, ``predictions/<test>.pt`` and
``checkpoints/``. This module reads one run (:class:`Run`): what method it trained (its
:class:`~sdbert.strategies.Description`) and which config keys make up its setup; finding runs under
folders, sweeps, grouping and seeds are :mod:`sdbert.analysis.sweeps`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

import sdbert  # noqa: F401  (registers the resolvers the saved configs use)
from sdbert.paths import CONFIG_FILE
from sdbert.rundir import RunDir, RunDirError, Status
from sdbert.strategies import REPORTED, Description, metric_key

__all__ = ["IGNORED_KEYS", "Run", "RunDirError", "load_run"]

#: Config keys that do not change what a run computes (where it writes, how it logs) or that index
#: repetitions (the seeds). Runs equal on every other key are repetitions of one setup.
IGNORED_KEYS = (
    "seed",
    "data_seed",
    "paths",
    "logger",
    "callbacks",
    "hydra",
    "tags",
    "task_name",
    "ckpt_path",
    "resume",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "dataset.num_workers",
    "dataset.eval_batch_size",
    "dataset._convert_",
    "export",
    "optimized_metric",
    "trainer.plugins",
    "model.label",
    "model.gradient_checkpointing",  # recomputes the same activations: memory, not results
)
#: ``${name}`` in a config value: a top-level key the strategy's config takes its value from
_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w]*)\}")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}{key}."))
        return out
    if isinstance(value, list):
        return {prefix[:-1]: json.dumps(value, sort_keys=True, default=str)}
    return {prefix[:-1]: value}


def _resolved_value(cfg: DictConfig, key: str) -> Any:
    """``cfg[key]`` with its interpolations resolved, as plain Python (dicts, lists, scalars); raises when one
    does not resolve."""
    value = cfg[key]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def describe_strategy(node: dict[str, Any]) -> Description:
    """The description a run of this ``strategy`` config writes: the strategy's own ``describe()``; a config
    that does not build (the run refused it) is described by its class and keys as given."""
    from hydra.utils import get_class

    from sdbert.config import instantiate

    try:
        return Description.from_dict(instantiate(node).describe().to_dict())
    except Exception as err:
        target = str(node.get("_target_", "?"))
        try:
            strategy_class: Any = get_class(target)  # any strategy class, from sdbert or not
            name = str(strategy_class.name)
        except Exception:
            name = target.rsplit(".", 1)[-1].lower()
        keys = {k: v for k, v in node.items() if not k.startswith("_")}
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Description(name=name, title=name.upper(), keys=keys, qualifiers=(f"not built: {reason}",))


class Run:
    """One run directory as the analysis sees it, whatever its status (``ok | failed | interrupted | running``)."""

    def __init__(self, folder: RunDir) -> None:
        self.folder = folder
        self.path = folder.path

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {self.status})"

    @property
    def config(self) -> DictConfig:
        return self.folder.config

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json`` (empty while it runs)."""
        return dict(self.folder.summary.data)

    @property
    def overrides(self) -> list[str]:
        return self.folder.overrides

    @property
    def status(self) -> Status:
        return self.folder.summary.status

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> str | None:
        return self.folder.summary.error

    @property
    def mtime(self) -> float:
        target = self.folder.summary_file
        return (target if target.exists() else self.path).stat().st_mtime

    # -- what the run was ---------------------------------------------------------------------------
    @cached_property
    def resolved(self) -> dict[str, Any]:
        """The run's config, resolved, with ``paths.output_dir`` pointing at where the run now lies."""
        cfg = self.config.copy()
        with open_dict(cfg):
            if "paths" in cfg:
                cfg.paths.output_dir = str(self.path)
            for dropped in ("hydra", "logger", "callbacks"):  # where they log does not matter here
                cfg.pop(dropped, None)
        unresolved = OmegaConf.to_container(cfg, resolve=False)
        assert isinstance(unresolved, dict)
        out: dict[str, Any] = {}
        for key in cfg:
            try:
                out[str(key)] = _resolved_value(cfg, str(key))
            except Exception as err:  # e.g. a resolver of a newer sdbert: keep the text, unless it is essential
                if key in ("dataset", "model", "strategy", "seed", "data_seed", *self.method_config_keys):
                    reason = str(err).splitlines()[0]
                    raise RunDirError(f"run {self.path}: '{key}' in its {CONFIG_FILE} does not resolve ({reason})") \
                        from None
                out[str(key)] = unresolved[key]
        return out

    @cached_property
    def method_config_keys(self) -> tuple[str, ...]:
        """The config keys the method is set by: ``strategy`` and the top-level keys its config refers to
        (``${teacher_size}``, ``${distill_weight}``)."""
        node = OmegaConf.to_container(self.config.get("strategy") or {}, resolve=False)
        refs = {m for v in _flatten(node).values() if isinstance(v, str) for m in _REFERENCE.findall(v)}
        return ("strategy", *sorted(refs))

    @cached_property
    def identity(self) -> dict[str, Any]:
        """Every config value that shapes the result, flattened (``dataset.max_length`` ...), seeds excluded."""
        flat = _flatten(self.resolved)
        return {k: v for k, v in sorted(flat.items()) if not _ignored(k)}

    @cached_property
    def group_key(self) -> str:
        """Equal for runs that differ only in ``seed`` / ``data_seed`` (repetitions of one setup)."""
        text = json.dumps(self.identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def dataset(self) -> str:
        return str(self.resolved["dataset"]["name"])

    @property
    def model(self) -> str:
        """The model as recorded (``model.label``, random-init marked), not the weights' source alone."""
        from sdbert.checks import recorded_model

        return recorded_model(self.resolved["model"])

    @property
    def label_names(self) -> list[str]:
        return [str(x) for x in self.resolved["dataset"]["label_names"]]

    @property
    def test_names(self) -> list[str]:
        return [str(x) for x in (self.resolved["dataset"].get("test_splits") or {"test": "test"})]

    @property
    def is_pair_task(self) -> bool:
        """Sentence-pair input (NLI): reported as accuracy, like the paper's SNLI and MNLI columns."""
        return len(self.resolved["dataset"].get("text_fields") or []) == 2

    @property
    def seed(self) -> int:
        return int(self.resolved["seed"])

    @property
    def data_seed(self) -> int:
        return int(self.resolved["data_seed"])

    @cached_property
    def method(self) -> Description:
        """What the run trained: the strategy's ``describe()`` from ``metrics.json``; a run that wrote none
        (failed early, still running) is described by its strategy config."""
        written = self.folder.summary.strategy
        if written is not None:
            return Description.from_dict(written)
        return describe_strategy(dict(self.resolved["strategy"]))

    @property
    def strategy(self) -> str:
        return self.method.name

    # -- what the run produced ----------------------------------------------------------------------
    def test_acc(self, test_name: str, model_name: str = REPORTED) -> float | None:
        """Test accuracy (%) of the reported model or of another evaluated one (``teacher`` ...)."""
        value = self.folder.summary.test.get(metric_key(test_name, model_name, "acc"))
        return None if value is None else float(value)

    def predictions(self, test_name: str) -> dict[str, Any]:
        """``probs`` [N, C], ``labels`` [N], ``label_names`` of the reported model on one test set."""
        import torch

        path = self.folder.predictions_file(test_name)
        if not path.is_file():
            raise RunDirError(f"run {self.path} has no predictions/{test_name}.pt (it was not tested, or failed)")
        return dict(torch.load(path, map_location="cpu", weights_only=True))

    def history(self) -> Any:
        """``csv/metrics.csv`` (Lightning's CSVLogger) as a DataFrame, or None when the run did not log it."""
        import pandas as pd

        path = self.path / "csv" / "metrics.csv"
        if not path.is_file():
            return None
        return pd.read_csv(path)

    def checkpoint(self, which: str = "tested") -> Path:
        """``tested`` (the weights ``test`` saw: best or last), ``best`` or ``last``."""
        return self.folder.checkpoint(which)  # type: ignore[arg-type]

    def describe(self) -> str:
        """``bbc_news · SDA (K=all) · seed 1, data_seed 42``: one line for messages."""
        return f"{self.dataset} · {self.method.label} · seed {self.seed}, data_seed {self.data_seed}"


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read one run directory (raises :class:`RunDirError` when it is not one)."""
    folder = RunDir(path)
    folder.config  # noqa: B018  (refuses a folder that is not a run, here rather than later)
    return Run(folder)
