"""A user's own data folder (``dataset.source=/path``): every split checked before the first step, and each
problem one line naming the file, the line and the fix (docs/own-data.md)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdbert.config import non_ascii_hint
from sdbert.data.datamodule import TextClassificationDataModule
from sdbert.errors import DataError
from sdbert.sources import datasets as sources
from sdbert.sources.files import locate, split_files
from tests.conftest import ROOT

NAMES = ["negative", "positive"]


def _csv(folder: Path, split: str, rows: list[tuple[Any, Any]], header: str = "review,sentiment") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.csv"
    path.write_text(header + "\n" + "".join(f"{text},{label}\n" for text, label in rows))
    return path


def _rows(n: int, labels: list[Any], prefix: str = "review") -> list[tuple[str, Any]]:
    return [(f"{prefix} number {i}", labels[i % len(labels)]) for i in range(n)]


def _dm(tok: Any, folder: Path, cache: Path, **kw: Any) -> TextClassificationDataModule:
    args: dict[str, Any] = dict(name="movies", tokenizer=tok, source=str(folder), text_fields=["review"],
                                label_field="sentiment", label_names=NAMES, val_size=4, max_length=16,
                                cache_dir=str(cache))
    args.update(kw)
    return TextClassificationDataModule(**args)


def _error(tok: Any, folder: Path, cache: Path, **kw: Any) -> str:
    with pytest.raises(DataError) as info:
        _dm(tok, folder, cache, **kw).setup("fit")
    message = str(info.value)
    assert "\n" not in message and "named by split" not in message
    return message


def test_a_bad_test_split_is_found_before_training(tok: Any, tmp_path: Path) -> None:
    folder = tmp_path / "own"
    _csv(folder, "train", _rows(12, NAMES))
    test = _rows(6, NAMES, "test")
    test[3] = ("a test review", "neutral")
    path = _csv(folder, "test", test)
    message = _error(tok, folder, tmp_path / "c")  # setup("fit"): what runs before the first step
    assert message == (
        f"dataset 'movies', split 'test', column 'sentiment', row 3 ({path} line 5): label 'neutral' is outside the "
        "label set (names ['negative', 'positive'] of dataset.label_names); fix the row, add the label to "
        "dataset.label_names, or list the value in dataset.drop_labels to skip such rows")


def test_label_kinds_that_differ_between_splits_name_the_file_and_line(tok: Any, tmp_path: Path) -> None:
    folder = tmp_path / "own"
    train = _csv(folder, "train", _rows(12, [0, 1]))
    test = _csv(folder, "test", _rows(6, NAMES, "test"))
    message = _error(tok, folder, tmp_path / "c")
    assert message == (
        f"dataset 'movies': {test} line 2: column 'sentiment' holds text ('negative') but {train} holds integers; "
        "use one kind in every file (labels: ids 0..n-1 everywhere, or everywhere the names of dataset.label_names)")
    jsonl = tmp_path / "jsonl"
    jsonl.mkdir()
    (jsonl / "train.jsonl").write_text("".join(json.dumps({"review": t, "sentiment": lab}) + "\n"
                                               for t, lab in _rows(12, [0, 1])))
    (jsonl / "test.jsonl").write_text("".join(json.dumps({"review": t, "sentiment": lab}) + "\n"
                                              for t, lab in _rows(4, NAMES)))
    assert f"{jsonl / 'test.jsonl'} line 1: column 'sentiment' holds text ('negative')" in _error(
        tok, jsonl, tmp_path / "c")


def test_columns_that_differ_between_splits_name_the_file(tok: Any, tmp_path: Path) -> None:
    folder = tmp_path / "own"
    train = _csv(folder, "train", _rows(12, NAMES))
    test = _csv(folder, "test", _rows(6, NAMES), header="text,sentiment")
    assert _error(tok, folder, tmp_path / "c") == (
        f"dataset 'movies': {test}: columns text, sentiment differ from those of {train} (review, sentiment); give "
        "every split file the same columns (rename them in the file)")


@pytest.mark.parametrize(("body", "what"), [("", "is empty"), ("review,sentiment\n", "has a header but no rows")])
def test_an_empty_file_is_named(tok: Any, tmp_path: Path, body: str, what: str) -> None:
    folder = tmp_path / "own"
    _csv(folder, "train", _rows(12, NAMES))
    (folder / "test.csv").write_text(body)
    assert _error(tok, folder, tmp_path / "c") == (
        f"dataset 'movies': {folder / 'test.csv'} {what}; every split file needs rows (a csv a header line too): "
        "fill it or remove it")


def test_an_empty_label_cell_in_a_column_of_ids_is_named(tok: Any, tmp_path: Path) -> None:
    folder = tmp_path / "own"
    rows = _rows(12, [0, 1])
    rows[2] = ("no label here", "")
    train = _csv(folder, "train", rows)
    _csv(folder, "test", _rows(6, [0, 1], "test"))
    assert _error(tok, folder, tmp_path / "c") == (
        f"dataset 'movies', split 'train', column 'sentiment', row 2 ({train} line 4): the label is empty; fill it in "
        "(an id 0..n-1) or remove the row")


def test_ids_written_as_floats_are_ids(tok: Any, tmp_path: Path) -> None:
    folder = tmp_path / "own"
    _csv(folder, "train", _rows(12, ["0.0", "1.0"]))
    _csv(folder, "test", _rows(6, ["0.0", "1.0"], "test"))
    dm = _dm(tok, folder, tmp_path / "c")
    dm.setup()
    assert sorted(set(dm.train_dataset["labels"])) == [0, 1]


def test_string_labels_0_and_1_get_the_label_names_fix(tok: Any, tmp_path: Path) -> None:
    folder = tmp_path / "own"
    folder.mkdir()
    for split, n in (("train", 12), ("test", 6)):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps({"review": t, "sentiment": str(lab)}) + "\n" for t, lab in _rows(n, [0, 1])))
    message = _error(tok, folder, tmp_path / "c")
    assert message == (
        f"dataset 'movies', split 'train', column 'sentiment', row 0 ({folder / 'train.jsonl'} line 1): label '0' is "
        "not one of dataset.label_names (negative, positive), and neither is any label of this split (0, 1); list "
        "the data's labels in id order: dataset.label_names=[0,1] (or write the labels as numbers, 0 not \"0\", to "
        "keep the names)")
    dm = _dm(tok, folder, tmp_path / "c", label_names=[0, 1])  # the fix it names works
    dm.setup()
    assert sorted(set(dm.train_dataset["labels"])) == [0, 1]


def test_datasets_own_error_line_does_not_precede_sdberts(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "own"
    _csv(folder, "train", _rows(12, NAMES))
    (folder / "test.csv").write_text("review,sentiment\nfine,positive\nnot,fine,at,all\n")
    with caplog.at_level(logging.INFO), pytest.raises(DataError, match=r"test\.csv line 3: 4 fields"):
        sources.load_raw(str(folder), name="movies", cache=tmp_path / "c")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Failed to read file" not in capfd.readouterr().err


def test_rows_are_located_in_their_files(tmp_path: Path) -> None:
    folder = tmp_path / "own"
    _csv(folder, "train-00000-of-00002", _rows(3, NAMES))
    second = folder / "train-00001-of-00002.csv"
    second.write_text('review,sentiment\n"a review\nover two lines",negative\n\nlast,positive\n')
    files = split_files(folder)["train"]
    assert [f.name for f in files] == ["train-00000-of-00002.csv", "train-00001-of-00002.csv"]
    assert [locate(files, r) for r in range(6)] == [
        f"{files[0]} line 2", f"{files[0]} line 3", f"{files[0]} line 4", f"{second} line 2", f"{second} line 5",
        None]


def test_non_ascii_values_unquoted_get_a_hint_to_quote_them() -> None:
    assert non_ascii_hint(["-m", "seed=1,2", "dataset.label_names=[négatif,positif]"]) == (
        "dataset.label_names=[négatif,positif]: Hydra reads letters beyond ASCII only inside quotes; quote them (and "
        "the whole override, for the shell): 'dataset.label_names=[\"négatif\",\"positif\"]'")
    assert non_ascii_hint(['dataset.label_names=["négatif","positif"]', "seed=1"]) is None
    proc = subprocess.run([sys.executable, "train.py", "dataset.name=café"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "sdbert: error: dataset.name=café: Hydra reads letters beyond ASCII only inside quotes; quote them (and the "
        "whole override, for the shell): 'dataset.name=\"café\"'"]
