"""What the report shows, computed from run directories: columns (test sets), cells (one setup's seeds on
one test set), rows (one method) and the aggregation of runs and ensembles into them.

One quantity throughout: the test **error rate in %**. Runs and ensembles record accuracy; it becomes
error where it is read (:func:`error_from_accuracy`), and only :meth:`Column.shown` turns it back into
accuracy, for the NLI columns the paper prints as accuracy.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sdbert import paper
from sdbert.analysis.ensemble import vote
from sdbert.analysis.rundirs import Run, RunDirError
from sdbert.analysis.significance import PairedTest, compare_runs
from sdbert.analysis.sweeps import Collection, find_runs, group_runs, latest_per_seed
from sdbert.strategies import TABLE_ORDER, Description, Vanilla

#: The paper's column names and order.
DISPLAY = {
    "imdb": "IMDb",
    "ag_news": "AG's News",
    "dbpedia": "DBPedia",
    "yelp_polarity": "Yelp P.",
    "yelp_full": "Yelp F.",
    "snli": "SNLI",
    "mnli_matched": "MNLI-m",
    "mnli_mismatched": "MNLI-mm",
}
PAPER_ORDER = [*paper.CLASSIFICATION_SETS, *paper.NLI_SETS]
#: ``teacher_size`` of a row whose runs each use Table 2's best K for their dataset (as in Table 3)
DEFAULT_K = "table2"
#: The reference every method is compared with (BASE: fine-tuning without a teacher).
REFERENCE = Vanilla.name
#: Rows that are ensembles of the BASE seeds rather than trained runs.
ENSEMBLES = ("vote", "avg")


def method_order(name: str) -> int:
    """Row order of the paper's tables: BASE, VOTE, AVG, then the strategies (``TABLE_ORDER``, then others)."""
    if name == REFERENCE:
        return 0
    if name in ENSEMBLES:
        return 1 + ENSEMBLES.index(name)
    rest = [n for n in TABLE_ORDER if n != REFERENCE]
    return 1 + len(ENSEMBLES) + (rest.index(name) if name in rest else len(rest))


def ensemble_method(kind: str) -> Description:
    """The "method" of a VOTE / AVG row."""
    return Description(name=kind, title=kind.upper())


def error_from_accuracy(accuracy: float) -> float:
    """Test error % from test accuracy %: how every accuracy a run or the paper records enters the report."""
    return 100.0 - accuracy


def column_name(dataset: str, test_name: str) -> str:
    """One table column per test set: ``imdb``; MNLI's two give ``mnli_matched`` and ``mnli_mismatched``."""
    return dataset if test_name == "test" else f"{dataset}_{test_name.removeprefix('test_')}"


@dataclass
class Column:
    """One test set of one dataset. ``nli``: shown as accuracy, like the paper's SNLI and MNLI columns."""

    name: str
    dataset: str
    test_name: str
    nli: bool

    @property
    def title(self) -> str:
        return DISPLAY.get(self.name, self.name)

    @property
    def metric(self) -> str:
        """What the column shows: ``acc`` (NLI) or ``err``."""
        return "acc" if self.nli else "err"

    def shown(self, error: float) -> float:
        """An error % as this column shows it: accuracy % for NLI, else the error itself."""
        return 100.0 - error if self.nli else error

    @property
    def sort_key(self) -> tuple[int, int, str]:
        order = PAPER_ORDER.index(self.name) if self.name in PAPER_ORDER else len(PAPER_ORDER)
        return (int(self.nli), order, self.name)


@dataclass
class Cell:
    """One row × column: the test errors (%) of the runs over seeds, or an ensemble's single error."""

    errors: list[float] = field(default_factory=list)
    failed: int = 0
    unfinished: int = 0
    note: str = ""
    #: the runs' own method (their K where the row says "Table 2's K")
    method: Description | None = None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.errors) if self.errors else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.errors) if len(self.errors) >= 2 else None


