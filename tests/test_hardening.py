"""Runs never collide, checkpoints never end in a traceback, bad combinations fail early and loud, sweeps
say how they went, records name the model used (issue 12, items 1, 2, 4, 5, 7 and 8)."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sdbert import checks, factory
from sdbert.checkpointing import AtomicCheckpointIO, remove_stale_temps
from sdbert.data.datamodule import TextClassificationDataModule
from sdbert.errors import ConfigError, DiskFull
from sdbert.module import STRATEGY_STATE_KEY
from sdbert.paths import CHECKPOINT_DIR, CONFIG_FILE, OVERRIDES_FILE, SUMMARY_FILE
from sdbert.run import main_job
from sdbert.rundir import check_fresh, holds_run
from sdbert.sweep import SweepReport, format_jobs, sweep_jobs
from tests.conftest import CONF, FAST, ROOT


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("sdbert: error:")]


def _train_py(*args: str, timeout: int = 300) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )


# --------------------------------------------------------------------------- 1. run directories


def test_run_directory_names_are_readable_and_differ_per_strategy_seed_and_process() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        sda = compose(config_name="train", overrides=["seed=1"], return_hydra_config=True)
        base = compose(config_name="train", overrides=["seed=2", "strategy=base"], return_hydra_config=True)
    sda_dir, base_dir = (Path(OmegaConf.select(c, "hydra.run.dir")).name for c in (sda, base))
    assert "_sda-K2_snli_seed1_" in sda_dir and "_base_snli_seed2_" in base_dir  # base has no K
    ids = {
        subprocess.run([sys.executable, "-c", "from sdbert.config import process_id; print(process_id())"],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(2)
    }
    assert len(ids) == 2  # two identical runs started in the same second still get two folders


@pytest.mark.long
def test_identical_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    """The issue's case end to end: same command twice at once (they stop at a bad K: fast)."""
    procs = [_train_py("teacher_size=0", f"paths.log_dir={tmp_path}") for _ in range(2)]
    for proc in procs:
        proc.communicate(timeout=300)
        assert proc.returncode == 1
    runs = sorted((tmp_path / "train" / "runs").iterdir())
    assert len(runs) == 2 and all((run / SUMMARY_FILE).is_file() for run in runs)


def _old_run(folder: Path, how: str) -> None:
    (folder / CONFIG_FILE).parent.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text("old: run\n")
    if how == "metrics":
        (folder / SUMMARY_FILE).write_text(json.dumps({"status": "ok", "test": {"test/acc": 50.0}}))
    else:
        (folder / CHECKPOINT_DIR).mkdir()
        (folder / CHECKPOINT_DIR / "last.ckpt").write_bytes(b"old")


@pytest.mark.parametrize("how", ["metrics", "checkpoint"])
def test_a_folder_holding_a_run_is_refused_and_left_as_it_was(make_cfg, tmp_path, capsys, how) -> None:
    folder = tmp_path / "old"
    _old_run(folder, how)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as info:
        main_job(make_cfg(out=folder))
    assert info.value.code == 1
    (line,) = _errors(capsys.readouterr().err)
    assert f"run directory {folder} already holds a run" in line
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # nothing written


def test_a_folder_is_free_again_after_a_run_that_failed_at_its_config(tmp_path: Path) -> None:
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"status": "failed", "error": "bad K"}))
    assert holds_run(tmp_path) is None
    check_fresh(tmp_path)  # no error


def test_a_sweep_folder_holding_runs_is_refused(tmp_path: Path, capsys) -> None:
    from sdbert.rundir import FreshRunDir

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    FreshRunDir().on_multirun_start(config=config)  # empty: fine
    _old_run(tmp_path / "0", "metrics")
    with pytest.raises(SystemExit):
        FreshRunDir().on_multirun_start(config=config)
    (line,) = _errors(capsys.readouterr().err)
    assert f"sweep directory {tmp_path} already holds runs" in line
    assert "add resume=auto to skip its finished jobs and continue the cut-off ones" in line


