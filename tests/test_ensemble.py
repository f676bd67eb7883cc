"""VOTE and AVG (paper §3.1) on a real multirun: shapes, agreement with a direct computation, refusals.

The multirun (``train.py -m``, 2 strategies x 2 seeds, tiny random-init model, a few BBC News articles)
is the session fixture ``tiny_sweep`` (tests/conftest.py), shared with the report tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sdbert.analysis.ensemble import EnsembleError, check_members, main, vote
from sdbert.analysis.rundirs import load_run
from sdbert.analysis.sweeps import find_runs
from sdbert.config import instantiate
from sdbert.module import NON_INPUTS


def copy_run(src: Path, dst: Path, **config_changes) -> Path:
    """A copy of a run directory without its checkpoints, with some config keys changed."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
    if config_changes:
        cfg = OmegaConf.load(dst / ".hydra" / "config.yaml")
        for key, value in config_changes.items():
            OmegaConf.update(cfg, key, value)
        OmegaConf.save(cfg, dst / ".hydra" / "config.yaml")
    return dst


@pytest.fixture(scope="session")
def ensemble_out(tiny_sweep, tmp_path_factory):
    """The documented command on the sweep directory: ``python -m sdbert.analysis.ensemble <sweep> --out <dir>``."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("ensemble")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main([str(tiny_sweep), "--out", str(out)]) == 0
    return out, stdout.getvalue()


def _base_runs(sweep: Path):
    runs = [r for r in find_runs([sweep]).runs if r.strategy == "base"]
    return sorted(runs, key=lambda r: r.seed)


def test_multirun_completes(tiny_sweep):
    found = find_runs([tiny_sweep])
    assert len(found.runs) == 4 and all(r.ok for r in found.runs)
    assert sorted((r.strategy, r.seed) for r in found.runs) == [("base", 1), ("base", 2), ("sda", 1), ("sda", 2)]
    assert found.missing_jobs() == [] and len(found.sweeps) == 1 and found.sweeps[0].jobs is not None
    for run in found.runs:
        assert (run.path / "predictions" / "test.pt").is_file() and run.checkpoint().name == "last.ckpt"
        hist = run.history()
        per_epoch = hist.dropna(subset=["epoch_test/err"])
        assert per_epoch["epoch"].tolist() == [0, 1]  # the test set after each of the 2 epochs (Fig. 5)
        # tested with the last weights, so the last epoch's test pass is the final test
        assert per_epoch["epoch_test/err"].iloc[-1] == pytest.approx(run.metrics["test"]["test/err"], abs=1e-4)
        if run.strategy == "sda":  # callbacks.epoch_test.extras=true: the teacher's error too
            assert per_epoch["epoch_test/teacher/err"].notna().all()
            if "test/teacher/err" in run.metrics["test"]:
                assert per_epoch["epoch_test/teacher/err"].iloc[-1] == pytest.approx(
                    run.metrics["test"]["test/teacher/err"], abs=1e-4)


def test_vote_is_the_argmax_of_summed_probabilities(tiny_sweep, ensemble_out):
    out, _ = ensemble_out
    runs = _base_runs(tiny_sweep)
    saved = [torch.load(r.path / "predictions" / "test.pt") for r in runs]
    total = saved[0]["probs"].double() + saved[1]["probs"].double()
    labels = saved[0]["labels"]
    expected_acc = (total.argmax(-1) == labels).double().mean().item() * 100

    result = vote(runs)["test"]
    assert result["probs"].shape == (16, 5) and result["labels"].shape == (16,)
    assert torch.allclose(result["probs"].double(), total / 2, atol=1e-6)
    assert result["acc"] == pytest.approx(expected_acc)
    written = torch.load(out / "vote" / "test.pt")
    assert torch.allclose(written["probs"].double(), total / 2, atol=1e-6) and torch.equal(written["labels"], labels)
    summary = json.loads((out / "ensemble.json").read_text())
    assert summary["k"] == 2 and summary["strategy"]["name"] == "base"
    assert [m["seed"] for m in summary["members"]] == [1, 2]
    assert summary["test"]["test"]["vote/acc"] == pytest.approx(expected_acc, abs=1e-4)
    assert summary["test"]["test"]["members/acc"] == [r.metrics["test"]["test/acc"] for r in runs]


def test_avg_is_one_model_with_the_mean_parameters(tiny_sweep, ensemble_out):
    """Brute force: average the checkpoints' state dicts by hand, load, run the test set, compare logits."""
    out, _ = ensemble_out
    runs = _base_runs(tiny_sweep)
    states = [torch.load(r.checkpoint(), map_location="cpu", weights_only=False)["state_dict"] for r in runs]
    mean = {k[len("model."):]: (states[0][k] + states[1][k]) / 2 for k in states[0] if k.startswith("model.")}
    assert not torch.allclose(mean["hf.classifier.weight"], states[0]["model.hf.classifier.weight"])

    cfg = runs[0].config
    model = instantiate(cfg.model, num_labels=5)
    model.load_state_dict(mean)
    model.eval()
    dm = instantiate(cfg.dataset, tokenizer=cfg.model.name_or_path, data_seed=cfg.data_seed,
                     cache_dir=runs[0].resolved["paths"]["cache_dir"])
    dm.prepare_data()
    dm.setup("test")
    with torch.no_grad():
        batches = list(dm.test_dataloader()[0])
        logits = torch.cat([model(**{k: v for k, v in b.items() if k not in NON_INPUTS}) for b in batches])
        labels = torch.cat([b["labels"] for b in batches])
    written = torch.load(out / "avg" / "test.pt")
    assert written["probs"].shape == (16, 5)
    assert torch.equal(written["labels"], labels)
    assert torch.allclose(written["probs"], torch.softmax(logits, -1), atol=1e-5)
    acc = (logits.argmax(-1) == labels).double().mean().item() * 100
    assert json.loads((out / "ensemble.json").read_text())["test"]["test"]["avg/acc"] == pytest.approx(acc, abs=1e-4)


