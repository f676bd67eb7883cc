"""Preemption and resume: a run continued from a checkpoint taken at any optimizer step ends bit for bit
where the uninterrupted run ends; signals stop a run with a checkpoint and a non-zero exit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from sdbert.errors import ConfigError
from sdbert.resume import Preemption, RunInterrupted, merge_overrides, newest_checkpoint
from sdbert.run import train
from sdbert.strategies import SelfDistillationAveraged, SelfDistillationVoted, SelfEnsemble
from tests.conftest import FAST, ROOT
from tests.helpers import last_state, seeded_loader
from tests.test_module import _final_params, _module, _trainer

STRATEGIES = {
    "sda2": lambda: SelfDistillationAveraged(teacher_size=2),
    "sda_all": lambda: SelfDistillationAveraged(teacher_size="all"),
    "sdv3": lambda: SelfDistillationVoted(teacher_size=3),
    "se": lambda: SelfEnsemble(),
}


def _same_models(a, b) -> bool:
    if not all(torch.equal(x, y) for x, y in zip(_final_params(a), _final_params(b), strict=True)):
        return False
    x = {"input_ids": torch.randint(1, 64, (3, 8), generator=torch.Generator().manual_seed(1))}
    a.eval(), b.eval()
    logits_b = b.strategy.eval_logits(b.model, x)
    return all(torch.equal(logits_b[key], value) for key, value in a.strategy.eval_logits(a.model, x).items())


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_resume_from_any_optimizer_step_is_exact(tmp_path, name):
    """20 examples, batch 2, accumulation 2: 5 steps per epoch (the last window of the epoch ends early).
    Checkpoints after every optimizer step; resuming from step 7 (mid-epoch 1: shuffled order, teacher
    state, schedule) and, for SDA K=2, also from inside epoch 0 and its last step, ends equal to the
    uninterrupted run."""
    make = STRATEGIES[name]
    full = _module(make())
    every_step = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="s{step}")
    trainer = _trainer(tmp_path / "full", max_epochs=2, accumulate=2, callbacks=[every_step])
    trainer.fit(full, train_dataloaders=seeded_loader(n=20, batch_size=2))
    assert trainer.global_step == 10
    for step in (3, 5, 7) if name == "sda2" else (7,):
        resumed = _module(make())
        trainer = _trainer(tmp_path / f"from{step}", max_epochs=2, accumulate=2)
        trainer.fit(resumed, train_dataloaders=seeded_loader(n=20, batch_size=2),
                    ckpt_path=tmp_path / "ckpt" / f"sstep={step}.ckpt")
        assert trainer.global_step == 10
        assert _same_models(full, resumed), f"resumed from step {step}"
    if name != "sda2":
        return
    # the comparison can fail: a run that starts the epoch over from the checkpoint's step does not match
    replay = _module(make())
    trainer = _trainer(tmp_path / "replay", max_epochs=2, accumulate=2)
    state = torch.load(tmp_path / "ckpt" / "sstep=7.ckpt", weights_only=False)
    state["loops"]["fit_loop"]["state_dict"] = {}  # no data loader position
    torch.save(state, tmp_path / "no_position.ckpt")
    trainer.fit(replay, train_dataloaders=seeded_loader(n=20, batch_size=2), ckpt_path=tmp_path / "no_position.ckpt")
    assert not _same_models(full, replay)


RUN = [*FAST, "trainer.max_epochs=2", "trainer.accumulate_grad_batches=2", "trainer.enable_progress_bar=false"]


def _kill_at(step: int, signum: int = signal.SIGTERM) -> list[str]:
    return [
        "+callbacks.kill._target_=tests.helpers.SignalAt", f"+callbacks.kill.step={step}",
        f"+callbacks.kill.signum={int(signum)}",
    ]


@pytest.mark.parametrize(
    ("strategy", "signal_step", "step"), [("sda", 1, 2), ("sdv", 3, 3), ("se", 4, 5), ("sda", 6, 6)]
)
def test_signal_then_resume_auto_ends_like_the_uninterrupted_run(make_cfg, tmp_path, strategy, signal_step, step):
    """Composed runs (5 micro-batches per epoch, 3 optimizer steps, the last one a single micro-batch).
    A SIGTERM sent after optimizer step ``signal_step`` stops the run at the next step boundary: in the
    middle of epoch 0 (step 2), at its end (step 3: after its validation), in epoch 1 (step 5) or after
    training, before the test (step 6). It writes last.ckpt and status interrupted; resume=auto in the
    same folder ends with the same weights, best score, best epoch, test metrics and predictions as the
    run that was never stopped."""
    overrides = [*RUN, f"strategy={strategy}", "teacher_size=2"]
    full = train(make_cfg(*overrides, fast=False, out=tmp_path / "full"))
    cut_dir = tmp_path / "cut"
    with pytest.raises(RunInterrupted) as info:
        train(make_cfg(*overrides, *_kill_at(signal_step), fast=False, out=cut_dir))
    assert info.value.exit_code == 128 + signal.SIGTERM
    stopped = json.loads((cut_dir / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["optimizer_steps"] == step
    assert newest_checkpoint(cut_dir) == cut_dir / "checkpoints" / "last.ckpt"
    assert torch.load(cut_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == step

    resumed = train(make_cfg(*overrides, "resume=auto", fast=False, out=cut_dir))
    for key in ("status", "optimizer_steps", "epochs", "best_val_acc", "best_epoch", "test", "val"):
        assert resumed[key] == full[key], key
    a, b = last_state(tmp_path / "full"), last_state(cut_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pa, pb = (torch.load(d / "predictions" / "test.pt") for d in (tmp_path / "full", cut_dir))
    assert torch.equal(pa["probs"], pb["probs"])
    # the CSV log keeps the rows from before the checkpoint: every step's train/ce (the step before the
    # stop may miss its row: the stop comes before Lightning writes it) equal to the full run's, and both
    # epochs' validation rows
    logs = [pd.read_csv(d / "csv" / "metrics.csv") for d in (tmp_path / "full", cut_dir)]
    ce = [frame.dropna(subset=["train/ce"]).set_index("step")["train/ce"] for frame in logs]
    assert set(ce[0].index) - set(ce[1].index) <= {step - 1} and set(ce[1].index) <= set(ce[0].index)
    assert all(ce[1][k] == ce[0][k] for k in ce[1].index)
    assert [len(frame.dropna(subset=["val/acc"])) for frame in logs] == [2, 2]
    # a finished run is not run again
    again = train(make_cfg(*overrides, "resume=auto", fast=False, out=cut_dir))
    assert again == json.loads((cut_dir / "metrics.json").read_text())


def test_last_checkpoint_is_the_latest_state(make_cfg):
    """last.ckpt follows every epoch, not only the ones whose validation accuracy improved."""
    cfg = make_cfg("trainer.max_epochs=3", "trainer.enable_progress_bar=false", "strategy=base")
    summary = train(cfg)
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == summary["optimizer_steps"] and last["epoch"] == 2


def test_a_checkpoint_of_another_setup_is_refused_in_one_line(make_cfg, tmp_path):
    cfg = make_cfg("strategy=sda", "teacher_size=2", out=tmp_path / "a")
    train(cfg)
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError) as info:
        train(make_cfg("strategy=sdv", "teacher_size=3", f"ckpt_path={ckpt}", out=tmp_path / "b"))
    message = str(info.value)
    assert "\n" not in message and "'sda' vs 'sdv'" in message and "2 vs 3" in message


def test_merge_overrides_applies_values_and_refuses_another_group():
    saved = OmegaConf.create({"trainer": {"max_epochs": 2}, "seed": 1, "resume": None})
    choices = {"model": "tiny", "strategy": "sda"}
    merged = merge_overrides(saved, ["trainer.max_epochs=5", "resume=auto", "model=tiny", "hydra.run.dir=x"], choices)
    assert merged.trainer.max_epochs == 5 and merged.seed == 1 and saved.trainer.max_epochs == 2
    with pytest.raises(ConfigError, match="model=bert_base differs from the run's model=tiny"):
        merge_overrides(saved, ["model=bert_base"], choices)


def test_resume_of_a_folder_that_is_no_run_is_refused_in_one_line(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="not the folder of an earlier run") as info:
        train(make_cfg(f"resume={tmp_path / 'nowhere'}"))
    assert "\n" not in str(info.value)


def test_second_sigint_stops_at_once():
    guard = Preemption(dirpath="unused")
    guard.request_stop(signal.SIGINT)
    assert guard.signum == signal.SIGINT
    with pytest.raises(RunInterrupted) as info:
        guard.request_stop(signal.SIGINT)
    assert info.value.exit_code == 128 + signal.SIGINT and info.value.checkpoint is None


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.long
def test_cli_sigterm_exits_non_zero_and_resume_run_dir_continues_with_its_config(tmp_path, make_cfg):
    """train.py: SIGTERM → exit 143, one line, status interrupted; ``resume=RUN_DIR`` continues in that
    folder with the run's saved config plus the override given now (the kill switch moved past the end)."""
    run_dir = tmp_path / "run"
    overrides = [*RUN, "strategy=sda", "teacher_size=1", "seed=3"]
    proc = _cli(*overrides, *_kill_at(2), f"hydra.run.dir={run_dir}")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert [line for line in proc.stderr.splitlines() if line.startswith("sdbert: interrupted by SIGTERM")]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"

    proc = _cli(f"resume={run_dir}", "++callbacks.kill.step=99")
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = json.loads((run_dir / "metrics.json").read_text())
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert saved.seed == 3 and saved.callbacks.kill.step == 99 and saved.strategy.teacher_size == 1
    assert (run_dir / ".hydra" / "resumed" / "overrides.yaml").is_file()

    full = train(make_cfg(*overrides, fast=False, out=tmp_path / "full"))
    for key in ("optimizer_steps", "best_val_acc", "best_epoch", "test"):
        assert resumed[key] == full[key], key


