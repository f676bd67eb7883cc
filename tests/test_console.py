"""The console of a run: one copy of each line, no advertising, plain progress lines when not a terminal,
and a --help that teaches."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST, ROOT

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


@pytest.mark.long
def test_each_line_once_no_tip_and_plain_progress_when_not_a_terminal(tmp_path):
    fast = [o for o in FAST if not o.startswith("dataset.train_per_class=")]
    cmd = [sys.executable, "train.py", *fast, "dataset.train_per_class=8", f"hydra.run.dir={tmp_path / 'run'}",
           "callbacks.progress_bar.every_n_seconds=0.001", "export=true"]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)  # stdout: a pipe
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    messages = [re.sub(r"^\[[^]]*\]\[[^]]*\]\[\w+\] - |^\w+: ", "", line) for line in lines]
    repeated = {m for m in messages if m.strip() and messages.count(m) > 1 and "step" not in m}
    assert not repeated, repeated
    assert any("GPU available" in m for m in messages)  # Lightning's lines are still there, once
    assert not any("Tip:" in line or "litlogger" in line for line in lines)
    plain = re.compile(r"epoch 1/1 · step \d+/10 · train/loss [\d.]+ · [\d.]+ samples/s")
    progress = [line for line in lines if plain.search(line)]
    assert len(progress) >= 2 and any("ETA" in line for line in progress)
    assert any(re.search(r"epoch 1/1 validation · done in \dm\d\ds · \d+ batches · val/acc", line) for line in lines)
    assert "━" not in proc.stdout  # no rich bar drawn into a pipe
    assert (tmp_path / "run" / "hf" / "model.safetensors").is_file()  # train.py wires export=true


#: a FAST job's evaluation passes as its log names them: validation, the per-epoch test, the final test
PASSES = ("epoch 1/1 validation", "epoch 1/1 test", "test")
#: examples in its validation and test sets, one per batch: passes long enough for a few progress lines
EVAL = 32
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[sdbert\]\[INFO\] - (.*)$")


def _sdbert_lines(text: str) -> list[tuple[float, str]]:
    """(seconds, message) of each ``sdbert`` log line (Hydra's format stamps them to the millisecond)."""
    from datetime import datetime

    found = []
    for line in text.splitlines():
        if m := STAMP.match(line):
            found.append((datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp(), m[2]))
    return found


@pytest.mark.long
def test_a_job_logging_to_a_file_reports_every_pass_no_more_often_than_asked(tmp_path):
    interval = 0.02
    log_file = tmp_path / "job.log"
    fast = [o for o in FAST if not o.startswith(("dataset.eval_size=", "dataset.eval_batch_size="))]
    cmd = [sys.executable, "train.py", *fast, f"dataset.eval_size={EVAL}", "dataset.eval_batch_size=1",
           "callbacks=with_epoch_test",
           f"callbacks.progress_bar.every_n_seconds={interval}", f"hydra.run.dir={tmp_path / 'run'}"]
    with log_file.open("w") as out:  # a batch job: stdout to a file
        proc = subprocess.run(cmd, cwd=ROOT, env={**ENV, "OMP_NUM_THREADS": "1"}, stdout=out,
                              stderr=subprocess.STDOUT, timeout=600)
    text = log_file.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = _sdbert_lines(text)
    messages = [m for _, m in lines]
    for name in PASSES:
        mine = [(t, m) for t, m in lines if m.startswith(f"{name} · ")]
        assert mine[0][1] == f"{name} · {EVAL} batches · {EVAL} examples · started", mine
        assert re.fullmatch(rf"{name} · done in 0m0\ds · {EVAL} batches · (test|val)/acc [\d.]+.*", mine[-1][1]), mine
        progress = mine[:-1]  # the start line, then its progress lines
        assert len(progress) >= 2, f"{name}: no progress line within {EVAL} batches"
        for (t0, _), (t1, m) in itertools.pairwise(progress):
            assert re.fullmatch(rf"{name} · batch \d+/{EVAL} · [\d.]+ samples/s( · ETA \dm\d\ds)?", m)
            assert t1 - t0 >= interval - 0.002, (name, m, t1 - t0)  # the stamps drop sub-millisecond parts
    training = [t for t, m in lines if m.startswith("epoch 1/1 · step ")]
    assert len(training) >= 2 and min(b - a for a, b in itertools.pairwise(training)) >= interval - 0.002
    assert messages.index(f"test · {EVAL} batches · {EVAL} examples · started") > messages.index(
        f"epoch 1/1 test · {EVAL} batches · {EVAL} examples · started")
    table_end = text.rstrip().splitlines()[-1]
    assert re.fullmatch(r"setup \w+ · training \w+ · validation \w+ · test \w+ · other \w+", table_end)


def test_help_teaches_keys_groups_and_examples():
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for key in ("strategy=base|se|sda|sdv", "teacher_size=K", "distill_weight=λ", "seed=N", "data_seed=N",
                "experiment=NAME"):
        assert key in text
    assert re.search(r"^strategy: base, ema, sda, sdv, se$", text, re.M)  # the groups with their options
    assert re.search(r"^hparams_search: .*sdbert_optuna_cpu", text, re.M)
    assert len(re.findall(r"^\s+python train.py", text, re.M)) == 3
    assert "flush_denormal" not in text and len(text.splitlines()) < 60  # not the config dump
    assert "resume=RUN_DIR|auto" in text  # continuing a run, and ckpt_path as the README puts it
    assert re.search(r"ckpt_path=PATH +start from a Lightning checkpoint with \*this\* config, in a new folder", text)


def test_no_third_party_deprecation_warning_from_every_run():
    import warnings

    from torchdata.stateful_dataloader import StatefulDataLoader

    from sdbert.console import quiet_console

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_console()
        StatefulDataLoader(list(range(4)), batch_size=2)  # what every run's train loader is
    assert not [w for w in caught if "deprecated" in str(w.message)], [str(w.message) for w in caught]


def test_cfg_job_resolve_shows_the_resolved_k_and_the_run_folder():
    proc = subprocess.run([sys.executable, "train.py", "strategy=sdv", "dataset=imdb", "--cfg", "job", "--resolve"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^teacher_size: 5$", proc.stdout, re.M)  # Table 2: SDV on IMDb, K = 5
    # the folder a run would get (hydra.run.dir, made absolute as a run makes it), not None/checkpoints
    run = re.search(r"^  output_dir: (.*)$", proc.stdout, re.M)
    assert run and re.fullmatch(rf"{re.escape(str(ROOT))}/logs/train/runs/\S+_sdv-K5_imdb_seed42_[0-9a-f]{{6}}",
                                run[1]), proc.stdout
    assert f"dirpath: {run[1]}/checkpoints" in proc.stdout and "None" not in proc.stdout
    assert not Path(run[1]).exists()  # printing the config starts no run
