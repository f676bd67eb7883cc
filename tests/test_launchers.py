"""Sweeps through Hydra's launchers, and sweeps re-run into their own directory after an interruption."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from sdbert.run import train
from tests.conftest import CONF, FAST, ROOT
from tests.helpers import last_state

SWEEP = [*FAST, "trainer.enable_progress_bar=false", "strategy=sda", "teacher_size=1"]


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(("choice", "target"), [
    ("submitit_slurm", "SlurmLauncher"), ("slurm", "SlurmLauncher"), ("submitit_local", "LocalLauncher"),
    ("local", "LocalLauncher"), ("joblib", "JoblibLauncher"), ("parallel", "JoblibLauncher"),
])
def test_launcher_configs_compose(choice, target):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={choice}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.long
def test_submitit_local_sweep_runs_both_jobs_and_a_rerun_skips_them(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*SWEEP, "seed=1,2", "resume=auto", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads((sweep / str(job) / "metrics.json").read_text()) for job in (0, 1)]
    assert [s["status"] for s in summaries] == ["ok", "ok"]
    assert sorted(s["seed"] for s in summaries) == [1, 2]
    assert all(0.0 <= s["test"]["test/acc"] <= 100.0 for s in summaries)
    # the same sweep again into the same folder: both jobs finished, neither runs again
    stamps = [(sweep / str(job) / "metrics.json").stat().st_mtime_ns for job in (0, 1)]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(sweep / str(job) / "metrics.json").stat().st_mtime_ns for job in (0, 1)] == stamps


@pytest.mark.long
def test_preempted_sweep_rerun_ends_like_an_uninterrupted_one(tmp_path, make_cfg):
    """Two jobs of one setup; job 1 gets SIGTERM after optimizer step 1 (its kill switch is the swept
    key): the sweep stops with 143 (not 0), job 0 finished, job 1 interrupted. The same command again
    skips job 0 and continues job 1; both end with the results (test metrics, best score, final
    weights) of a run that was never stopped."""
    sweep = tmp_path / "sweep"
    run = [*SWEEP, "trainer.max_epochs=2", "trainer.accumulate_grad_batches=2"]
    args = [*run, "seed=1", "+callbacks.kill._target_=tests.helpers.SignalAt", "+callbacks.kill.step=99,1",
            "resume=auto", f"hydra.sweep.dir={sweep}"]
    proc = _cli(*args)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    statuses = [json.loads((sweep / str(job) / "metrics.json").read_text())["status"] for job in (0, 1)]
    assert statuses == ["ok", "interrupted"]
    finished = (sweep / "0" / "metrics.json").stat().st_mtime_ns

    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == finished
    alone = train(make_cfg(*run, "seed=1", fast=False, out=tmp_path / "alone"))
    expected = last_state(tmp_path / "alone")
    for job in (0, 1):
        swept = json.loads((sweep / str(job) / "metrics.json").read_text())
        for key in ("status", "optimizer_steps", "best_val_acc", "best_epoch", "test"):
            assert swept[key] == alone[key], (job, key)
        weights = last_state(sweep / str(job))
        assert all(torch.equal(weights[k], expected[k]) for k in expected)


def test_slurm_trainer_config_builds_lightnings_requeueing_environment():
    from hydra.utils import instantiate
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer=slurm"])
    from sdbert.checkpointing import AtomicCheckpointIO

    plugins = instantiate(cfg.trainer.plugins)
    (environment,) = [p for p in plugins if isinstance(p, SLURMEnvironment)]
    assert environment.auto_requeue
    assert any(isinstance(p, AtomicCheckpointIO) for p in plugins)  # checkpoints stay atomic on SLURM too
