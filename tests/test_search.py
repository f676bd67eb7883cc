"""hparams_search: Hydra's Optuna sweeper drives train.py, which returns the validation objective; the
sweep directory gets optimization_results.yaml and a trials table."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sdbert.errors import ConfigError
from sdbert.search import check_metric, objective, trials, write_trials
from tests.conftest import ROOT

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")

SUMMARY = {"best_val_acc": 61.0, "val": {"val/acc": 58.0, "val/f1": 40.0}, "test": {"test/acc": 55.5}}


def test_objective_is_the_configured_metric_of_the_run():
    assert objective(SUMMARY, "val/acc_best") == 61.0
    assert objective(SUMMARY, "val/f1") == 40.0
    assert objective(SUMMARY, "test/acc") == 55.5
    with pytest.raises(ConfigError, match="not a metric of this run; use one of: val/acc_best, val/acc"):
        objective(SUMMARY, "val/accuracy")
    with pytest.raises(ConfigError, match="needs the checkpoint callback"):
        objective({**SUMMARY, "best_val_acc": None}, "val/acc_best")


def test_metric_names_are_checked_against_what_a_run_reports():
    for good in ("val/acc_best", "val/acc", "val/err", "test/f1", "val/teacher/acc", "test_matched/acc"):
        check_metric(good, ["test", "test_matched"])
    for bad in ("val/accuracy", "acc", "val_acc", "dev/acc", "val//acc", "val/teacher/acc/x"):
        with pytest.raises(ConfigError, match=f"optimized_metric={bad} is not a metric sdbert reports; use one of: "
                                              "val/acc_best, val/acc, "):
            check_metric(bad, ["test"])
    with pytest.raises(ConfigError, match="test_matched/acc"):  # MNLI's test splits are named
        check_metric("test/acc", ["test_matched", "test_mismatched"])


def test_a_search_for_an_unknown_metric_is_refused_before_the_first_trial(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "hparams_search=sdbert_optuna_cpu", "model=tiny", "trainer.accelerator=cpu",
           "optimized_metric=val/accuracy", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "sdbert: error: optimized_metric=val/accuracy is not a metric sdbert reports; use one of: val/acc_best, "
        "val/acc, val/f1, val/err, test/acc, test/f1, test/err (or <split>/<model>/<metric> for a strategy's "
        "other model, e.g. val/teacher/acc)"]
    assert not sweep.exists()  # no trial started


@pytest.mark.long
def test_cpu_search_runs_trials_and_lists_them(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "train.py", "hparams_search=sdbert_optuna_cpu", "model=tiny",
        "dataset.train_per_class=4", "dataset.eval_size=16", "dataset.max_length=32", "dataset.batch_size=4",
        "dataset.eval_batch_size=16", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 3
    summaries = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    for s in summaries:
        assert s["status"] == "ok" and s["strategy"]["name"] in ("sda", "sdv")
        keys = s["strategy"]["keys"]
        assert 0.0 <= keys["distill_weight"] <= 2.0 and keys["teacher_size"] in (1, 2, 3, 4, 5, "all")
    # what train.py returned to the sweeper is the validation objective, not the test accuracy
    assert result["best_value"] == pytest.approx(max(s["best_val_acc"] for s in summaries))
    with (sweep / "trials.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [row["trial"] for row in table] == ["0", "1", "2"]
    for row, s in zip(table, summaries, strict=True):
        assert float(row["val/acc_best"]) == pytest.approx(s["best_val_acc"], abs=0.01)
        assert float(row["distill_weight"]) == pytest.approx(s["strategy"]["keys"]["distill_weight"])
    assert sum(row["best"] == "*" for row in table) == 1
    assert "| trial |" in (sweep / "trials.md").read_text()


def test_trials_table_lists_failed_trials(tiny_run, tmp_path):
    run = tiny_run("strategy=se")
    sweep = tmp_path / "sweep"
    for i, (k, status) in enumerate([("2", "ok"), ("all", "failed")]):
        job = sweep / str(i)
        shutil.copytree(run / ".hydra", job / ".hydra")
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"teacher_size={k}", "strategy=sdv"]))
        summary = json.loads((run / "metrics.json").read_text()) if status == "ok" else {
            "status": "failed", "error": "strategy=sdv needs an integer teacher_size"}
        (job / "metrics.json").write_text(json.dumps(summary))
    rows = trials(Path(sweep), "val/acc_best")
    write_trials(sweep, rows, "val/acc_best")
    with (sweep / "trials.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [(r["teacher_size"], r["status"], r["best"]) for r in table] == [("2", "ok", "*"), ("all", "failed", "")]
    assert "strategy" not in table[0]  # not swept: the same in every trial
    assert table[1]["error"] == "strategy=sdv needs an integer teacher_size" and table[1]["val/acc_best"] == ""
