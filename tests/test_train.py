"""End to end through the composed Hydra config: fit → test → metrics.json."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from sdbert.run import train
from tests.conftest import ROOT


@pytest.mark.parametrize("strategy", ["base", "se", "sda", "sdv"])
def test_tiny_model_trains_and_tests(make_cfg, strategy):
    cfg = make_cfg(f"strategy={strategy}", "teacher_size=2", "test_extras=true")
    summary = train(cfg)
    out = cfg.paths.output_dir
    assert summary["status"] == "ok" and summary["strategy"]["name"] == strategy
    preds = torch.load(f"{out}/predictions/test.pt")
    recomputed = 100.0 * (preds["probs"].argmax(-1) == preds["labels"]).double().mean().item()
    assert summary["test"]["test/acc"] == pytest.approx(recomputed, abs=1e-3)  # the metric is the saved predictions'
    assert summary["test"]["test/err"] == pytest.approx(100.0 - summary["test"]["test/acc"], abs=1e-4)
    with open(f"{out}/metrics.json") as fh:
        assert json.load(fh)["test"] == summary["test"]
    assert preds["probs"].shape == (16, 5) and torch.allclose(preds["probs"].sum(-1), torch.ones(16))
    if strategy in ("sda", "sdv"):
        assert "test/teacher/acc" in summary["test"]
    if strategy == "se":
        assert "test/student/acc" in summary["test"]


@pytest.mark.slow
def test_embedded_minilm_runs_a_few_steps(make_cfg):
    """The real pretrained model on real SNLI pairs, a handful of optimizer steps."""
    cfg = make_cfg(
        "model=minilm", "dataset=snli", "dataset.train_per_class=8", "dataset.val_size=32", "dataset.eval_size=32",
        "dataset.max_length=64", "dataset.batch_size=8", "trainer.max_epochs=1", fast=False,
    )
    summary = train(cfg)
    assert summary["optimizer_steps"] == 3 and summary["model"] == "embedded:all-minilm-l6-v2"
    preds = torch.load(f"{cfg.paths.output_dir}/predictions/test.pt")
    assert preds["labels"].numel() == 32 and set(preds["labels"].tolist()) <= {0, 1, 2}
    recomputed = 100.0 * (preds["probs"].argmax(-1) == preds["labels"]).double().mean().item()
    assert summary["test"]["test/acc"] == pytest.approx(recomputed, abs=1e-3)
    assert math.isfinite(summary["best_val_acc"])


def test_cli_bad_input_is_one_line(tmp_path):
    """``python train.py`` with a bad K prints one line, no traceback, and exits non-zero."""
    proc = subprocess.run(
        [sys.executable, "train.py", "teacher_size=0", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sdbert: error:")]
    assert len(errors) == 1 and "teacher_size must be >= 1" in errors[0]
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_built_classifier_trains_with_dropout_on():
    """from_pretrained returns eval mode; the recipe's dropout 0.1 must be active in training."""
    from sdbert.classifier import build_classifier

    model = build_classifier("embedded:all-minilm-l6-v2", num_labels=2)  # the pretrained path
    assert all(m.training for m in model.modules())
    ids = torch.randint(1000, 2000, (2, 12))
    assert not torch.equal(model(input_ids=ids), model(input_ids=ids))  # dropout noise


def test_extra_models_are_validated_but_not_tested_by_default(make_cfg):
    summary = train(make_cfg("strategy=sda", "teacher_size=1"))
    assert "val/teacher/acc" in summary["val"]
    assert set(summary["test"]) == {"test/acc", "test/err", "test/f1"}
    assert "val/teacher/f1" in summary["val"] and 0.0 <= summary["test"]["test/f1"] <= 100.0
