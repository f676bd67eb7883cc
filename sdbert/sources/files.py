"""A local data folder (``dataset.source=/path/to/dir``) file by file: which files hold each split, where a
split's row is in them, and what makes ``datasets`` refuse the folder.

``datasets`` reads every file of a folder with the columns and types of the first one, so a file whose
column, or whose label kind (ids or names), differs from the others fails the whole folder with a cast
error that names neither the file nor the row. :func:`folder_problem` finds such a file and its first
differing row; :func:`locate` turns a split's row index into ``<file> line <n>``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: file formats whose rows are lines (a row's line can be named)
LINE_FORMATS = (".csv", ".tsv", ".jsonl", ".json")


def split_files(folder: Path) -> dict[str, list[Path]]:
    """The files of each split, as ``datasets.load_dataset(folder)`` resolves them (its split-name patterns)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(folder))
        resolved = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    except (FileNotFoundError, ValueError):  # datasets' EmptyDatasetError is a FileNotFoundError
        return {}
    return {str(split): [Path(f) for f in files] for split, files in resolved.items()}


def _is_json_lines(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(64).lstrip()[:1] != b"["


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) for every data row of a csv/tsv/jsonl file, as ``datasets`` counts rows (blank lines
    skipped); values are JSON values (jsonl) or the CSV cell's text."""
    text = _read_text(path)
    if text is None:
        return
    if path.suffix in (".csv", ".tsv"):
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix == ".tsv" else ",")
        header: list[str] | None = None
        start = 1
        try:
            for row in reader:
                if header is None:
                    header = row
                elif row:
                    yield start, dict(zip(header, row, strict=False))
                start = reader.line_num + 1
        except csv.Error:
            return
    elif path.suffix in (".jsonl", ".json") and _is_json_lines(path):
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                return
            if isinstance(record, dict):
                yield line_no, record


def locate(files: list[Path], row: int) -> str | None:
    """``<file> line <n>`` of a split's ``row`` (0-based, over its files in order), or None where the
    files are not line-based or do not have that many rows."""
    seen = 0
    for path in files:
        if path.suffix not in LINE_FORMATS:
            return None
        for line, _ in _rows(path):
            if seen == row:
                return f"{path} line {line}"
            seen += 1
    return None


# -- what makes datasets refuse a folder ----------------------------------------------------------------


def _kind(value: Any, from_csv: bool) -> str:
    """``empty``, ``integer``, ``number``, ``boolean``, ``text`` or ``list``/``object`` (JSON)."""
    if from_csv:
        text = str(value).strip()
        if not text:
            return "empty"
        for kind, parse in (("integer", int), ("number", float)):
            try:
                parse(text)
                return kind
            except ValueError:
                pass
        return "boolean" if text.lower() in ("true", "false") else "text"
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    names: dict[type, str] = {str: "text", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


PLURAL = {"integer": "integers", "number": "numbers", "boolean": "booleans", "list": "lists", "object": "objects"}
#: the column kinds a file's column can have where the first file's column has the key's kind
COMPATIBLE = {"integer": {"integer"}, "number": {"integer", "number"}, "text": {"text"}, "boolean": {"boolean"}}


def _profile(path: Path) -> tuple[list[str], dict[str, str]] | None:
    """(columns, kind of each column) of a line-based file; None if it is not one or cannot be read."""
    if path.suffix not in LINE_FORMATS:
        return None
    from_csv = path.suffix in (".csv", ".tsv")
    columns: list[str] = []
    kinds: dict[str, set[str]] = {}
    if from_csv:
        text = _read_text(path) or ""
        first = next(csv.reader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix == ".tsv" else ","), [])
        columns = list(first)
    for _, record in _rows(path):
        for key, value in record.items():
            if key not in columns:
                columns.append(key)
            kinds.setdefault(key, set()).add(_kind(value, from_csv))
    summary = {}
    for key, found in kinds.items():
        found.discard("empty")
        if found == {"integer", "number"}:
            found = {"number"}
        summary[key] = next(iter(found)) if len(found) == 1 else "mixed" if found else "empty"
    return columns, summary


def _first_unlike(path: Path, column: str, kind: str) -> tuple[int, Any, str] | None:
    """(line, value, its kind) of the first row of ``path`` whose ``column`` does not fit ``kind``."""
    from_csv = path.suffix in (".csv", ".tsv")
    for line, record in _rows(path):
        found = _kind(record.get(column), from_csv)
        if found not in COMPATIBLE.get(kind, {kind}):
            return line, record.get(column), found
    return None


def _empty_file(path: Path) -> str | None:
    """``is empty`` / ``has a header but no rows``, or None."""
    if path.suffix not in LINE_FORMATS:
        return "is empty" if path.stat().st_size == 0 else None
    text = _read_text(path)
    if text is None:
        return None
    if not text.strip():
        return "is empty"
    if path.suffix in (".csv", ".tsv") and next(_rows(path), None) is None:
        return "has a header but no rows"
    return None


def folder_problem(folder: Path) -> str | None:
    """``<file> [line <n>]: <what>; <fix>`` for a file that ``datasets`` cannot read beside the others: an
    empty file, columns other than the first file's, or a column holding another kind of value (e.g. the
    labels: ids in one file, names in another). None when no such file is found."""
    files = [path for paths in split_files(folder).values() for path in paths]
    for path in files:
        empty = _empty_file(path)
        if empty is not None:
            return f"{path} {empty}; every split file needs rows (a csv a header line too): fill it or remove it"
    known = [(path, profile) for path in files if (profile := _profile(path)) is not None]
    if len(known) < 2:
        return None
    first, (first_columns, first_kinds) = known[0]
    for path, (columns, kinds) in known[1:]:
        if sorted(columns) != sorted(first_columns):
            return (f"{path}: columns {', '.join(columns)} differ from those of {first} ({', '.join(first_columns)}); "
                    "give every split file the same columns (rename them in the file)")
        for column, kind in first_kinds.items():
            other = kinds.get(column, "empty")
            if other in COMPATIBLE.get(kind, {kind}) or other == "empty" or kind in ("mixed", "empty"):
                continue
            bad = _first_unlike(path, column, kind)
            where = f"{path} line {bad[0]}" if bad is not None else str(path)
            value = f" ({bad[1]!r})" if bad is not None else ""
            return (f"{where}: column '{column}' holds {PLURAL.get(other, other)}{value} but {first} holds "
                    f"{PLURAL.get(kind, kind)}; use one kind in "
                    "every file (labels: ids 0..n-1 everywhere, or everywhere the names of dataset.label_names)")
    return None
