"""What ``sdbert-predict`` reads and writes: examples from plain text, JSONL or CSV (one per line; sentence
pairs by the dataset's field names, ``text``/``text_pair``, or TAB-separated), bad rows marked with their
line number and reason, and one JSON line or CSV row of probabilities per example."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbert.errors import SdbertError

#: alternative names of the two pair fields in JSONL/CSV input (Hugging Face's pipeline names)
PAIR_ALIASES = ("text", "text_pair")


class PredictError(SdbertError, ValueError):
    """The model or the input cannot be used at all (bad rows are reported, not raised)."""


@dataclass
class Example:
    """One input row: its line number and texts, or None and why it is bad."""

    line: int
    texts: tuple[str, ...] | None  # None: a bad row
    error: str | None = None



# -- reading inputs -----------------------------------------------------------------------------------
def _check_texts(line: int, texts: Sequence[Any], fields: Sequence[str]) -> Example:
    for field, text in zip(fields, texts, strict=True):
        if text is None:
            return Example(line, None, f"missing field '{field}'")
        if not isinstance(text, str):
            return Example(line, None, f"field '{field}' is not text ({type(text).__name__})")
        if any("\udc80" <= ch <= "\udcff" for ch in text):
            return Example(line, None, "not UTF-8 text; save the file as UTF-8")
        if not text.strip():
            return Example(line, None, "empty text" if len(fields) == 1 else f"empty field '{field}'")
    return Example(line, tuple(texts))


def _from_line(line: int, text: str, fields: Sequence[str]) -> Example:
    if len(fields) == 1:
        return _check_texts(line, [text], fields)
    parts = text.split("\t")
    if len(parts) != 2:
        return Example(line, None, f"a sentence pair needs two TAB-separated texts ({fields[0]}<TAB>{fields[1]}), "
                                   f"found {len(parts)} part(s)")
    return _check_texts(line, parts, fields)


def _from_record(line: int, record: dict[str, Any], fields: Sequence[str]) -> Example:
    names = list(fields)
    if len(fields) == 2 and not any(f in record for f in fields) and all(a in record for a in PAIR_ALIASES):
        names = list(PAIR_ALIASES)
    elif len(fields) == 1 and fields[0] not in record and "text" in record:
        names = ["text"]
    return _check_texts(line, [record.get(name) for name in names], names)


def _lines(text: str) -> list[str]:
    """The lines of ``text`` without the blank ones at its end (as training's readers skip them); blank
    lines between examples stay, so they are reported."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_lines(text: str, fields: Sequence[str]) -> Iterator[Example]:
    """Plain text: one example per line (pairs TAB-separated)."""
    for i, line in enumerate(_lines(text), 1):
        yield _from_line(i, line, fields)


def read_jsonl(text: str, fields: Sequence[str]) -> Iterator[Example]:
    for i, line in enumerate(_lines(text), 1):
        if not line.strip():
            yield Example(i, None, "empty line")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield Example(i, None, f"invalid JSON ({err.msg} at column {err.colno})")
            continue
        if not isinstance(record, dict):
            yield Example(i, None, f"a JSON object with {', '.join(fields)} is needed, found {type(record).__name__}")
            continue
        yield _from_record(i, record, fields)


def read_csv(text: str, fields: Sequence[str]) -> Iterator[Example]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    usable = all(f in header for f in fields) or (
        len(fields) == 2 and all(a in header for a in PAIR_ALIASES)) or (len(fields) == 1 and "text" in header)
    if not usable:
        raise PredictError(f"the CSV header ({', '.join(header) or 'empty'}) has no column "
                           f"{' and '.join(repr(f) for f in fields)}; name the text column(s) so")
    for record in reader:
        yield _from_record(reader.line_num, record, fields)


READERS = {"txt": read_lines, "jsonl": read_jsonl, "csv": read_csv}


def input_format(path: str | None, given: str) -> str:
    if given != "auto":
        return given
    suffix = Path(path).suffix.lower() if path else ""
    return {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}.get(suffix, "txt")


def read_input(raw: bytes, fmt: str, fields: Sequence[str]) -> list[Example]:
    """Every example of ``raw`` (bytes that are not UTF-8 mark their row bad, not the whole input)."""
    text = raw.decode("utf-8", errors="surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    return list(READERS[fmt](text, fields))


def write_rows(examples: Sequence[Example], probs: Any, labels: Sequence[str], fmt: str, fh: Any) -> None:
    """One JSON line or CSV row per example, in the order given."""
    if fmt == "csv":
        writer = csv.writer(fh)
        writer.writerow(["line", "label", *(f"p_{name}" for name in labels)])
        for ex, p in zip(examples, probs.tolist(), strict=True):
            writer.writerow([ex.line, labels[max(range(len(p)), key=p.__getitem__)], *(f"{v:.6f}" for v in p)])
        return
    for ex, p in zip(examples, probs.tolist(), strict=True):
        best = labels[max(range(len(p)), key=p.__getitem__)]
        row = {"line": ex.line, "label": best, "probs": {name: round(v, 6) for name, v in zip(labels, p, strict=True)}}
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def arguments(texts: Iterable[str], fields: Sequence[str]) -> list[Example]:
    """Examples from command-line arguments (pairs TAB-separated), numbered from 1."""
    return [_from_line(i, t, fields) for i, t in enumerate(texts, 1)]


