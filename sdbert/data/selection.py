"""Which raw rows a run uses: every row validated, labels mapped to ids, and the seeded subsets.

Subsets (the validation hold-out, ``train_per_class`` / ``train_size``, ``eval_size``) are drawn with
``subset_seed``, never with the data-order seed: the paper varies data order over a fixed subset.
Each purpose has its own random stream, so e.g. changing ``eval_size`` does not move the train subset.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdbert.errors import ConfigError, DataError


def _rng(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(purpose.encode())])


def pa_storage(column: Any) -> list[Any]:
    """The stored values of an extension-typed (chunked) Arrow column, as Python objects."""
    return [v for chunk in column.chunks for v in chunk.storage.to_pylist()]


def _invalid_utf8_row(column: Any) -> int | None:
    """The first row of a (chunked) string column that is not valid UTF-8, or None; every row is checked."""
    import pyarrow as pa

    offset = 0
    for chunk in column.chunks:
        try:
            chunk.validate(full=True)
        except pa.ArrowInvalid:
            lo, hi = 0, len(chunk)  # the first bad row is in [lo, hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                try:
                    chunk.slice(lo, mid - lo).validate(full=True)
                    lo = mid
                except pa.ArrowInvalid:
                    hi = mid
            return offset + lo
        offset += len(chunk)
    return None


@dataclass(frozen=True)
class Selection:
    """Rows picked from one raw split: raw row indices and their label ids (aligned)."""

    raw_split: str
    rows: np.ndarray
    labels: np.ndarray

    def take(self, positions: np.ndarray) -> Selection:
        positions = np.sort(positions)
        return Selection(self.raw_split, self.rows[positions], self.labels[positions])

    def __len__(self) -> int:
        return len(self.rows)


class RowSelector:
    """Validates raw splits and draws the train / validation / test selections of one dataset config.

    ``raw_split(name)`` returns a ``datasets.Dataset``; clean splits are kept once validated. ``where(split,
    row)``, when given, names the file and line a raw row comes from (a local folder), for the error lines.
    """

    def __init__(
        self,
        name: str,
        raw_split: Any,
        text_fields: Sequence[str],
        label_field: str,
        label_names: Sequence[str],
        drop_labels: Sequence[Any],
        train_split: str,
        validation_split: str | None,
        val_size: int | float,
        train_size: int | None,
        train_per_class: int | None,
        eval_size: int | None,
        subset_seed: int,
        where: Callable[[str, int], str | None] | None = None,
    ) -> None:
        self.name = name
        self._where = where
        self._raw_split = raw_split
        self.text_fields = list(text_fields)
        self.label_field = label_field
        self.label_names = list(label_names)
        self.drop_labels = list(drop_labels)
        self.train_split = train_split
        self.validation_split = validation_split
        self.val_size = val_size
        self.train_size = train_size
        self.train_per_class = train_per_class
        self.eval_size = eval_size
        self.subset_seed = subset_seed
        self._clean: dict[str, Selection] = {}

    # -- the selections a run uses ------------------------------------------------------------------
    def train(self) -> Selection:
        if self.validation_split is None:
            train, _ = self._holdout()
        else:
            train = self.clean(self.train_split)
        if self.train_per_class is not None:
            rng = _rng(self.subset_seed, "train-per-class")
            picked = []
            for label_id, label in enumerate(self.label_names):
                candidates = np.flatnonzero(train.labels == label_id)
                if len(candidates) < self.train_per_class:
                    raise DataError(
                        f"dataset '{self.name}', split '{self.train_split}': train_per_class="
                        f"{self.train_per_class} but class '{label}' has only {len(candidates)} training "
                        "rows; lower train_per_class"
                    )
                picked.append(rng.choice(candidates, size=self.train_per_class, replace=False))
            train = train.take(np.concatenate(picked))
        elif self.train_size is not None:
            if self.train_size > len(train):
                raise DataError(
                    f"dataset '{self.name}', split '{self.train_split}': train_size={self.train_size} but "
                    f"only {len(train)} training rows are available; lower train_size"
                )
            pos = _rng(self.subset_seed, "train-size").choice(len(train), size=self.train_size, replace=False)
            train = train.take(pos)
        classes = np.unique(train.labels)
        if len(classes) < 2:
            only = self.label_names[int(classes[0])] if len(classes) else "none"
            raise DataError(
                f"dataset '{self.name}', split '{self.train_split}': the training set has a single class ('{only}', "
                f"{len(train)} rows); a classifier needs at least two: check the data, dataset.label_field and "
                "dataset.drop_labels"
            )
        return train

    def validation(self) -> Selection:
        if self.validation_split is None:
            _, val = self._holdout()
        else:
            val = self.clean(self.validation_split)
        return self.eval_cap(val, "val")

    def test(self, key: str, raw_split: str) -> Selection:
        return self.eval_cap(self.clean(raw_split), key)

    def eval_cap(self, selection: Selection, key: str) -> Selection:
        if self.eval_size is None or len(selection) <= self.eval_size:
            return selection
        pos = _rng(self.subset_seed, f"eval-cap-{key}").choice(len(selection), size=self.eval_size, replace=False)
        return selection.take(pos)

    def _holdout(self) -> tuple[Selection, Selection]:
        """(train, val) held out of the train split with a permutation seeded by subset_seed."""
        full = self.clean(self.train_split)
        n = len(full)
        v = self.val_size
        n_val = round(v * n) if isinstance(v, float) else int(v)
        if not 1 <= n_val < n:
            raise ConfigError(
                f"dataset '{self.name}': val_size={v!r} holds out {n_val} of {n} training rows; it must leave at "
                "least one row on each side"
            )
        perm = _rng(self.subset_seed, "validation-holdout").permutation(n)
        return full.take(perm[n_val:]), full.take(perm[:n_val])

    # -- validation ---------------------------------------------------------------------------------
    def _mixed_labels(self, split: str, label_col: Any, label_set: str) -> str:
        """Labels that mix JSON kinds (``datasets`` stores such a column as JSON text): name the first change."""
        import json

        first: tuple[int, Any] | None = None
        for row, raw in enumerate(pa_storage(label_col)):
            value = json.loads(raw) if isinstance(raw, str) else raw
            if value is None:
                continue
            if first is None:
                first = (row, value)
            elif isinstance(value, str) != isinstance(first[1], str):
                return (
                    f"dataset '{self.name}', split '{split}', column '{self.label_field}': labels mix integer ids and "
                    f"strings (row {first[0]}: {first[1]!r}, row {row}: {value!r}); use one kind throughout: "
                    f"{label_set}"
                )
        return (
            f"dataset '{self.name}', split '{split}', column '{self.label_field}': labels of mixed JSON types; "
            f"labels must be {label_set}"
        )

    def _row_error(self, split: str, column: str, row: int, what: str) -> DataError:
        location = self._where(split, row) if self._where is not None else None
        at = f"row {row} ({location})" if location else f"row {row}"
        return DataError(f"dataset '{self.name}', split '{split}', column '{column}', {at}: {what}")

    def _float_ids(self, split: str, label_col: Any) -> Any:
        """A column of ids read as floats (a csv column with an empty cell is) as integers, or the row error."""
        import pyarrow as pa

        values = label_col.to_numpy()
        empty = np.flatnonzero(np.isnan(values))
        if len(empty):
            raise self._row_error(split, self.label_field, int(empty[0]),
                                  "the label is empty; fill it in (an id 0..n-1) or remove the row")
        fraction = np.flatnonzero(values != np.round(values))
        if len(fraction):
            raise self._row_error(split, self.label_field, int(fraction[0]),
                                  f"label {float(values[fraction[0]])} is not an id; labels are ids 0..n-1 or names")
        return pa.chunked_array([pa.array(values.astype(np.int64))], pa.int64())

    def _label_outside(self, split: str, label_col: Any, row: int, keep: np.ndarray, ok: np.ndarray) -> DataError:
        """The first label outside the label set, with the fix that fits: the data's own label names when
        none of its labels is one of ``label_names``, else the row (fix, add the name, or drop such rows)."""
        value = label_col[row].as_py()
        if value is None:
            what = "label None: the row has no label; fill it in or remove the row"
            return self._row_error(split, self.label_field, row, what)
        found = sorted({str(v) for v in np.asarray(label_col.to_pylist(), dtype=object)[keep] if v is not None})
        names = ", ".join(self.label_names)
        if not ok[keep].any() and isinstance(value, str) and len(found) <= 50:
            what = (f"label {value!r} is not one of dataset.label_names ({names}), and neither is any label of this "
                    f"split ({', '.join(found)}); list the data's labels in id order: "
                    f"dataset.label_names=[{','.join(found)}]")
            if all(v.isdigit() for v in found):
                what += " (or write the labels as numbers, 0 not \"0\", to keep the names)"
            return self._row_error(split, self.label_field, row, what)
        kind = f"ids 0..{len(self.label_names) - 1}" if not isinstance(value, str) else f"names {self.label_names}"
        what = (f"label {value!r} is outside the label set ({kind} of dataset.label_names); fix the row, add the "
                "label to dataset.label_names, or list the value in dataset.drop_labels to skip such rows")
        return self._row_error(split, self.label_field, row, what)

    def clean(self, split: str) -> Selection:
        """Drop ``drop_labels`` rows, validate every kept row, map labels to ids 0..n-1."""
        if split in self._clean:
            return self._clean[split]
        import pyarrow as pa
        import pyarrow.compute as pc

        ds = self._raw_split(split)
        present = list(ds.column_names)
        for column in [*self.text_fields, self.label_field]:
            if column not in present:
                raise DataError(
                    f"dataset '{self.name}', split '{split}': missing column '{column}' (columns present: "
                    f"{', '.join(present)}); set dataset.text_fields/label_field to match the data"
                )
        arrow = ds.with_format("arrow")
        label_col = pa.chunked_array(arrow[self.label_field]) if len(ds) else pa.chunked_array([], pa.int64())
        n = len(ds)
        num_labels = len(self.label_names)
        label_set = f"ids 0..{num_labels - 1} or names {self.label_names}"

        if pa.types.is_floating(label_col.type):
            label_col = self._float_ids(split, label_col)
        # Rows without a usable label by convention (hub -1, jsonl '-') are dropped before validation.
        keep = np.ones(n, dtype=bool)
        is_int = pa.types.is_integer(label_col.type)
        is_str = pa.types.is_string(label_col.type) or pa.types.is_large_string(label_col.type)
        drops = [v for v in self.drop_labels if (isinstance(v, str) if is_str else isinstance(v, int))]
        if drops and n:
            dropped = pc.is_in(label_col, value_set=pa.array(drops, type=label_col.type))
            keep &= ~pc.fill_null(dropped, False).to_numpy(zero_copy_only=False)

        if is_int:
            values = pc.fill_null(label_col, -(1 << 62)).to_numpy(zero_copy_only=False).astype(np.int64)
            ok = (values >= 0) & (values < num_labels)
            label_ids = np.where(ok, values, -1)
        elif is_str:
            label_ids = (
                pc.fill_null(pc.index_in(label_col, value_set=pa.array(self.label_names)), -1)
                .to_numpy(zero_copy_only=False)
                .astype(np.int64)
            )
            ok = label_ids >= 0
        elif getattr(label_col.type, "extension_name", "") == "arrow.json":  # datasets' Json: mixed kinds
            raise DataError(self._mixed_labels(split, label_col, label_set))
        else:
            raise DataError(
                f"dataset '{self.name}', split '{split}', column '{self.label_field}': label type "
                f"{label_col.type} is neither integer ids nor strings; labels must be {label_set}"
            )
        bad = np.flatnonzero(keep & ~ok)
        if len(bad):
            raise self._label_outside(split, label_col, int(bad[0]), keep, ok)

        for column in self.text_fields:
            col = pa.chunked_array(arrow[column]) if n else pa.chunked_array([], pa.string())
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                if pa.types.is_null(col.type) and n:
                    raise self._row_error(split, column, 0, "text is empty (the column is all null); fix the data")
                if n:
                    raise DataError(
                        f"dataset '{self.name}', split '{split}', column '{column}': type {col.type} is not "
                        "text; point dataset.text_fields at string columns"
                    )
                continue
            bad_utf8 = _invalid_utf8_row(col)
            if bad_utf8 is not None:
                raise self._row_error(
                    split, column, bad_utf8, "text is not valid UTF-8; fix the file's encoding (re-save it as UTF-8)"
                )
            # Chunk by chunk: trimming copies the strings, and a Yelp column is hundreds of MB.
            empty = np.concatenate(
                [np.zeros(0, dtype=bool)]
                + [
                    pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(chunk)), 0), True).to_numpy(
                        zero_copy_only=False
                    )
                    for chunk in col.chunks
                ]
            )
            bad = np.flatnonzero(keep & empty)
            if len(bad):
                raise self._row_error(
                    split,
                    column,
                    int(bad[0]),
                    "text is empty or whitespace only; remove or fix the row in the source",
                )

        rows = np.flatnonzero(keep).astype(np.int64)
        selection = Selection(split, rows, label_ids[rows])
        if len(selection) == 0:
            if n == 0:
                raise DataError(f"dataset '{self.name}', split '{split}' has no rows; give it some (or point "
                                "dataset.train_split/test_splits at a split that has)")
            raise DataError(f"dataset '{self.name}', split '{split}': no rows left after dropping {drops}")
        self._clean[split] = selection
        return selection
