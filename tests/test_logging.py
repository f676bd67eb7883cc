"""Watching runs: W&B offline runs read back with ``wandb leet inspect``, multirun grouping, no prompts,
the summary table and the per-step callbacks."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sdbert import callbacks as sdb_callbacks
from sdbert import loggers
from sdbert.config import instantiate
from sdbert.errors import ConfigError, TrainingDiverged
from sdbert.run import main_job, train
from sdbert.spec import RunSpec
from sdbert.strategies import SelfDistillationAveraged, Vanilla
from sdbert.summary import SUMMARY_COLUMNS, format_summary_table, format_time_split, print_summary
from tests.conftest import ROOT

WANDB = shutil.which("wandb", path=str(Path(sys.executable).parent)) or "wandb"
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"
TINY_CLI = [
    "model=tiny", "dataset=bbc_news", "dataset.train_per_class=4", "dataset.eval_size=16", "dataset.max_length=32",
    "trainer.max_epochs=1", "trainer.accelerator=cpu",
]


# -- helpers ---------------------------------------------------------------------------------------
def inspect_records(path: Path) -> list[dict]:
    """Every record of a run's ``.wandb`` file: ``wandb leet inspect --json`` prints one JSON per line."""
    proc = subprocess.run(
        [WANDB, "leet", "inspect", "--json", str(path)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def inspect_summary(path: Path) -> dict:
    """``wandb leet inspect --summary --json``: state, exit code, config, tags and the final summary."""
    proc = subprocess.run(
        [WANDB, "leet", "inspect", "--summary", "--json", str(path)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=True,
    )
    return json.loads(proc.stdout)


def history(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def run_record(records: list[dict]) -> dict:
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    return run


def wandb_files(root: Path) -> list[Path]:
    return sorted(root.glob("**/wandb/offline-run-*/run-*.wandb"))


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """No key, no .netrc entry, no mode in the environment: the automatic decision must be offline."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def _kill_group(proc: subprocess.Popen) -> None:
    """The child and what it started (wandb's service), so a hung test leaves nothing behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run_closed_stdin(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` with stdin at end-of-file: anything that waits for input fails or times out."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        pytest.fail(f"{' '.join(cmd[:4])} ... still running after {timeout}s (waiting for input?)")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _env_without_credentials(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # one torch thread: two busy cores shared with other processes make multi-threaded tiny runs crawl
    env.update(NETRC=str(tmp_path / "no-netrc"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


# -- mode decision -------------------------------------------------------------------------------
def test_mode_is_decided_from_env_and_files_only(no_credentials, monkeypatch, tmp_path):
    assert loggers.resolve_mode(None)[0] == "offline"
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine example.org login user password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert loggers.resolve_mode(None)[0] == "offline"  # an entry for another host is not a W&B login
    netrc.write_text(f"machine api.wandb.ai login user password {FAKE_KEY}\n")
    assert loggers.resolve_mode(None)[0] == "online"  # what `wandb login` writes
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert loggers.resolve_mode(None)[0] == "online"
    assert loggers.resolve_mode("offline")[0] == "offline"  # the config wins over credentials
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert loggers.resolve_mode(None)[0] == "offline"
    assert loggers.resolve_mode("disabled")[0] == "disabled"
    monkeypatch.delenv("WANDB_API_KEY")
    mode, why = loggers.resolve_mode("online")  # online without credentials would make wandb prompt
    assert mode == "offline" and "no W&B credentials" in why
    with pytest.raises(ConfigError, match=re.escape("logger.wandb.mode='sometimes'")):
        loggers.resolve_mode("sometimes")


def test_wandb_identity_names_and_tags(make_cfg):
    cfg = make_cfg("strategy=sdv", "teacher_size=3", "distill_weight=0.5", "seed=7", "data_seed=9")
    ident = loggers.wandb_identity(RunSpec.from_config(cfg, instantiate(cfg.strategy).describe()))
    assert ident["name"] == "sdv-K3-distill_weight0.5-bbc_news-all-minilm-l6-v2-random-s7-d9"  # λ is off its default
    assert ident["tags"] == [
        "strategy=sdv", "K=3", "distill_weight=0.5", "teacher_dropout=True", "distill_target=logits",
        "distill_warmup=0", "dataset=bbc_news", "model=all-minilm-l6-v2-random", "seed=7", "data_seed=9",
    ]
    assert ident["group"] is None  # not a multirun
    base_cfg = make_cfg("strategy=base")
    base = loggers.wandb_identity(RunSpec.from_config(base_cfg, instantiate(base_cfg.strategy).describe()))
    assert base["name"] == "base-bbc_news-all-minilm-l6-v2-random-s42-d42"


# -- one offline run, read back --------------------------------------------------------------------
def test_logger_wandb_without_the_package_says_how_to_install_it_or_log_to_csv(make_cfg, monkeypatch):
    from sdbert.factory import instantiate_group

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails as it does where wandb is not installed
    with pytest.raises(ConfigError) as err:
        instantiate_group(make_cfg("logger=wandb").logger)
    message = str(err.value)
    assert "pip install wandb" in message and "logger=csv" in message and "\n" not in message


def test_offline_run_under_run_dir_with_expected_history_and_summary(make_cfg, no_credentials, capsys):
    import wandb

    cfg = make_cfg(
        "logger=wandb", "logger.wandb.log_model=true", "strategy=sda", "teacher_size=2",
        "trainer.accumulate_grad_batches=2",
    )
    out = Path(cfg.paths.output_dir)
    summary = main_job(cfg)
    assert wandb.run is None  # finished before main_job returned
    (run_file,) = wandb_files(out)
    assert run_file.is_relative_to(out / "wandb")
    info = summary["wandb"]
    assert info["mode"] == "offline" and Path(info["run_dir"]) == run_file.parent
    assert info["sync_command"] == f"wandb sync {run_file.parent}"

    records = inspect_records(run_file)
    run = run_record(records)
    assert run["display_name"] == "sda-K2-bbc_news-all-minilm-l6-v2-random-s42-d42"
    assert {"strategy=sda", "K=2", "distill_weight=1", "dataset=bbc_news", "seed=42"} <= set(run["tags"])
    config = run["config"]["update"]
    assert config["dataset"]["name"] == "bbc_news" and config["teacher_size"] == 2  # the resolved config
    assert config["logger"]["wandb"]["save_dir"] == str(out)

    rows = history(records)
    # 5 batches of 4, accumulation 2 -> 3 optimizer steps; one row each with CE, MSE and loss apart
    steps = summary["optimizer_steps"]
    assert steps == 3
    train_rows = [r for r in rows if "train/ce" in r]
    assert [r["trainer/global_step"] for r in train_rows] == list(range(steps))
    assert all("train/mse" in r for r in train_rows[1:])  # SDA has a teacher from the second step on
    for r in train_rows:
        assert {"train/loss", "perf/step_time_s"} <= r.keys() and r["perf/samples_per_s"] > 0
        assert r["train/loss"] == pytest.approx(r["train/ce"] + 1.0 * r.get("train/mse", 0.0), rel=1e-5)
    assert sum(r["perf/samples_per_s"] * r["perf/step_time_s"] for r in train_rows) == pytest.approx(20, rel=1e-6)
    lr_keys = {f"lr-AdamW/{g}" for g in ("encoder", "encoder_no_decay", "head", "head_no_decay")}
    lr_rows = [r for r in rows if lr_keys & r.keys()]
    assert len(lr_rows) == steps and all(lr_keys <= r.keys() for r in lr_rows)  # once per step, every group
    val_rows = [r for r in rows if "val/acc" in r]
    assert len(val_rows) == 1 and {"val/err", "val/teacher/acc", "val/teacher/err"} <= val_rows[0].keys()

    (artifact,) = [r["artifact"] for r in records if r["type"] == "artifact"]  # log_model: the best checkpoint
    assert artifact["type"] == "model" and "best" in artifact["aliases"]
    (entry,) = artifact["manifest"]["contents"]
    assert entry["path"] == "model.ckpt" and entry["local_path"] == str(out / "checkpoints" / "best.ckpt")

    final = inspect_summary(run_file)
    assert final["state"] == "finished" and final["exit_code"] == 0
    assert final["summary"]["test/acc"] == pytest.approx(summary["test"]["test/acc"])
    assert final["summary"]["test/err"] == pytest.approx(summary["test"]["test/err"])
    assert final["summary"]["best_epoch"] == summary["best_epoch"] == 1
    assert final["summary"]["best_val_acc"] == pytest.approx(summary["best_val_acc"])

    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["test"] == summary["test"] and on_disk["wandb"]["run_dir"] == str(run_file.parent)
    assert "train/ce" in (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")

    printed = capsys.readouterr().out
    assert printed.count(f"wandb sync {run_file.parent}") == 1
    assert all(col in printed for col in SUMMARY_COLUMNS)


def test_failed_job_finishes_its_run(make_cfg, no_credentials):
    import wandb

    cfg = make_cfg("logger=wandb", "callbacks.divergence_guard.max_loss=0.001")
    with pytest.raises(TrainingDiverged):
        train(cfg)
    assert wandb.run is None
    (run_file,) = wandb_files(Path(cfg.paths.output_dir))
    final = inspect_summary(run_file)
    assert final["exit_code"] == 1 and final["state"] == "failed"


# -- a sweep: one run per job, one group per sweep, nothing reads stdin ----------------------------
@pytest.mark.long
def test_two_job_multirun_makes_two_finished_runs_in_one_group(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _run_closed_stdin(
        [sys.executable, "train.py", "-m", *TINY_CLI, "logger=wandb", "strategy=base,sda", f"hydra.sweep.dir={sweep}"],
        env=_env_without_credentials(tmp_path), timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = wandb_files(sweep)
    assert [f.relative_to(sweep).parts[0] for f in files] == ["0", "1"]  # under each job's run directory
    runs = [run_record(inspect_records(f)) for f in files]
    finals = [inspect_summary(f) for f in files]
    assert {r["run_group"] for r in runs} == {sweep.name}
    assert [r["display_name"] for r in runs] == ["base-bbc_news-tiny-s42-d42", "sda-Kall-bbc_news-tiny-s42-d42"]
    assert all("model=tiny" in r["tags"] for r in runs)
    assert [f["state"] for f in finals] == ["finished", "finished"]
    assert all("test/acc" in f["summary"] for f in finals)
    assert finals[0]["last_write"] <= finals[1]["start_time"]  # the first job's run ended before the second began
    for f in files:
        assert proc.stdout.count(f"wandb sync {f.parent}") == 1
    assert proc.stdout.count("output directory") == 2  # one summary table per job
    assert "Traceback" not in proc.stderr


def _run_in_terminal(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run ``cmd`` with stdin/stdout/stderr on a pseudo-terminal nobody types into: a prompt would hang."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True, start_new_session=True
    )
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                _kill_group(proc)
                return None, out.decode(errors="replace")
            ready, _, _ = select.select([master], [], [], 0.2)
            data = b""
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    data = b""
            if data:
                out += data
            elif proc.poll() is not None:
                return proc.wait(), out.decode(errors="replace")
    finally:
        os.close(master)


_SCRIPT = """
import json, sys
from sdbert.loggers import WandbLogger
lg = WandbLogger(save_dir=sys.argv[1], mode="online", init_timeout=3)
lg.describe_run({"k": 1}, {"name": "probe", "tags": [], "group": None})
lg.log_metrics({"train/loss": 1.0}, step=0)
print("RESULT " + json.dumps(lg.finish({"done": 1})))
"""


@pytest.mark.long
def test_online_request_in_a_terminal_never_prompts_or_blocks(tmp_path):
    """Raw ``wandb.init(mode="online")`` without credentials asks "Enter your choice" on a terminal and waits
    forever; sdbert logs offline instead. With credentials but no server, the start times out and falls back."""
    from concurrent.futures import ThreadPoolExecutor

    no_key = _env_without_credentials(tmp_path)
    no_server = {**no_key, "WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    cases = {"no_credentials": no_key, "server_unreachable": no_server}
    with ThreadPoolExecutor(len(cases)) as pool:  # two interpreters at once: half the wall time
        futures = {
            case: pool.submit(_run_in_terminal, [sys.executable, "-c", _SCRIPT, str(tmp_path / case)], env, 120)
            for case, env in cases.items()
        }
        results = {case: f.result() for case, f in futures.items()}
    for case, (rc, out) in results.items():
        assert rc == 0, f"{case}: {out[-2000:]}"
        assert "Enter your choice" not in out
        info = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
        assert info["mode"] == "offline" and info["sync_command"].startswith("wandb sync "), case
        (run_file,) = wandb_files(tmp_path / case)
        assert inspect_summary(run_file)["summary"]["done"] == 1
    assert "online start failed" in results["server_unreachable"][1]


# -- summary table and callbacks -------------------------------------------------------------------
def test_summary_table_has_the_expected_columns(capsys):
    long_dir = "/runs/" + "x" * 150
    described = SelfDistillationAveraged(teacher_size=2).describe().to_dict()
    sda = {"dataset": "snli", "model": "minilm", "strategy": described,
           "epochs": 3, "best_epoch": 2, "test": {"test/acc": 87.123, "test/err": 12.877, "test/teacher/acc": 86.0},
           "wall_time_s": 3725.0, "output_dir": long_dir, "wandb": None}
    mnli = {"dataset": "mnli", "strategy": Vanilla().describe().to_dict(), "epochs": 1, "best_epoch": None,
            "wall_time_s": 65.2,
            "test": {"test_matched/acc": 84.1, "test_mismatched/acc": 84.5}, "output_dir": "/r/m"}
    table = format_summary_table([sda, mnli]).splitlines()
    # an 80-column terminal: MNLI's two test accuracies leave no room for the best epoch and the directory
    assert re.split(r"\s{2,}", table[0]) == ["dataset", "model", "method", "test acc (%)", "wall time"]
    assert set(SUMMARY_COLUMNS) - set(re.split(r"\s{2,}", table[0])) == {"best epoch", "output directory"}
    assert re.split(r"\s{2,}", table[2]) == ["snli", "minilm", "SDA (K=2)", "87.12", "1h02m"]
    assert "test_matched 84.10, test_mismatched 84.50" in table[3] and "1m05s" in table[3]
    assert all(len(line) <= 80 for line in table[:4])
    # the columns that do not fit follow the table, one line per run and column, not cut
    assert table[4:] == ["dataset snli · best epoch: 2/3", f"dataset snli · output directory: {long_dir}",
                         "dataset mnli · best epoch: -", "dataset mnli · output directory: /r/m"]
    print_summary(sda)
    printed = capsys.readouterr().out.strip().splitlines()
    assert re.split(r"\s{2,}", printed[2]) == ["snli", "minilm", "SDA (K=2)", "87.12", "2/3", "1h02m"]
    assert printed[3] == f"output directory: {long_dir}"
    assert len(printed) == 4  # no W&B line without a W&B run


def test_the_time_line_under_the_table_splits_the_wall_time_within_80_columns(capsys):
    split = {"setup": 41.0, "training": 730.4, "validation": 151.0, "test": 782.0, "checkpoints": 6.0, "other": 3.2}
    run = {"dataset": "imdb", "strategy": "sdv", "epochs": 1, "best_epoch": 1, "test": {"test/acc": 75.81},
           "wall_time_s": sum(split.values()), "output_dir": "/r", "wall_time_split_s": split}
    print_summary(run)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[3] == "setup 41s · training 12m10s · validation 2m31s · test 13m02s · other 9s"
    longest = dict.fromkeys(split, 99 * 3600.0 + 59 * 60)
    assert len(format_time_split({"wall_time_split_s": longest})) <= 80
    assert format_time_split({"wall_time_s": 3.0}) is None  # a summary without the split (older runs)


def test_throughput_logs_samples_per_second_per_optimizer_step(monkeypatch):
    """3 micro-batches of 4, accumulation 2: optimizer steps end at batches 1 and 2 → two logs: 8 and 4 samples."""
    clock = iter([10.0, 12.0, 13.0])  # first batch starts; step 1 ends; step 2 ends
    monkeypatch.setattr(sdb_callbacks.time, "perf_counter", lambda: next(clock))
    logged: list[tuple[str, float, bool]] = []
    module = SimpleNamespace(
        device=torch.device("cpu"), log=lambda key, value, prog_bar=False, **kw: logged.append((key, value, prog_bar))
    )
    trainer = SimpleNamespace(global_step=0)
    cb = sdb_callbacks.Throughput()
    cb.on_train_epoch_start(trainer, module)
    batch = {"input_ids": torch.zeros(4, 7), "labels": torch.zeros(4)}
    for idx, step_after in enumerate([0, 1, 2]):
        cb.on_train_batch_start(trainer, module, batch, idx)
        trainer.global_step = step_after
        cb.on_train_batch_end(trainer, module, {}, batch, idx)
    assert logged == [
        ("perf/step_time_s", 2.0, False), ("perf/samples_per_s", 4.0, True),
        ("perf/step_time_s", 1.0, False), ("perf/samples_per_s", 4.0, True),
    ]


@pytest.mark.parametrize(
    "overrides,expected",
    [([], "RichProgressBar"), (["callbacks.progress_bar.kind=tqdm"], "TQDMProgressBar"),
     (["trainer.enable_progress_bar=false"], None)],
)
def test_progress_bar_config(make_cfg, overrides, expected, monkeypatch):
    from lightning.pytorch.callbacks import ProgressBar

    from sdbert.progress import PassReporter
    from sdbert.run import build

    monkeypatch.setattr(sdb_callbacks, "stdout_is_terminal", lambda: True)  # the bar shown on a terminal

    _, _, trainer, _ = build(make_cfg(*overrides))
    bars = [cb for cb in trainer.callbacks if isinstance(cb, ProgressBar)]
    assert [type(cb).__mro__[1].__name__ for cb in bars] == ([expected] if expected else [])  # Lightning's bar
    assert all(isinstance(cb, PassReporter) for cb in bars)  # ... that also shows the epoch test's passes
    assert any(isinstance(cb, sdb_callbacks.Throughput) for cb in trainer.callbacks)


def test_disabled_mode_writes_nothing_and_leaves_no_run_open(tmp_path, no_credentials):
    import wandb

    lg = loggers.WandbLogger(save_dir=tmp_path, mode="disabled")
    lg.describe_run({"k": 1}, {"name": "probe", "tags": [], "group": None})
    lg.log_metrics({"train/loss": 1.0}, step=0)
    assert lg.finish({"done": 1}) is None and wandb.run is None
    assert not list(tmp_path.rglob("*.wandb"))
