"""Export to a Hugging Face folder: loads unchanged in transformers and gives sdbert's probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdbert.export import ExportError, export, main, to_huggingface
from sdbert.trained import TrainedModelError


def _test_texts(run_dir: Path) -> tuple[list[str], torch.Tensor]:
    """The raw texts of the run's test predictions (joined through their row ids) and the saved probabilities."""
    from sdbert.sources.datasets import load_raw

    saved = torch.load(run_dir / "predictions" / "test.pt", weights_only=True)
    raw = load_raw("embedded", name="bbc_news")["test"]
    return [raw[int(r)]["text"] for r in saved["rows"]], saved["probs"]


def _pipeline_probs(folder: Path, texts: list[str]) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    clf = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(folder),
                   top_k=None, device="cpu")
    out = clf(texts, truncation=True, batch_size=4)
    ids = model.config.label2id
    probs = torch.zeros(len(texts), len(ids))
    for i, scores in enumerate(out):
        for s in scores:
            probs[i, ids[s["label"]]] = s["score"]
    return probs


@pytest.mark.parametrize("strategy", ["se", "sda"])
def test_exported_model_gives_the_runs_test_probabilities_through_pipeline(tiny_run, tmp_path, strategy):
    run = tiny_run(f"strategy={strategy}")
    folder = export(run, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    names = ["business", "entertainment", "politics", "sport", "tech"]
    assert config["id2label"] == {str(i): n for i, n in enumerate(names)}
    assert config["label2id"] == {n: i for i, n in enumerate(names)}
    texts, saved = _test_texts(run)
    probs = _pipeline_probs(folder, texts)
    # SE: the saved probabilities are the parameter average's, so this fails if the student were exported
    assert (probs - saved).abs().max().item() <= 1e-5
    card = (folder / "README.md").read_text()
    summary = json.loads((run / "metrics.json").read_text())
    label = summary["strategy"]["label"]
    for text in ("bbc_news", f"| method | {label} |", "| seed / data_seed | 42 / 42 |",
                 f"| `test/acc` | {summary['test']['test/acc']:.2f} |", "`test/f1`"):
        assert text in card
    if strategy == "sda":
        k = summary["strategy"]["keys"]["teacher_size"]
        assert label == f"SDA (K={k})" and f"teacher_size={k}, distill_weight=1.0" in card
    else:
        assert "| exported model | reported (the parameter average) |" in card


def test_sda_teacher_export_is_the_averaged_teacher(tiny_run, tmp_path):
    from sdbert.trained import load_trained

    run = tiny_run("strategy=sda")
    folder = export(run, tmp_path / "teacher", which="teacher")
    texts, student = _test_texts(run)
    probs = _pipeline_probs(folder, texts)
    trained = load_trained(run)
    tok = trained.module.model  # the reference: the strategy's own teacher logits
    from sdbert.sources.models import load_tokenizer

    enc = load_tokenizer(str(trained.cfg.model.name_or_path))(texts, truncation=True, max_length=32, padding=True,
                                                              return_tensors="pt")
    with torch.no_grad():
        teacher = trained.module.strategy.eval_logits(tok, dict(enc))["teacher"].softmax(-1)
    assert (probs - teacher).abs().max().item() <= 1e-5
    assert (probs - student).abs().max().item() > 1e-5  # not the student


def test_cli_refuses_what_has_no_equivalent_in_one_line(tiny_run, tmp_path, capsys):
    run = tiny_run("strategy=se")
    assert main([str(run), str(tmp_path / "x"), "--model", "teacher"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no model 'teacher'" in err and not (tmp_path / "x").exists()
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "y")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main([str(run), str(tmp_path / "ok")]) == 0 and (tmp_path / "ok" / "model.safetensors").is_file()


def _trained(make_cfg, *overrides: str, model=None):
    from sdbert import factory
    from sdbert.trained import Trained

    cfg = make_cfg(*overrides)
    module = factory.build_module(cfg, factory.build_strategy(cfg))
    if model is not None:
        module.model = model
    module.strategy.setup(module.model)
    return Trained(cfg=cfg, module=module.eval(), run_dir=Path("."), checkpoint=Path("last.ckpt"), summary={})


def test_voted_teacher_is_refused_and_a_folder_that_loads_differently_is_not_written(make_cfg, tmp_path):
    from sdbert.export import export_trained

    voted = _trained(make_cfg, "strategy=sdv", "teacher_size=2")
    with pytest.raises(TrainedModelError, match="not one set of weights"):
        to_huggingface(voted, "teacher")
    assert export_trained(voted, tmp_path / "student").is_dir()  # SDV's student exports
    # a config that no longer describes the weights' model: loaded back, it computes other logits
    voted.module.model.hf.config.hidden_act = "relu"
    with pytest.raises(ExportError, match=r"differs from sdbert's model .* nothing was written"):
        export_trained(voted, tmp_path / "broken")
    assert not (tmp_path / "broken").exists()


def test_export_switch_writes_the_tested_model_after_testing(tmp_path):
    from sdbert.export import ExportAfterTest
    from tests.conftest import train_run

    run = train_run(tmp_path / "run", ["strategy=se", "export=true"], hooks=ExportAfterTest())
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "ok" and summary["export"] == str(run / "hf")
    texts, saved = _test_texts(run)
    assert (_pipeline_probs(run / "hf", texts) - saved).abs().max().item() <= 1e-5
    assert f"| `test/acc` | {summary['test']['test/acc']:.2f} |" in (run / "hf" / "README.md").read_text()


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → bytes), hidden ones included."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["run", "above", "cwd", "file", "other", "under_file", "link"])
def test_cli_never_writes_over_what_it_did_not_write(tiny_run, tmp_path, capsys, monkeypatch, where):
    """The run itself, the folder of runs, ``.``, a file, a folder of other files, a path under a file
    and a symbolic link: refused in one line, with every file as it was (no ``.old-*`` or temp left)."""
    run = tiny_run("strategy=se")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    (tmp_path / "file.txt").write_text("mine too")
    (tmp_path / "link").symlink_to(other)
    monkeypatch.chdir(other)
    out = {"run": run, "above": run.parent, "cwd": Path("."), "file": tmp_path / "file.txt", "other": other,
           "under_file": tmp_path / "file.txt" / "hf", "link": tmp_path / "link"}[where]
    watched = [run.parent, tmp_path]
    before = [_tree(folder) for folder in watched]
    assert main([str(run), str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdbert-export: error:") and "\n" not in err and str(out) in err
    assert [_tree(folder) for folder in watched] == before


def test_an_earlier_export_is_replaced_whole_and_only_with_overwrite(tiny_run, tmp_path, capsys, monkeypatch):
    import sdbert.export as export_module

    run = tiny_run("strategy=se")
    out = tmp_path / "hf"
    assert main([str(run), str(out)]) == 0
    (out / "stale.txt").write_text("from before")
    before = _tree(out)
    assert main([str(run), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and _tree(out) == before
    # a failure while the new folder is written leaves the earlier export untouched
    monkeypatch.setattr(export_module, "model_card", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        export(run, out, overwrite=True)
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    monkeypatch.undo()
    assert main([str(run), str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # nothing left beside it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(run), str(empty)]) == 0 and (empty / "sdbert.json").is_file()