@dataclass
class Row:
    """One method (and context, and model) across the test sets."""

    method: Description
    context: tuple[tuple[str, Any], ...]
    model: str
    cells: dict[str, Cell] = field(default_factory=dict)
    runs: dict[str, list[Run]] = field(default_factory=dict)
    #: VOTE / AVG rows: the ensemble sizes K of their cells
    ks: set[int] = field(default_factory=set)

    @property
    def strategy(self) -> str:
        return self.method.name

    @property
    def is_ensemble(self) -> bool:
        return self.strategy in ENSEMBLES

    @property
    def label(self) -> str:
        if self.is_ensemble:
            ks = "/".join(str(k) for k in sorted(self.ks))
            text = f"{self.method.title} (K={ks})" if ks else self.method.title
        else:
            k = self.method.teacher_size
            text = self.method.label_with(None if k == DEFAULT_K else k)
        if self.context:
            text += " · " + ", ".join(f"{k}={v}" for k, v in self.context)
        return text

    @property
    def sort_key(self) -> tuple[Any, ...]:
        k = self.method.teacher_size
        k_key = (-1, 0) if k == DEFAULT_K else (1, 0) if k == "all" else (0, int(k or 0))
        return (self.context_key, method_order(self.strategy), self.strategy, k_key, self.method.sort_key())

    @property
    def context_key(self) -> str:
        return json.dumps(self.context, default=str)


@dataclass
class Record:
    """One setup (the runs that differ only in seed) on one test set."""

    column: str
    method: Description
    context: tuple[tuple[str, Any], ...]
    model: str
    cell: Cell


@dataclass
class Results:
    """Everything the report shows, computed from the runs."""

    found: Collection
    runs: list[Run]
    superseded: list[tuple[Run, Run]]
    rows: list[Row]
    columns: dict[str, Column]
    records: list[Record]
    problems: list[str]


def _context_keys(groups: Mapping[str, list[Run]]) -> list[str]:
    """Config keys (beyond the method and the model name) that tell rows apart: those that vary between the
    setups of one dataset, or, outside ``dataset.*``, anywhere."""
    method_keys = {k for runs in groups.values() for k in runs[0].method_config_keys}

    def is_method(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in method_keys) or key == "model.name_or_path"

    idents = [(runs[0].dataset, runs[0].identity) for runs in groups.values()]
    keys = sorted({k for _, ident in idents for k in ident if not is_method(k)})
    out = []
    for key in keys:
        per_dataset: dict[str, set[str]] = {}
        for dataset, ident in idents:
            per_dataset.setdefault(dataset, set()).add(json.dumps(ident.get(key), default=str))
        everywhere = set().union(*per_dataset.values())
        if any(len(v) > 1 for v in per_dataset.values()) or (not key.startswith("dataset.") and len(everywhere) > 1):
            out.append(key)
    return out


def _is_nli(run: Run, column: str) -> bool:
    """The paper's NLI sets (accuracy); other sets of sentence pairs count as NLI too, unless the paper
    lists them as classification (DBPedia's title + abstract)."""
    if run.dataset in paper.CLASSIFICATION_SETS:
        return False
    return column in paper.NLI_SETS or run.dataset in ("snli", "mnli") or run.is_pair_task


def _row_method(method: Description, dataset: str) -> Description:
    """A run's method as a row of Table 3: the K of a method of the paper's Table 2 is folded into "Table 2's
    best K" when it is the dataset's default."""
    k = method.teacher_size
    if k is not None and method.name in paper.TABLE2 and k == paper.default_teacher_size(dataset, method.name):
        return replace(method, keys={**method.keys, "teacher_size": DEFAULT_K})
    return method