def test_cli_refuses_before_hydra_overwrites_the_old_runs_config(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    _old_run(folder, "metrics")
    _, err = _train_py(f"hydra.run.dir={folder}", "model=tiny").communicate(timeout=300)
    (line,) = _errors(err)
    assert "already holds a run" in line and "Traceback" not in err
    assert (folder / CONFIG_FILE).read_text() == "old: run\n"  # Hydra did not write into it
    assert not (folder / OVERRIDES_FILE).exists()


def test_resume_in_its_own_folder_is_allowed_and_leaves_no_stale_best(make_cfg, tmp_path, capsys) -> None:
    """Resuming is the one way back into a used folder; best.ckpt is replaced, never joined by best-v1.ckpt.

    The same run also checks item 8: a ``model=tiny`` run is recorded as such everywhere.
    """
    from sdbert.analysis.rundirs import load_run

    folder = tmp_path / "run"
    first = main_job(make_cfg(out=folder))
    assert first is not None and first["epochs"] == 1
    last = folder / CHECKPOINT_DIR / "last.ckpt"
    resumed = main_job(make_cfg(f"ckpt_path={last}", "trainer.max_epochs=2", out=folder))
    assert resumed is not None and resumed["epochs"] == 2
    assert sorted(p.name for p in (folder / CHECKPOINT_DIR).iterdir()) == ["best.ckpt", "last.ckpt"]
    # item 8: the model actually used, in metrics.json, the end-of-run table and the report
    recorded = json.loads((folder / SUMMARY_FILE).read_text())
    assert recorded["model"] == "tiny (random init)" and recorded["model_source"] == "embedded:all-minilm-l6-v2"
    assert "tiny (random init)" in capsys.readouterr().out
    (folder / CONFIG_FILE).parent.mkdir(exist_ok=True)
    OmegaConf.save(make_cfg(out=folder), folder / CONFIG_FILE)
    assert load_run(folder).model == "tiny (random init)"


def test_a_random_init_model_is_never_recorded_as_the_pretrained_one() -> None:
    assert checks.recorded_model({"name_or_path": "embedded:all-minilm-l6-v2"}) == "embedded:all-minilm-l6-v2"
    mislabeled = {"name_or_path": "embedded:all-minilm-l6-v2", "random_init": {"hidden_size": 8}}
    assert checks.recorded_model(mislabeled) == "embedded:all-minilm-l6-v2 (random init)"


# --------------------------------------------------------------------------- 2 + 4. refused before data


def _fake_checkpoint(make_cfg, path: Path, *overrides: str, strategy_state: bool = True) -> Path:
    cfg = make_cfg(*overrides)
    module = factory.build_module(cfg, factory.build_strategy(cfg))
    state: dict[str, Any] = {"state_dict": module.state_dict(), "pytorch-lightning_version": "2.6.6"}
    if strategy_state:
        state[STRATEGY_STATE_KEY] = {}
    torch.save(state, path)
    return path


def _bad_input(make_cfg, tmp_path: Path, case: str) -> tuple[list[str], str]:
    """(overrides, what the one line must say) for each way a run must be refused before data preparation."""
    ckpt = tmp_path / "given.ckpt"
    if case == "missing":
        return [f"ckpt_path={tmp_path / 'nope.ckpt'}"], "no such file"
    if case == "empty":
        ckpt.write_bytes(b"")
        return [f"ckpt_path={ckpt}"], "is empty (0 bytes"
    if case == "random_bytes":
        ckpt.write_bytes(os.urandom(4096))
        return [f"ckpt_path={ckpt}"], "is not a readable checkpoint"
    if case == "truncated":
        _fake_checkpoint(make_cfg, ckpt)
        os.truncate(ckpt, ckpt.stat().st_size // 2)
        return [f"ckpt_path={ckpt}"], "is not a readable checkpoint"
    if case == "not_lightning":
        torch.save({"weights": torch.zeros(3)}, ckpt)
        return [f"ckpt_path={ckpt}"], "is not a Lightning checkpoint (found weights)"
    if case == "other_project":
        _fake_checkpoint(make_cfg, ckpt, strategy_state=False)
        return [f"ckpt_path={ckpt}"], "was not written by sdbert"
    if case == "other_model":
        _fake_checkpoint(make_cfg, ckpt, "model.random_init.hidden_size=16", "model.random_init.intermediate_size=32")
        return [f"ckpt_path={ckpt}"], "does not fit this model"
    if case == "max_length":
        return ["dataset.max_length=1024"], "dataset.max_length=1024 is longer than the model allows"
    if case == "max_epochs":
        return ["trainer.max_epochs=0"], "trainer.max_epochs=0 would test an untrained model"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["missing", "empty", "random_bytes", "truncated", "not_lightning", "other_project", "other_model", "max_length",
     "max_epochs"],
)
def test_bad_input_is_one_line_before_data_preparation(make_cfg, tmp_path, capsys, monkeypatch, case) -> None:
    overrides, expected = _bad_input(make_cfg, tmp_path, case)

    def no_data(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("data preparation started before the bad input was refused")

    monkeypatch.setattr(TextClassificationDataModule, "prepare_data", no_data)
    monkeypatch.setattr(TextClassificationDataModule, "setup", no_data)
    cfg = make_cfg(*overrides)
    with pytest.raises(SystemExit) as info:
        main_job(cfg)
    assert info.value.code == 1
    (line,) = _errors(capsys.readouterr().err)
    assert expected in line
    failure = json.loads((Path(cfg.paths.output_dir) / SUMMARY_FILE).read_text())
    assert failure["status"] == "failed" and expected in failure["error"]


# --------------------------------------------------------------------------- 2. atomic checkpoints


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp-*"))


def test_checkpoints_are_written_atomically_in_their_own_folder(tmp_path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    assert torch.load(target)["step"] == 1 and not _temps(target.parent)
    stale = target.parent / ".last.ckpt.tmp-killed"
    stale.write_bytes(b"partial")
    other = target.parent / ".best.ckpt.tmp-killed"  # another file's temp is not this save's to remove
    other.write_bytes(b"partial")
    io.save_checkpoint({"step": 2}, target)
    assert not stale.exists() and other.exists() and torch.load(target)["step"] == 2

    real_save = torch.save

    def dies_half_way(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"PK half a zip")
        raise RuntimeError("killed during the write")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(RuntimeError):
        io.save_checkpoint({"step": 3}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target)["step"] == 2  # the old checkpoint, whole
    assert _temps(target.parent) == [other]

    def disk_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(DiskFull, match=f"no space left on the disk while writing {target}"):
        io.save_checkpoint({"step": 4}, target)
    assert torch.load(target, weights_only=False) is not None


def test_a_full_disk_during_a_runs_checkpoint_save_fails_it_as_a_full_disk(make_cfg, monkeypatch, capsys) -> None:
    """The third checkpoint save (epoch 2's) writes to /dev/full, so torch itself meets ENOSPC (given a
    path, torch says only "unexpected pos"): one line naming the file, metrics.json failed with DiskFull,
    and epoch 1's last.ckpt whole."""
    import contextlib

    import sdbert.io

    real = sdbert.io.atomic_path
    saves: list[str] = []

    @contextlib.contextmanager
    def full_from_the_third_save(path: Any) -> Any:
        if Path(path).suffix == ".ckpt":
            saves.append(Path(path).name)
            if len(saves) > 2:
                yield Path("/dev/full")
                return
        with real(path) as tmp:
            yield tmp

    monkeypatch.setattr(sdbert.io, "atomic_path", full_from_the_third_save)
    cfg = make_cfg("trainer.max_epochs=2", "trainer.enable_progress_bar=false", "strategy=base")
    with pytest.raises(SystemExit) as info:
        main_job(cfg)
    assert info.value.code == 1
    ckpts = Path(cfg.paths.output_dir) / CHECKPOINT_DIR
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 1 and f"no space left on the disk while writing {ckpts.resolve()}" in errors[0]
    summary = json.loads((Path(cfg.paths.output_dir) / SUMMARY_FILE).read_text())
    assert summary["status"] == "failed" and summary["error_type"] == "DiskFull"
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert last["epoch"] == 0 and last["global_step"] == 5 and not _temps(ckpts)


KILLED_SAVER = """
import sys, torch
from sdbert.checkpointing import AtomicCheckpointIO
io, big = AtomicCheckpointIO(), torch.randn(64, 1024, 1024)
for step in range(1000):
    io.save_checkpoint({"step": step, "w": big}, sys.argv[1])
"""


def test_a_killed_save_leaves_a_whole_checkpoint_and_its_temp_is_cleared_by_the_next(tmp_path) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVER, str(target)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (target.exists() and _temps(target.parent)) and time.monotonic() < deadline:
            time.sleep(0.005)  # wait until a save is under way after a first one finished
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _temps(target.parent), "the saver never got to a second save"
    assert torch.load(target, mmap=True)["w"].shape == (64, 1024, 1024)  # the previous save, whole
    AtomicCheckpointIO().save_checkpoint({"step": -1}, target)
    assert not _temps(target.parent) and remove_stale_temps(target) == []


def test_the_trainer_saves_through_the_atomic_checkpoint_io(make_cfg) -> None:
    trainer = factory.build_trainer(make_cfg(), [])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# --------------------------------------------------------------------------- 4 + 5. config checks


def test_max_length_is_checked_against_the_models_positions(make_cfg) -> None:
    checks.check_config(make_cfg("dataset.max_length=512"), overrides=[])
    with pytest.raises(ConfigError, match=r"tiny \(random init\): 512 positions\); use dataset.max_length=512"):
        checks.check_config(make_cfg("dataset.max_length=513"), overrides=[])
    # a random-init geometry with fewer positions is what counts
    with pytest.raises(ConfigError, match="64 positions"):
        cfg = make_cfg("dataset.max_length=128", "+model.random_init.max_position_embeddings=64")
        checks.check_config(cfg, overrides=[])


def test_paper_experiment_without_a_gpu_names_both_ways_out(make_cfg, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        checks.check_config(make_cfg("experiment=paper", fast=False), overrides=[])
    assert "add trainer=cpu" in str(info.value) and "experiment=main" in str(info.value)
    checks.check_config(make_cfg("experiment=paper", "trainer=cpu", fast=False), overrides=[])


@pytest.mark.parametrize(
    ("strategy", "overrides", "warned"),
    [
        ("base", ["teacher_size=3"], ["teacher_size=3"]),
        ("se", ["distill_weight=2"], ["distill_weight=2"]),
        ("base", [], []),  # the config's default K is not the user's choice
        ("sda", ["teacher_size=3", "distill_weight=2"], []),
    ],
)
def test_teacher_keys_without_a_teacher_warn(make_cfg, caplog, strategy, overrides, warned) -> None:
    cfg = make_cfg(f"strategy={strategy}", *overrides)
    with caplog.at_level(logging.WARNING, logger="sdbert"):
        checks.check_config(cfg, overrides=[f"strategy={strategy}", *overrides])
    messages = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert [m.split(" ")[0] for m in messages] == warned


# --------------------------------------------------------------------------- 7. sweeps


def _job(sweep: Path, num: int, overrides: list[str], summary: dict[str, Any] | None) -> Path:
    folder = sweep / str(num)
    (folder / OVERRIDES_FILE).parent.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / OVERRIDES_FILE)
    if summary is not None:
        (folder / SUMMARY_FILE).write_text(json.dumps(summary))
    return folder


def test_sweep_report_lists_every_job_and_fails_the_sweep(tmp_path, capsys) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["teacher_size=1"], {"status": "ok", "model": "tiny (random init)", "test": {"test/acc": 61.5}})
    _job(sweep, 1, ["teacher_size=0"], {"status": "failed", "error": "teacher_size must be >= 1"})
    _job(sweep, 10, ["teacher_size=2"], None)  # killed: no metrics.json
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as info:
        SweepReport().on_multirun_end(config=config)
    assert info.value.code == 1
    out = capsys.readouterr().out
    assert [j.folder.name for j in sweep_jobs(sweep)] == ["0", "1", "10"]  # job order, not text order
    assert "61.50" in out and "teacher_size=1" in out and "1 of 3 jobs ok, 2 failed:" in out
    assert f"failed: {sweep / '1'}: teacher_size must be >= 1" in out
    assert f"failed: {sweep / '10'}: no metrics.json" in out
    # all ok: the table, no exit
    ok = tmp_path / "ok"
    _job(ok, 0, [], {"status": "ok", "test": {"test/acc": 50.0}})
    SweepReport().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(ok)}}}))
    assert "1 of 1 jobs ok" in format_jobs(sweep_jobs(ok))