def test_sampler_splits_the_global_order_across_ranks_and_resumes_mid_epoch():
    from sdbert.data.batches import EpochSeededSampler

    one = EpochSeededSampler(20, data_seed=7)
    one.set_epoch(3)
    order = list(one)
    ranks = [EpochSeededSampler(20, data_seed=7, num_replicas=2, rank=r) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(3)
    shares = [list(s) for s in ranks]
    for i in range(5):  # rank batches of 2 together are the one-process batch of 4
        assert sorted(shares[0][2 * i : 2 * i + 2] + shares[1][2 * i : 2 * i + 2]) == sorted(order[4 * i : 4 * i + 4])
    # an iterator's state after 6 indices continues with the 7th, also in a fresh sampler
    it = iter(one)
    seen = [next(it) for _ in range(6)]
    state, iter_state = one.state_dict(), it.state_dict()
    fresh = EpochSeededSampler(20, data_seed=7)
    fresh.load_state_dict(state)
    resumed = iter(fresh)
    resumed.load_state_dict(iter_state)
    assert seen + list(resumed) == order
    with pytest.raises(ConfigError, match="data_seed=7, this run has data_seed=8"):
        EpochSeededSampler(20, data_seed=8).load_state_dict(state)


def test_step_checkpoints_keep_last_ckpt_the_newest_state_at_every_epoch_end(make_cfg):
    """``callbacks.last_checkpoint.every_n_train_steps=2`` (5 steps per epoch): last.ckpt is rewritten after
    steps 2, 4, 6, 8 and at both epoch ends (steps 5 and 10, after the epoch's validation), so it is the
    newest state after every one of those steps and when training ends."""
    from lightning.pytorch.callbacks import Checkpoint

    from sdbert.resume import checkpoint_step
    from sdbert.run import build

    cfg = make_cfg("trainer.max_epochs=2", "trainer.enable_progress_bar=false", "strategy=base",
                   "callbacks.last_checkpoint.every_n_train_steps=2")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    seen: list[tuple[str, int, int]] = []

    class Probe(Checkpoint):  # a checkpoint callback appended after the others: it sees what they saved
        def on_train_batch_end(self, trainer, *args) -> None:
            seen.append(("step", trainer.global_step, checkpoint_step(last) if last.is_file() else -1))

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            state = torch.load(last, weights_only=False)
            assert state["callbacks"]["RunIdentity"]["last_val"]  # saved after the epoch's validation
            seen.append(("epoch", trainer.global_step, state["global_step"]))

    datamodule, module, trainer, _ = build(cfg)
    trainer.callbacks.append(Probe())
    trainer.fit(module, datamodule=datamodule)
    saved = [(kind, step) for kind, step, ckpt in seen if ckpt == step]
    assert saved == [("step", 2), ("step", 4), ("epoch", 5), ("step", 6), ("step", 8), ("epoch", 10)]
    assert checkpoint_step(last) == trainer.global_step == 10


@pytest.mark.parametrize("bad", ["last.ckpt", "best.ckpt"])
def test_resume_names_an_unreadable_checkpoint_and_continues_from_the_newest_readable(make_cfg, tmp_path, caplog, bad):
    """Stopped at step 5 (best.ckpt: step 3, epoch 0's end; last.ckpt: step 5), one of them truncated:
    resume=auto names it, sets it aside and finishes from the other."""
    overrides = [*RUN, "strategy=base"]
    cut = tmp_path / "cut"
    with pytest.raises(RunInterrupted):
        train(make_cfg(*overrides, *_kill_at(4), fast=False, out=cut))
    path = cut / "checkpoints" / bad
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="sdbert"):
        resumed = train(make_cfg(*overrides, "resume=auto", fast=False, out=cut))
    assert resumed["status"] == "ok" and resumed["optimizer_steps"] == 6
    named = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert named and "unreadable" in named[0]
    assert (cut / "checkpoints" / f"{bad}.unreadable").is_file()
    assert torch.load(cut / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    if bad == "best.ckpt":  # the best is tracked afresh from the resumed epoch: its best.ckpt is tested
        assert Path(resumed["tested_checkpoint"]).name == "best.ckpt" and resumed["best_epoch"] == 2


def test_a_resumed_run_reports_the_whole_runs_wall_time_without_folder_warnings(make_cfg, tmp_path):
    """The stopped attempt's wall time (here set to 1000 s) is added to the resumed one's; Lightning's
    warnings that the run's own csv/ and checkpoints/ folders are not empty ("will be deleted") are not
    shown for the folder being continued."""
    import time
    import warnings

    overrides = [*RUN, "strategy=base"]
    cut = tmp_path / "cut"
    with pytest.raises(RunInterrupted):
        train(make_cfg(*overrides, *_kill_at(4), fast=False, out=cut))
    stopped = json.loads((cut / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["wall_time_s"] > 0
    (cut / "metrics.json").write_text(json.dumps({**stopped, "wall_time_s": 1000.0}))
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(make_cfg(*overrides, "resume=auto", fast=False, out=cut))
    assert 1000.0 < resumed["wall_time_s"] <= 1000.0 + time.perf_counter() - began + 0.1
    assert not [str(w.message) for w in caught if "exists and is not empty" in str(w.message)]


def _cli_signal(run_dir: Path, *kill: str) -> subprocess.CompletedProcess:
    return _cli(*RUN, "strategy=base", "+callbacks.kill._target_=tests.helpers.SignalAt", *kill,
                f"hydra.run.dir={run_dir}")


@pytest.mark.long
@pytest.mark.parametrize(
    ("kill", "code", "steps"),
    [
        (["+callbacks.kill.phase=setup"], 128 + signal.SIGTERM, 0),  # data prepared, before training
        (["+callbacks.kill.phase=test"], 128 + signal.SIGTERM, 6),  # during the final test
        (["+callbacks.kill.step=2", "+callbacks.kill.signum=2", "+callbacks.kill.times=2"], 128 + signal.SIGINT, 2),
    ],
    ids=["sigterm-setup", "sigterm-test", "ctrl-c-twice"],
)
def test_cli_a_signal_in_any_phase_exits_128_plus_signal_with_status_interrupted(tmp_path, kill, code, steps):
    """train.py stopped by SIGTERM once the data is prepared or during the test, or by Ctrl-C twice in
    training: exit 128 + signal, "status": "interrupted", one line with the resume hint."""
    run_dir = tmp_path / "run"
    proc = _cli_signal(run_dir, *kill)
    assert proc.returncode == code, proc.stderr[-3000:]
    stopped = json.loads((run_dir / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["optimizer_steps"] == steps
    hint = [line for line in proc.stderr.splitlines() if line.startswith("sdbert: interrupted by")]
    assert len(hint) == 1 and f"resume={run_dir}" in hint[0] and "Traceback" not in proc.stderr
