"""Read runs back from their directories, after the fact and offline: config, summary, curves, predictions.

A run directory is what ``train.py`` leaves behind (a Hydra output directory): ``.hydra/config.yaml``,
``.hydra/overrides.yaml``, ``metrics.json`` (``status`` ``ok`` or ``failed``), ``csv/metrics.csv``,
``predictions/<test>.pt`` and ``checkpoints/``. This module reads one run (:class:`Run`) and knows which
of its config keys make up its setup, including runs written by older versions; finding runs under
folders, sweeps, grouping and seeds are :mod:`sdbert.analysis.sweeps`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

import sdbert  # noqa: F401  (registers the resolvers the saved configs use)
from sdbert.errors import ConfigError, SdbertError
from sdbert.paths import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    OVERRIDES_FILE,
    PREDICTIONS_DIR,
    SUMMARY_FILE,
)
from sdbert.strategies.interface import REPORTED, metric_key, parse_teacher_size

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
#: Method settings whose default (the paper's) the labels leave out: ``SDA (K=2)``, not
#: ``SDA (K=2, dropout teacher, logits, no warm-up)``.
METHOD_DEFAULTS: dict[str, Any] = {"teacher_dropout": True, "distill_target": "logits", "distill_warmup": 0.0}
#: Config keys added after runs were written (2026-11-30), with the value that reproduces what those
#: runs computed: a run without the key equals a new run with this value, so seeds can be added later.
#: SDV runs from before ``strategy.batched_teachers`` ran their teachers one after the other (``false``).
ADDED_KEYS: dict[str, Any] = {
    "dataset.group_by_length": False,
    "strategy.batched_teachers": False,
    "trainer.strategy": "auto",
    "trainer.num_nodes": 1,
    "trainer.use_distributed_sampler": False,
    "strategy.distill_target": METHOD_DEFAULTS["distill_target"],
    "strategy.distill_warmup": METHOD_DEFAULTS["distill_warmup"],
}
#: Added keys that exist for some strategies only (the others never get them).
ADDED_KEYS_STRATEGIES: dict[str, tuple[str, ...]] = {
    "strategy.batched_teachers": ("sdv",),
    "strategy.distill_target": ("sda", "sdv"),
    "strategy.distill_warmup": ("sda", "sdv"),
}
#: Config keys removed since runs were written, with the value that computed what runs without the key
#: compute: ``model.pooling: pooler`` (the pooled [CLS], BERT's own classification head).
REMOVED_KEYS: dict[str, Any] = {"model.pooling": "pooler"}
#: Keys that make up the training method (strategy, K, λ); the rest of a setup is its context.
METHOD_KEYS = ("strategy", "teacher_size", "distill_weight")


class RunDirError(SdbertError, ValueError):
    """A path is not a run or sweep directory, or runs cannot be read or combined."""


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


def strategy_name(target: str) -> str:
    """``sdbert.strategies.SelfDistillationAveraged`` → ``sda`` (the class's ``name``)."""
    from hydra.utils import get_class

    try:
        return str(getattr(get_class(target), "name", target))
    except Exception:
        return target.rsplit(".", 1)[-1]


@dataclass
class Run:
    """One run directory, whatever state it is in: ``ok``, ``failed`` or ``incomplete`` (no summary yet)."""

    path: Path
    status: str
    config: DictConfig
    metrics: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> str | None:
        if self.status == "failed":
            return str(self.metrics.get("error") or "failed without a message")
        if self.status == "incomplete":
            return f"no {SUMMARY_FILE}: the job crashed, was killed or is still running"
        return None

    @property
    def mtime(self) -> float:
        target = self.path / SUMMARY_FILE
        return (target if target.exists() else self.path).stat().st_mtime

    # -- what the run was ---------------------------------------------------------------------------
    @cached_property
    def resolved(self) -> dict[str, Any]:
        """The run's config, resolved, with ``paths.output_dir`` pointing at where the run now lies."""
        cfg = self.config.copy()
        with open_dict(cfg):
            if "paths" in cfg:
                cfg.paths.output_dir = str(self.path)
            for key in ("hydra", "logger", "callbacks"):  # where they log does not matter here
                cfg.pop(key, None)
        unresolved = OmegaConf.to_container(cfg, resolve=False)
        assert isinstance(unresolved, dict)
        out: dict[str, Any] = {}
        for key in cfg:
            try:
                out[str(key)] = _resolved_value(cfg, str(key))
            except Exception as err:  # e.g. a resolver of a newer sdbert: keep the text, unless it is essential
                if key in ("dataset", "model", "strategy", "seed", "data_seed", "teacher_size", "distill_weight"):
                    reason = str(err).splitlines()[0]
                    raise RunDirError(f"run {self.path}: '{key}' in its {CONFIG_FILE} does not resolve ({reason})") \
                        from None
                out[str(key)] = unresolved[key]
        return out

    @cached_property
    def identity(self) -> dict[str, Any]:
        """Every config value that shapes the result, flattened (``dataset.max_length`` ...), seeds excluded."""
        flat = _flatten(self.resolved)
        for key, value in ADDED_KEYS.items():  # a run written before the key existed computed with this value
            applies = self.strategy in ADDED_KEYS_STRATEGIES.get(key, (self.strategy,))
            if applies and key not in flat:
                flat[key] = value
        for key, value in REMOVED_KEYS.items():
            if key in flat and flat[key] == value:
                del flat[key]
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
    def method(self) -> dict[str, Any]:
        """``strategy``, and for SDA/SDV ``teacher_size`` (K or ``all``), ``distill_weight``, ``teacher_dropout``,
        ``distill_target``, ``distill_warmup`` (the last two absent from runs written before they existed)."""
        if self.ok and "strategy" in self.metrics:
            keys = ("strategy", "teacher_size", "distill_weight", *METHOD_DEFAULTS)
            return {k: self.metrics[k] for k in keys if k in self.metrics}
        strat = self.resolved["strategy"]
        out: dict[str, Any] = {"strategy": strategy_name(str(strat["_target_"]))}
        if "teacher_size" in strat:
            try:
                k = parse_teacher_size(strat["teacher_size"])
                out["teacher_size"] = "all" if k is None else k  # as the strategy itself describes it
            except ConfigError:  # the run failed on it: show it as given
                out["teacher_size"] = strat["teacher_size"]
            out["distill_weight"] = float(strat.get("distill_weight", 1.0))
            for key, default in METHOD_DEFAULTS.items():  # as the strategy's describe() types them
                out[key] = type(default)(strat.get(key, default))
        return out

    @property
    def strategy(self) -> str:
        return str(self.method["strategy"])

    # -- what the run produced ----------------------------------------------------------------------
    def test_acc(self, test_name: str, model_name: str = REPORTED) -> float | None:
        """Test accuracy (%) of the reported model or of ``teacher``/``student``."""
        value = self.metrics.get("test", {}).get(metric_key(test_name, model_name, "acc"))
        return None if value is None else float(value)

    def predictions(self, test_name: str) -> dict[str, Any]:
        """``probs`` [N, C], ``labels`` [N], ``label_names`` of the reported model on one test set."""
        import torch

        path = self.path / PREDICTIONS_DIR / f"{test_name}.pt"
        if not path.is_file():
            raise RunDirError(f"run {self.path} has no predictions/{test_name}.pt (it was not tested, or failed)")
        return torch.load(path, map_location="cpu", weights_only=True)

    def history(self) -> Any:
        """``csv/metrics.csv`` (Lightning's CSVLogger) as a DataFrame, or None when the run did not log it."""
        import pandas as pd

        path = self.path / "csv" / "metrics.csv"
        if not path.is_file():
            return None
        return pd.read_csv(path)

    def checkpoint(self, which: str = "tested") -> Path:
        """``tested`` (the weights ``test`` saw: best or last), ``best`` or ``last``."""
        folder = self.path / CHECKPOINT_DIR
        if which == "tested":
            tested = str(self.metrics.get("tested_checkpoint") or self.resolved.get("test_ckpt") or "best")
            which = "last" if tested == "last" else "best"
            if which == "best":
                # the run directory may have moved since: look next to it first
                local = folder / Path(tested).name
                path = local if local.is_file() else Path(tested)
                if path.is_file():
                    return path
        if which not in ("best", "last"):
            raise RunDirError(f"checkpoint must be 'tested', 'best' or 'last' (got {which!r})")
        path = folder / f"{which}.ckpt"
        if not path.is_file():
            raise RunDirError(f"run {self.path} has no checkpoints/{which}.ckpt")
        return path

    def describe(self) -> str:
        """``bbc_news · sda K=all λ=1.0 · seed 1, data_seed 42``: one line for messages."""
        return f"{self.dataset} · {method_label(self.method)} · seed {self.seed}, data_seed {self.data_seed}"


def method_label(method: dict[str, Any]) -> str:
    """``BASE``, ``SE``, ``SDA (K=all)``, ``SDV (K=5, λ=0.5)``: the paper's names."""
    name = str(method.get("strategy", "?")).upper()
    parts = []
    if "teacher_size" in method:
        parts.append(f"K={method['teacher_size']}")
    if "distill_weight" in method and float(method["distill_weight"]) != 1.0:
        parts.append(f"λ={float(method['distill_weight']):g}")
    changed = {k: method[k] for k, default in METHOD_DEFAULTS.items() if k in method and method[k] != default}
    if "teacher_dropout" in changed:
        parts.append("eval-mode teacher")
    if "distill_target" in changed:
        parts.append(f"KL of {changed['distill_target']}")
    if "distill_warmup" in changed:
        parts.append(f"λ warm-up {float(changed['distill_warmup']):.0%}")
    return f"{name} ({', '.join(parts)})" if parts else name


#: ``_target_`` paths that run directories written before the package's layout change (2026-11-30) name,
#: and where the same objects live now: such runs still read, resolve and combine with new ones.
MOVED_TARGETS = {
    "sdbert.strategies.BaseStrategy": "sdbert.strategies.Vanilla",
    "sdbert.models.build_classifier": "sdbert.classifier.build_classifier",
    "sdbert.tracking.StepLearningRateMonitor": "sdbert.callbacks.StepLearningRateMonitor",
    "sdbert.tracking.Throughput": "sdbert.callbacks.Throughput",
    "sdbert.tracking.progress_bar": "sdbert.callbacks.progress_bar",
    "sdbert.tracking.WandbLogger": "sdbert.loggers.WandbLogger",
}


def _update_moved_targets(node: Any) -> None:
    for key, value in list(node.items_ex(resolve=False)):
        if key == "_target_" and isinstance(value, str) and value in MOVED_TARGETS:
            node[key] = MOVED_TARGETS[value]
        elif isinstance(value, DictConfig):
            _update_moved_targets(value)


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read one run directory (raises :class:`RunDirError` when it is not one)."""
    path = Path(path)
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise RunDirError(f"{path} is not a run directory (no {CONFIG_FILE}); pass train.py output directories")
    config = OmegaConf.load(config_file)
    if not isinstance(config, DictConfig):
        raise RunDirError(f"{config_file} holds no mapping; it is not a config train.py wrote")
    _update_moved_targets(config)
    overrides = OmegaConf.load(path / OVERRIDES_FILE) if (path / OVERRIDES_FILE).is_file() else []
    metrics: dict[str, Any] = {}
    status = "incomplete"
    summary = path / SUMMARY_FILE
    if summary.is_file():
        try:
            metrics = json.loads(summary.read_text())
            status = "ok" if metrics.get("status") == "ok" else "failed"
        except json.JSONDecodeError as err:
            metrics = {"status": "failed", "error": f"unreadable {SUMMARY_FILE} ({err})"}
            status = "failed"
    return Run(path=path, status=status, config=config, metrics=metrics, overrides=[str(o) for o in overrides])