def test_a_crashing_sweep_job_is_recorded_and_the_sweep_goes_on(make_cfg, monkeypatch, caplog, capsys) -> None:
    """Not only one-line errors: a bug's traceback goes to the job's log, its folder says failed."""
    from sdbert import run

    def crash(cfg: Any, hooks: Any = None) -> None:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(run, "train", crash)
    monkeypatch.setattr(run, "_in_multirun", lambda: True)
    cfg = make_cfg()
    with caplog.at_level(logging.ERROR, logger="sdbert"):
        assert run.main_job(cfg) is None
    failure = json.loads((Path(cfg.paths.output_dir) / SUMMARY_FILE).read_text())
    assert failure == {"status": "failed", "error": "RuntimeError: a bug over two lines", "error_type": "RuntimeError"}
    assert any(r.exc_info for r in caplog.records)  # the traceback is logged, not lost
    assert _errors(capsys.readouterr().err) == ["sdbert: error: RuntimeError: a bug over two lines"]
    monkeypatch.setattr(run, "_in_multirun", lambda: False)
    with pytest.raises(RuntimeError):  # a single run still shows a bug's traceback
        run.main_job(make_cfg(out=Path(cfg.paths.output_dir).parent / "single"))


@pytest.mark.long
def test_multirun_with_a_failed_job_exits_nonzero_with_the_table(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    out, err = _train_py(
        "-m", *FAST, "trainer.enable_progress_bar=false", "strategy=sda", "teacher_size=0,1",
        f"hydra.sweep.dir={sweep}",
    ).communicate(timeout=600)
    jobs = {j.folder.name: j for j in sweep_jobs(sweep)}
    assert jobs["0"].status == "failed" and jobs["1"].status == "ok", out + err
    table = out[out.index(f"sweep {sweep}:"):]
    assert "1 of 2 jobs ok, 1 failed:" in table and f"failed: {sweep / '0'}: teacher_size must be >= 1" in table
    assert "tiny (random init)" in table
    assert _errors(err)[-1] == "sdbert: error: 1 of 2 sweep jobs failed (see above)"


# --------------------------------------------------------------------------- one run per folder (issue 22, 4)

HOLD_LOCK = """
import sys, time
from sdbert.rundir import acquire_run_lock
acquire_run_lock(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_a_folder_locked_by_a_running_run_is_refused_in_one_line(tmp_path: Path) -> None:
    from sdbert.errors import RunDirInUse
    from sdbert.rundir import release_run_lock, run_lock

    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        match = f"in use by a run still going \\(process {holder.pid}\\)"
        with pytest.raises(RunDirInUse, match=match) as info, run_lock(folder):
            pass
        assert "\n" not in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    with run_lock(folder), run_lock(folder):  # free once its holder is gone; re-entrant in one process
        pass
    release_run_lock(folder)  # nothing held: nothing to do


@pytest.mark.long
def test_two_runs_started_together_in_one_folder_one_is_refused_never_mixed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    common = [*FAST, "strategy=base", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    procs = {seed: _train_py(*common, f"seed={seed}") for seed in (1, 2)}
    out = {seed: proc.communicate(timeout=600) for seed, proc in procs.items()}
    codes = {seed: proc.returncode for seed, proc in procs.items()}
    assert sorted(codes.values()) == [0, 1], {s: o[1][-2000:] for s, o in out.items()}
    winner = next(seed for seed, code in codes.items() if code == 0)
    loser = 3 - winner
    errors = _errors(out[loser][1])
    assert len(errors) == 1 and "in use by a run still going" in errors[0]
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert summary["status"] == "ok" and summary["seed"] == winner
    assert OmegaConf.load(run_dir / CONFIG_FILE).seed == winner
