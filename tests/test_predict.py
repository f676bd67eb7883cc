"""sdbert-predict: texts in, one row per input out (input order), bad rows reported without losing good ones."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdbert.predict import load_predictor, main, predict
from tests.conftest import ROOT, write_nli_dir


def _rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def _saved(run: Path):
    from sdbert.sources.datasets import load_raw

    saved = torch.load(run / "predictions" / "test.pt", weights_only=True)
    raw = load_raw("embedded", name="bbc_news")["test"]
    return raw, saved


def test_jsonl_file_gives_the_runs_test_probabilities_in_input_order(tiny_run, tmp_path, capsys):
    run = tiny_run("strategy=se")
    capsys.readouterr()  # the training's own output
    raw, saved = _saved(run)
    # input in reverse evaluation order, so output order = input order is checked
    order = torch.arange(len(saved["rows"])).flip(0)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": raw[int(saved["rows"][i])]["text"]}) + "\n" for i in order))
    assert main([str(run), "--input", str(path), "--batch-size", "5"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [r["line"] for r in rows] == list(range(1, len(order) + 1))
    names = saved["label_names"]
    probs = torch.tensor([[r["probs"][n] for n in names] for r in rows])
    assert (probs - saved["probs"][order]).abs().max().item() <= 1e-5
    assert [r["label"] for r in rows] == [names[i] for i in saved["probs"][order].argmax(-1)]


def test_bad_rows_are_reported_with_line_numbers_and_good_rows_kept(tiny_run, tmp_path, capsys):
    run = tiny_run("strategy=se")
    capsys.readouterr()
    path = tmp_path / "in.txt"
    path.write_bytes(b"first good text\n\n   \nbad \xff\xfe bytes\nlast good text\n")
    assert main([str(run), "--input", str(path), "--format", "csv"]) == 1
    captured = capsys.readouterr()
    table = list(csv.reader(io.StringIO(captured.out)))
    assert table[0][:2] == ["line", "label"] and [r[0] for r in table[1:]] == ["1", "5"]
    err = captured.err.splitlines()
    assert err[:3] == [
        "sdbert-predict: line 2: empty text (skipped)",
        "sdbert-predict: line 3: empty text (skipped)",
        "sdbert-predict: line 4: not UTF-8 text; save the file as UTF-8 (skipped)",
    ]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"txt": "typo"}\nnot json\n')
    assert main([str(run), "--input", str(jsonl)]) == 1
    captured = capsys.readouterr()
    assert [r["line"] for r in _rows(captured.out)] == [1]
    assert "line 2: missing field 'text'" in captured.err and "line 3: invalid JSON" in captured.err


def test_not_an_sdbert_model_is_one_line(tmp_path, capsys):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "x.ckpt").write_text("not a checkpoint")
    assert main([str(folder / "x.ckpt"), "hello"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass the run directory" in err
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert main([str(hf), "hello"]) == 1
    assert "not an sdbert export" in capsys.readouterr().err


@pytest.fixture(scope="module")
def nli_run(tiny_run, tmp_path_factory):
    data = write_nli_dir(tmp_path_factory.mktemp("nli"))
    return tiny_run("dataset=snli", f"dataset.source={data}", "dataset.train_per_class=4", "dataset.val_size=6",
                    "strategy=sdv", "teacher_size=2")


def test_sentence_pairs_from_csv_tab_lines_and_an_exported_folder(nli_run, tmp_path, capsys):
    from sdbert.export import export

    capsys.readouterr()
    pairs = [("A man runs in a park.", "Someone runs."), ("Two dogs sleep.", "Nobody sleeps at all.")]
    table = tmp_path / "pairs.csv"
    with table.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "premise", "hypothesis"])
        writer.writerows([[i, p, h] for i, (p, h) in enumerate(pairs)])
        writer.writerow([9, "A premise without hypothesis", ""])
    assert main([str(nli_run), "--input", str(table)]) == 1
    captured = capsys.readouterr()
    from_csv = _rows(captured.out)
    assert [r["line"] for r in from_csv] == [2, 3] and "line 4: empty field 'hypothesis'" in captured.err
    assert set(from_csv[0]["probs"]) == {"entailment", "neutral", "contradiction"}

    assert main([str(nli_run), *(f"{p}\t{h}" for p, h in pairs), "only one part"]) == 1
    captured = capsys.readouterr()
    assert [r["probs"] for r in _rows(captured.out)] == [r["probs"] for r in from_csv]
    assert "line 3: a sentence pair needs two TAB-separated texts" in captured.err

    folder = export(nli_run, tmp_path / "hf")
    lines = tmp_path / "pairs.jsonl"
    lines.write_text("".join(json.dumps({"text": p, "text_pair": h}) + "\n" for p, h in pairs))
    assert main([str(folder), "--input", str(lines)]) == 0
    exported = _rows(capsys.readouterr().out)
    for a, b in zip(exported, from_csv, strict=True):
        assert max(abs(a["probs"][k] - b["probs"][k]) for k in a["probs"]) <= 1e-5
    # SDV's voted teacher: predicted through the strategy (it has no single exported model)
    assert main([str(nli_run), "--model", "teacher", f"{pairs[0][0]}\t{pairs[0][1]}"]) == 0
    assert _rows(capsys.readouterr().out)[0]["line"] == 1


def test_progress_on_long_inputs_goes_to_stderr(tiny_run, capsys):
    predictor = load_predictor(tiny_run("strategy=se"))
    capsys.readouterr()
    texts = [(f"text number {i}",) for i in range(12)]
    short = predict(predictor, texts[:3], batch_size=1)
    assert "predicting" not in capsys.readouterr().err
    long = predict(predictor, texts, batch_size=1)
    captured = capsys.readouterr()
    err = captured.err.splitlines()  # not a terminal: plain lines, the pass's start and end
    assert err[0] == "sdbert-predict: predicting · 12 batches · 12 examples · started" and captured.out == ""
    assert err[-1].startswith("sdbert-predict: predicting · done in 0m0") and err[-1].endswith(" · 12 batches")
    assert torch.allclose(long[:3], short, atol=1e-6)


def test_console_script_reads_stdin(tiny_run):
    run = tiny_run("strategy=se")
    proc = subprocess.run(
        [sys.executable, "-m", "sdbert.predict", str(run)], input="Markets rallied.\nThe match ended 2-1.\n",
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["line"] for r in _rows(proc.stdout)] == [1, 2]


def test_saved_test_predictions_join_back_by_row_and_log_macro_f1(tiny_run):
    run = tiny_run("strategy=se")
    raw, saved = _saved(run)
    rows = saved["rows"]
    assert len(set(rows.tolist())) == len(rows) == len(saved["labels"])
    # the row ids point at the raw examples the labels came from
    assert saved["labels"].tolist() == [int(raw[int(r)]["label"]) for r in rows]
    # macro-F1 as logged (%), recomputed from the saved probabilities: mean over classes of 2TP/(2TP+FP+FN)
    pred, gold = saved["probs"].argmax(-1), saved["labels"]
    f1 = []
    for c in range(saved["probs"].shape[1]):
        tp = int(((pred == c) & (gold == c)).sum())
        fp_fn = int(((pred == c) != (gold == c)).sum())
        f1.append(2 * tp / (2 * tp + fp_fn) if tp + fp_fn else 0.0)
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["test"]["test/f1"] == pytest.approx(100 * sum(f1) / len(f1), abs=1e-3)
    assert "val/f1" in summary["val"] and "val/student/f1" in summary["val"]


def test_blank_lines_at_the_end_are_accepted_as_training_accepts_them(tiny_run, tmp_path, capsys):
    run = tiny_run("strategy=se")
    capsys.readouterr()
    for name, body in (("in.txt", "first text\nsecond text\n\n  \n"), ("in.jsonl", '{"text": "a"}\n{"text": "b"}\n\n')):
        path = tmp_path / name
        path.write_text(body)
        assert main([str(run), "--input", str(path)]) == 0, name
        captured = capsys.readouterr()
        assert [r["line"] for r in _rows(captured.out)] == [1, 2] and captured.err == ""


def test_empty_input_says_so_in_one_line(tiny_run, tmp_path, capsys):
    run = tiny_run("strategy=se")
    capsys.readouterr()
    for name, body in (("empty.txt", ""), ("blank.jsonl", "\n\n"), ("header.csv", "text\n")):
        path = tmp_path / name
        path.write_text(body)
        assert main([str(run), "--input", str(path)]) == 1, name
        captured = capsys.readouterr()
        assert captured.out == ""
        what = "is empty or has only a header row" if name.endswith(".csv") else "is empty"
        assert captured.err == f"sdbert-predict: error: no input: --input {path} {what}; give one example per line\n"
    proc = subprocess.run([sys.executable, "-m", "sdbert.predict", str(run)], input="", capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().endswith("no input: stdin is empty; give one example per line")


def test_a_reader_that_stops_early_ends_it_quietly(tiny_run, tmp_path):
    """``sdbert-predict ... | head``: the pipe is closed before anything is written; no traceback, 128 + SIGPIPE."""
    run = tiny_run("strategy=se")
    path = tmp_path / "in.txt"
    path.write_text("".join(f"text number {i}\n" for i in range(50)))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the model is even loaded
    try:
        proc = subprocess.run([sys.executable, "-m", "sdbert.predict", str(run), "--input", str(path)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300)
    finally:
        os.close(write_end)
    assert proc.stderr == "" and proc.returncode == 141