def collect(paths: Sequence[str | Path]) -> Results:
    """Read the runs and ensembles under ``paths`` into rows and columns (one run per setup and seeds)."""
    found = find_runs(paths)
    runs, superseded = latest_per_seed(found.runs)
    groups = group_runs(runs)
    context_keys = _context_keys(groups)
    rows: dict[tuple[str, str, str], Row] = {}
    columns: dict[str, Column] = {}
    records: list[Record] = []
    problems: list[str] = []
    for members in groups.values():
        first = members[0]
        method = first.method
        row_method = _row_method(method, first.dataset)
        context = tuple((k, first.identity.get(k)) for k in context_keys)
        key = (row_method.method_key, json.dumps(context, default=str), first.model)
        row = rows.setdefault(key, Row(method=row_method, context=context, model=first.model))
        for test_name in first.test_names:
            col = column_name(first.dataset, test_name)
            columns.setdefault(col, Column(col, first.dataset, test_name, _is_nli(first, col)))
            cell = Cell(method=method)
            for run in members:
                acc = run.test_acc(test_name) if run.ok else None
                if acc is not None:
                    cell.errors.append(error_from_accuracy(acc))
                elif run.status in ("running", "interrupted"):
                    cell.unfinished += 1
                else:
                    cell.failed += 1  # failed, or finished without this test set's accuracy
            if col in row.cells:  # the same row and test set twice: only the method's unlabelled keys differ
                problems.append(f"{first.describe()}: merged with another setup of the same row ({key[0]})")
                row.cells[col].errors += cell.errors
                row.cells[col].failed += cell.failed
                row.cells[col].unfinished += cell.unfinished
            else:
                row.cells[col] = cell
            row.runs.setdefault(col, []).extend(members)
            records.append(Record(col, method, context, first.model, cell))
    ensembles = _load_ensembles(found, problems)
    for row in list(rows.values()):
        if row.strategy != REFERENCE:
            continue
        for kind in ENSEMBLES:
            _add_ensemble_row(kind, row, rows, columns, ensembles, problems)
    ordered = sorted(rows.values(), key=lambda r: (r.model, r.sort_key))
    return Results(found, runs, superseded, ordered, columns, records, problems)


def _load_ensembles(found: Collection, problems: list[str]) -> dict[str, dict[str, Any]]:
    """``ensemble.json`` by the group key of its members (the largest K where there are several)."""
    out: dict[str, dict[str, Any]] = {}
    for path in found.ensembles:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            problems.append(f"{path}: unreadable ({err})")
            continue
        group = data.get("group")
        if group and (group not in out or data.get("k", 0) >= out[group].get("k", 0)):
            out[group] = {**data, "_path": str(path)}
    return out


def _add_ensemble_row(
    kind: str,
    base: Row,
    rows: dict[tuple[str, str, str], Row],
    columns: Mapping[str, Column],
    ensembles: Mapping[str, dict[str, Any]],
    problems: list[str],
) -> None:
    """VOTE / AVG cells from the BASE row's seeds: ``ensemble.json`` if written, else VOTE from predictions."""
    key = (ensemble_method(kind).method_key, json.dumps(base.context, default=str), base.model)
    for col, members in base.runs.items():
        ok = [r for r in members if r.ok]
        if len(ok) < 2:
            continue
        row = rows.setdefault(key, Row(method=ensemble_method(kind), context=base.context, model=base.model))
        test_name = columns[col].test_name
        saved = ensembles.get(ok[0].group_key)
        acc: float | None = None
        k = len(ok)
        if saved is not None and f"{kind}/acc" in saved.get("test", {}).get(test_name, {}):
            acc = float(saved["test"][test_name][f"{kind}/acc"])
            k = int(saved.get("k", k))
        elif kind == "vote":
            try:
                acc = vote(ok)[test_name]["acc"]
            except RunDirError as err:
                problems.append(f"VOTE for {ok[0].dataset} ({len(ok)} BASE runs): {err}")
        if acc is None:
            cell = row.cells.setdefault(col, Cell())
            if kind == "avg":
                cell.note = "not computed: python -m sdbert.analysis.ensemble <dir> --per-group"
            continue
        row.cells[col] = Cell(errors=[error_from_accuracy(acc)])
        row.ks.add(k)


@dataclass
class Comparison:
    """One trained row against the BASE row of the same model and context, on one test set."""

    model: str
    column: Column
    label: str
    test: PairedTest | None = None
    #: why there is no test (no predictions, other test sets, ...)
    problem: str | None = None


def compare_with_base(results: Results) -> list[Comparison]:
    """Every trained row (not BASE, not an ensemble) against its BASE row, paired on each test set's
    examples from the runs' saved predictions (:mod:`sdbert.analysis.significance`)."""
    bases = {(r.model, r.context_key): r for r in results.rows if r.strategy == REFERENCE}
    out = []
    for row in results.rows:
        base = bases.get((row.model, row.context_key))
        if base is None or row is base or row.is_ensemble:
            continue
        for name, runs in row.runs.items():
            if name not in base.runs or not any(r.ok for r in runs):
                continue
            comparison = Comparison(row.model, results.columns[name], row.label)
            try:
                comparison.test = compare_runs(runs, base.runs[name], results.columns[name].test_name)
            except RunDirError as err:
                comparison.problem = str(err)
            out.append(comparison)
    return out
