"""Rewrite run folders written before the strategy described itself into today's format, in place.

    python scripts/migrate_rundirs.py results/evidence_cpu-2026-11-30/runs [more folders ...]

For every run folder (``.hydra/config.yaml``) under the given paths:

* ``.hydra/config.yaml``: ``_target_`` paths of the package's old layout become today's, and config keys
  added since are written with the value that reproduces what the run computed (``ADDED_KEYS``; a
  ``strategy.*`` key only where the strategy's constructor takes it).
* ``metrics.json`` of a finished run: the strategy's flat fields (``strategy: sda``, ``teacher_size``,
  ``distill_weight``, ...) become the strategy's ``describe()`` under ``strategy``, built from the run's
  config; the old fields must agree with it, else the folder is named and left as it is.

Idempotent: a migrated folder is left unchanged, so it can be rerun on folders that gain new runs.
Exit status 1 when a folder could not be migrated.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

import sdbert  # noqa: F401  (registers the resolvers the saved configs use)
from sdbert.config import instantiate
from sdbert.io import write_json, write_text
from sdbert.paths import CONFIG_FILE, SUMMARY_FILE
from sdbert.strategies import Description

#: ``_target_`` paths of the layout before 2026-11-30 and where the same objects live now
MOVED_TARGETS = {
    "sdbert.strategies.BaseStrategy": "sdbert.strategies.Vanilla",
    "sdbert.models.build_classifier": "sdbert.classifier.build_classifier",
    "sdbert.tracking.StepLearningRateMonitor": "sdbert.callbacks.StepLearningRateMonitor",
    "sdbert.tracking.Throughput": "sdbert.callbacks.Throughput",
    "sdbert.tracking.progress_bar": "sdbert.callbacks.progress_bar",
    "sdbert.tracking.WandbLogger": "sdbert.loggers.WandbLogger",
}
#: config keys added after runs were written, with the value that reproduces what those runs computed
#: (the voted teachers ran one after the other before ``strategy.batched_teachers`` existed)
ADDED_KEYS: dict[str, Any] = {
    "dataset.group_by_length": False,
    "trainer.strategy": "auto",
    "trainer.num_nodes": 1,
    "trainer.use_distributed_sampler": False,
    "strategy.batched_teachers": False,
    "strategy.distill_target": "logits",
    "strategy.distill_warmup": 0.0,
    "model.gradient_checkpointing": False,
}
#: config keys removed since runs were written, with the value that computed what runs without the key
#: compute (``model.pooling: pooler``: the pooled [CLS], BERT's own classification head)
REMOVED_KEYS: dict[str, Any] = {"model.pooling": "pooler"}
#: ``metrics.json`` fields the description replaces
FLAT_FIELDS = ("strategy", "teacher_size", "distill_weight", "teacher_dropout", "distill_target", "distill_warmup")


class MigrationError(Exception):
    """A folder that cannot be migrated (one line: which and why)."""


def run_folders(paths: Sequence[str | os.PathLike[str]]) -> Iterator[Path]:
    """Every run folder (one holding ``.hydra/config.yaml``) under ``paths``, in path order."""
    for given in paths:
        root = Path(given)
        if (root / CONFIG_FILE).is_file():
            yield root
            continue
        for dirpath, dirnames, _ in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            if (here / CONFIG_FILE).is_file():
                dirnames[:] = []
                yield here


def _move_targets(node: DictConfig) -> bool:
    changed = False
    for key, value in list(node.items_ex(resolve=False)):
        if key == "_target_" and isinstance(value, str) and value in MOVED_TARGETS:
            node[key] = MOVED_TARGETS[value]
            changed = True
        elif isinstance(value, DictConfig):
            changed |= _move_targets(value)
    return changed


def _takes(target: str, argument: str) -> bool:
    from hydra.utils import get_class

    cls = get_class(target)
    return any(argument in inspect.signature(k.__dict__["__init__"]).parameters
               for k in cls.__mro__ if "__init__" in k.__dict__)


def migrate_config(cfg: DictConfig) -> bool:
    """Today's ``_target_`` paths, the added keys and the removed ones, in place; whether anything changed."""
    changed = _move_targets(cfg)
    with open_dict(cfg):
        for key, value in ADDED_KEYS.items():
            section, _, name = key.partition(".")
            if section not in cfg or name in cfg[section]:
                continue
            if section == "strategy" and not _takes(str(cfg.strategy._target_), name):
                continue
            cfg[section][name] = value
            changed = True
        for key, value in REMOVED_KEYS.items():
            section, _, name = key.partition(".")
            if section in cfg and name in cfg[section] and cfg[section][name] == value:
                del cfg[section][name]
                changed = True
    return changed


def describe(cfg: DictConfig) -> Description:
    """The description the run's strategy config gives today."""
    node = OmegaConf.to_container(cfg.strategy, resolve=True)
    return Description.from_dict(instantiate(node).describe().to_dict())


def migrate_metrics(metrics: dict[str, Any], cfg: DictConfig, where: Path) -> bool:
    """``metrics`` with the description under ``strategy`` (in place); whether anything changed."""
    if metrics.get("status") != "ok" or Description.is_one(metrics.get("strategy")):
        return False
    description = describe(cfg)
    old = {k: metrics[k] for k in FLAT_FIELDS if k in metrics}
    if old.get("strategy") != description.name:
        raise MigrationError(f"{where}: metrics.json says strategy {old.get('strategy')!r}, its config builds "
                             f"{description.name!r}")
    differ = [f"{k} {v!r} vs {description.keys[k]!r}" for k, v in old.items()
              if k != "strategy" and k in description.keys and description.keys[k] != v]
    if differ:
        raise MigrationError(f"{where}: metrics.json and the config's strategy differ ({'; '.join(differ)})")
    for key in FLAT_FIELDS:
        metrics.pop(key, None)
    metrics["strategy"] = description.to_dict()
    return True


def migrate(folder: Path) -> bool:
    """Migrate one run folder; whether anything was rewritten."""
    config_file = folder / CONFIG_FILE
    cfg = OmegaConf.load(config_file)
    if not isinstance(cfg, DictConfig):
        raise MigrationError(f"{config_file} holds no mapping")
    config_changed = migrate_config(cfg)
    summary_file = folder / SUMMARY_FILE
    metrics = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.is_file() else {}
    metrics_changed = isinstance(metrics, dict) and migrate_metrics(metrics, cfg, folder)
    if config_changed:
        write_text(config_file, OmegaConf.to_yaml(cfg))
    if metrics_changed:
        write_json(summary_file, metrics)
    return config_changed or metrics_changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders, or folders holding run folders")
    args = parser.parse_args(argv)
    changed = unchanged = failed = 0
    for folder in run_folders(args.paths):
        try:
            if migrate(folder):
                changed += 1
            else:
                unchanged += 1
        except Exception as err:
            failed += 1
            print(f"migrate: error: {err}", file=sys.stderr)
    print(f"migrate: {changed} run folder(s) rewritten, {unchanged} already current, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
