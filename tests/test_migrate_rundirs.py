"""scripts/migrate_rundirs.py: run folders written before the strategy described itself become today's,
once; the committed results are migrated."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from sdbert.analysis.rundirs import load_run
from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("migrate_rundirs", ROOT / "scripts" / "migrate_rundirs.py")
assert _spec is not None and _spec.loader is not None
migrate_rundirs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(migrate_rundirs)


def _make_old(new: Path, old: Path) -> None:
    """``new`` as the layout before 2026-11-30 wrote it: old module paths, no keys added since, flat metrics."""
    shutil.copytree(new, old, ignore=shutil.ignore_patterns("checkpoints"))
    text = (old / ".hydra" / "config.yaml").read_text()
    text = text.replace("sdbert.classifier.build_classifier", "sdbert.models.build_classifier")
    text = text.replace("sdbert.callbacks.Throughput", "sdbert.tracking.Throughput")
    (old / ".hydra" / "config.yaml").write_text(text)
    saved = OmegaConf.load(old / ".hydra" / "config.yaml")
    for parent, key in [("dataset", "group_by_length"), ("trainer", "strategy"), ("trainer", "num_nodes"),
                        ("trainer", "use_distributed_sampler"), ("strategy", "distill_target"),
                        ("strategy", "distill_warmup")]:
        del saved[parent][key]
    OmegaConf.save(saved, old / ".hydra" / "config.yaml")
    metrics = json.loads((old / "metrics.json").read_text())
    keys = metrics.pop("strategy")["keys"]
    metrics.update(strategy="sda", teacher_size=keys["teacher_size"], distill_weight=keys["distill_weight"],
                   teacher_dropout=keys["teacher_dropout"])
    (old / "metrics.json").write_text(json.dumps(metrics))


def test_an_old_run_folder_is_migrated_once_and_groups_with_todays(tiny_run, tmp_path):
    new = tiny_run("strategy=sda", "teacher_size=2")
    old = tmp_path / "old"
    _make_old(new, old)
    assert load_run(old).group_key != load_run(new).group_key  # no shims: an old folder is not read as today's
    assert migrate_rundirs.migrate(old) is True
    a, b = load_run(new), load_run(old)
    assert b.method == a.method and b.group_key == a.group_key and b.method.label == "SDA (K=2)"
    before = {p: p.read_bytes() for p in (old / "metrics.json", old / ".hydra" / "config.yaml")}
    assert migrate_rundirs.migrate(old) is False  # idempotent: nothing rewritten
    assert all(p.read_bytes() == data for p, data in before.items())


def test_metrics_that_contradict_the_config_are_named_and_left_alone(tiny_run, tmp_path):
    old = tmp_path / "old"
    _make_old(tiny_run("strategy=sda", "teacher_size=2"), old)
    metrics = json.loads((old / "metrics.json").read_text())
    (old / "metrics.json").write_text(json.dumps({**metrics, "teacher_size": 3}))
    before = (old / "metrics.json").read_bytes(), (old / ".hydra" / "config.yaml").read_bytes()
    assert migrate_rundirs.main([str(old)]) == 1
    assert ((old / "metrics.json").read_bytes(), (old / ".hydra" / "config.yaml").read_bytes()) == before


def test_the_committed_results_are_migrated():
    runs = sorted((ROOT / "results").glob("*/runs/*/*/metrics.json"))
    assert runs
    for path in runs:
        assert not migrate_rundirs.migrate(path.parent), f"{path.parent} is not migrated"
        assert load_run(path.parent).method.label != "?"