def test_cli_says_what_it_used(ensemble_out):
    _, stdout = ensemble_out
    assert "not used: 2 run(s) of strategy sda" in stdout
    line = next(x for x in stdout.splitlines() if "VOTE" in x)
    assert "K=2 (seeds 1, 2)" in line and "AVG" in line and "ensemble.json" in line


@pytest.mark.parametrize(
    "change,match",
    [
        ({"model.name_or_path": "google-bert/bert-base-uncased"}, "differ in model"),
        ({"dataset.name": "other_news"}, "differ in dataset"),
        ({"dataset.label_names": ["a", "b", "c", "d", "e"]}, r"differ in label set \(dataset.label_names\)"),
        ({"dataset.max_length": 64}, "differ in dataset.max_length"),
        ({"optim.head_lr": 0.5}, "differ in optim.head_lr"),
    ],
)
def test_mismatched_runs_are_refused_in_one_line(tiny_sweep, tmp_path, capsys, change, match):
    base = _base_runs(tiny_sweep)
    other = load_run(copy_run(base[1].path, tmp_path / "other", **change))
    with pytest.raises(EnsembleError, match=match) as info:
        check_members([base[0], other])
    assert "\n" not in str(info.value) and "differ only in seed" in str(info.value)
    assert main([str(base[0].path), str(other.path), "--no-avg"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdbert-ensemble: error:") and "--per-group" in err[0]


def test_other_refusals(tiny_sweep, tmp_path, capsys):
    runs = {(r.strategy, r.seed): r for r in find_runs([tiny_sweep]).runs}
    with pytest.raises(EnsembleError, match="differ in method: BASE"):
        check_members([runs["base", 1], runs["sda", 2]])
    with pytest.raises(EnsembleError, match="at least 2 runs"):
        check_members([runs["base", 1]])
    twin = load_run(copy_run(runs["base", 1].path, tmp_path / "twin"))
    with pytest.raises(EnsembleError, match="same seed 1 and data_seed 42"):
        check_members([runs["base", 1], twin])
    failed = copy_run(runs["base", 2].path, tmp_path / "failed")
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    with pytest.raises(EnsembleError, match="did not finish"):
        check_members([runs["base", 1], load_run(failed)])
    assert main([str(runs["base", 1].path), str(failed), "--no-avg"]) == 1
    assert "1 of 2 base runs did not finish" in capsys.readouterr().err
