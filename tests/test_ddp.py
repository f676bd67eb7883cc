"""Data parallelism (Lightning DDP) with two CPU processes (gloo): ranks agree bit for bit, and the run
follows a one-process run of the same global batch. Slow on a small shared CPU: ``pytest -m ddp``."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from tests.conftest import FAST, ROOT

pytestmark = [pytest.mark.ddp, pytest.mark.long]

RUN = [
    *FAST, "trainer.enable_progress_bar=false", "model.dropout=0.0", "strategy=sda", "teacher_size=2",
    "trainer.max_epochs=2", "trainer.accumulate_grad_batches=1",
]


def _train(run_dir, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "train.py", *RUN, *args, f"hydra.run.dir={run_dir}",
         "+callbacks.dump._target_=tests.helpers.DumpRankState", f"+callbacks.dump.dirpath={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _losses(run_dir) -> pd.Series:
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return frame.dropna(subset=["train/loss"]).set_index("step")["train/loss"]


def test_two_processes_agree_and_follow_the_one_process_run(tmp_path):
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    _train(ddp, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "dataset.batch_size=2")
    _train(one, "dataset.batch_size=4")

    ranks = [torch.load(ddp / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # every rank applied the same averaged gradients: student and teacher state identical, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["params"], ranks[1]["params"], strict=True))
    ring = [r["strategy"]["average"]["ring"] for r in ranks]
    assert ring[0]["pushes"] == ring[1]["pushes"] == ranks[0]["global_step"]
    for slot_a, slot_b in zip(ring[0]["slots"], ring[1]["slots"], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(slot_a, slot_b, strict=True))

    # the global batch of 2 ranks x 2 is the one-process batch of 4: same steps, same losses (fp32)
    single = torch.load(one / "rank0.pt", weights_only=False)
    assert single["global_step"] == ranks[0]["global_step"] == 10
    ddp_loss, one_loss = _losses(ddp), _losses(one)
    assert list(ddp_loss.index) == list(one_loss.index) and len(one_loss) == 10
    assert torch.allclose(torch.tensor(ddp_loss.values), torch.tensor(one_loss.values), rtol=1e-4, atol=1e-5)
    for a, b in zip(ranks[0]["params"], single["params"], strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)

    # one checkpoint folder, one metrics.json and complete test predictions, written once
    summary = json.loads((ddp / "metrics.json").read_text())
    assert summary["status"] == "ok" and summary["optimizer_steps"] == 10
    preds = torch.load(ddp / "predictions" / "test.pt")
    assert preds["probs"].shape[0] == 16  # the whole test set, not one rank's half
    assert torch.allclose(preds["probs"], torch.load(one / "predictions" / "test.pt")["probs"], atol=1e-4)
