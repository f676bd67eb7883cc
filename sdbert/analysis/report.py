"""Tables and figures in the paper's layout, from run directories alone (offline, after the fact).

    python -m sdbert.analysis.report logs/train/multiruns/table3/<time> [more dirs ...] [--out DIR]   # or sdbert-report

Reads every run under the given directories (``.hydra/config.yaml``, ``metrics.json``,
``csv/metrics.csv``, ``predictions/``) and every ``ensemble.json`` written by ``sdbert.analysis.ensemble``,
and writes into ``--out`` (default ``<first dir>/report``):

* ``report.md``: the runs found, and those that failed, did not finish, never started (jobs listed
  in a sweep's ``multirun.yaml`` without a run directory) or were superseded by a rerun; the results
  table in the layout of the paper's Table 3 / Table 4 (test error % for classification sets,
  accuracy % for NLI, mean ± std over seeds, Avg. Δ, the paper's number in brackets); a Table 2
  layout when the teacher size K varies; the figures.
* ``figure3_lambda_<set>.png`` (test error over λ), ``figure4_stability_<set>.png`` (boxplot over
  seeds), ``figure5_epoch_error_<set>.png`` (test error per epoch; needs ``callbacks=with_epoch_test``),
  ``figure6_losses_<dataset>.png`` (CE and MSE loss over optimizer steps), each drawn where the runs
  hold what it needs, otherwise report.md says why not.
* ``runs.csv``: one line per run (status, setup, seeds, test metrics).

Avg. Δ is the paper's "average of relative change": the mean over the row's datasets of
``(err_BASE − err) / err_BASE`` in %, positive when the error falls, on error = 100 − accuracy for NLI.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbert import paper
from sdbert.analysis.rundirs import (
    METHOD_KEYS,
    Collection,
    Run,
    RunDirError,
    find_runs,
    group_runs,
    latest_per_seed,
    method_label,
)

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
#: Row order of the paper's tables.
STRATEGY_ORDER = {"base": 0, "vote": 1, "avg": 2, "se": 3, "sdv": 4, "sda": 5}


# ----------------------------------------------------------------------------------------------- metrics
def column_name(dataset: str, test_name: str) -> str:
    """One table column per test set: ``imdb``; MNLI's two give ``mnli_matched`` and ``mnli_mismatched``."""
    return dataset if test_name == "test" else f"{dataset}_{test_name.removeprefix('test_')}"


def relative_error_change(errors: Mapping[str, float], base_errors: Mapping[str, float]) -> float | None:
    """Avg. Δ in %: the mean over the columns both have of ``(base − err) / base`` (positive = fewer errors)."""
    cols = [c for c in errors if c in base_errors and base_errors[c] > 0]
    if not cols:
        return None
    return 100.0 * statistics.fmean((base_errors[c] - errors[c]) / base_errors[c] for c in cols)


def paper_errors(method: str, table: Mapping[str, Mapping[str, float]] = paper.TABLE3) -> dict[str, float]:
    """A row of the paper's table as error rates (NLI accuracies become 100 − accuracy)."""
    return {c: (100.0 - v if c in paper.NLI_SETS else v) for c, v in table[method].items()}


def paper_value(method: Mapping[str, Any], column: str, dataset: str, model: str) -> float | None:
    """The paper's published number for this row and column (its own metric: error or accuracy), if any."""
    strategy = str(method.get("strategy"))
    if "distill_weight" in method and float(method["distill_weight"]) != 1.0:
        return None  # only Figure 3 varies λ, and it has no table
    large = "large" in model.lower()
    k = method.get("teacher_size")
    if large:
        key = {"base": "base"}.get(strategy)
        if strategy == "sda" and k in (1, "all"):
            key = "sda_k1" if k == 1 else "sda_all"
        return paper.TABLE4.get(key, {}).get(column) if key else None
    if strategy in ("base", "vote", "avg", "se"):
        return paper.TABLE3[strategy].get(column)
    if strategy in ("sda", "sdv"):
        table2 = paper.TABLE2[strategy].get(column, {})
        if strategy == "sda" and k == 1:
            table2 = paper.TABLE2["sdv"].get(column, {})  # "SDV (K=1) is the same as SDA (K=1)"
        if k in table2:
            return table2[k]
        if k == paper.default_teacher_size(dataset, strategy):
            return paper.TABLE3[strategy].get(column)
    return None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _paper_fmt(value: float | None, column: str) -> str:
    if value is None:
        return ""
    return f" ({value:.1f})" if column in paper.NLI_SETS else f" ({value:.2f})"


# ----------------------------------------------------------------------------------------------- rows
@dataclass
class Cell:
    """One row × column: the runs' values (table metric) over seeds, or an ensemble's single value."""

    values: list[float] = field(default_factory=list)
    failed: int = 0
    unfinished: int = 0
    note: str = ""
    #: the runs' own method (their K where the row says "Table 2's K")
    method: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) >= 2 else None


@dataclass
class Row:
    method: dict[str, Any]
    context: tuple[tuple[str, Any], ...]
    model: str
    cells: dict[str, Cell] = field(default_factory=dict)
    runs: dict[str, list[Run]] = field(default_factory=dict)
    #: VOTE / AVG rows: the ensemble sizes K of their cells
    ks: set[int] = field(default_factory=set)

    @property
    def strategy(self) -> str:
        return str(self.method["strategy"])

    @property
    def label(self) -> str:
        if self.strategy in ("vote", "avg"):
            ks = "/".join(str(k) for k in sorted(self.ks))
            text = f"{self.strategy.upper()} (K={ks})" if ks else self.strategy.upper()
        else:
            text = method_label(self.method)
        if self.method.get("teacher_size") == DEFAULT_K:
            text = text.replace("K=table2, ", "").replace(" (K=table2)", "")
        if self.context:
            text += " · " + ", ".join(f"{k}={v}" for k, v in self.context)
        return text

    @property
    def sort_key(self) -> tuple[Any, ...]:
        k = self.method.get("teacher_size", 0)
        k_key = (-1, 0) if k == DEFAULT_K else (1, 0) if k == "all" else (0, int(k or 0))
        lam = float(self.method.get("distill_weight", 1.0))
        return (self.context_key, STRATEGY_ORDER.get(self.strategy, 9), self.strategy, k_key, (lam != 1.0, lam),
                self.method.get("teacher_dropout") is False)

    @property
    def context_key(self) -> str:
        return json.dumps(self.context, default=str)


@dataclass
class Column:
    name: str
    dataset: str
    test_name: str
    nli: bool

    @property
    def title(self) -> str:
        return DISPLAY.get(self.name, self.name)

    @property
    def sort_key(self) -> tuple[int, int, str]:
        order = PAPER_ORDER.index(self.name) if self.name in PAPER_ORDER else len(PAPER_ORDER)
        return (int(self.nli), order, self.name)


def _method_of(run: Run) -> dict[str, Any]:
    m = dict(run.method)
    if m.get("teacher_dropout") is True:
        m.pop("teacher_dropout")  # the default: not part of the label
    return m


def _context_keys(groups: Mapping[str, list[Run]]) -> list[str]:
    """Config keys (beyond the method and the model name) that tell rows apart: those that vary between the
    setups of one dataset, or, outside ``dataset.*``, anywhere."""
    def is_method(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in METHOD_KEYS) or key == "model.name_or_path"

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


def _is_nli(run: Run, column: str) -> bool:
    """The paper's NLI sets (accuracy); other sets of sentence pairs count as NLI too, unless the paper
    lists them as classification (DBPedia's title + abstract)."""
    if run.dataset in paper.CLASSIFICATION_SETS:
        return False
    return column in paper.NLI_SETS or run.dataset in ("snli", "mnli") or run.is_pair_task


def _row_method(method: dict[str, Any], dataset: str) -> dict[str, Any]:
    """A run's method as a row of Table 3: K is folded into "Table 2's best K" when it is the dataset's default."""
    k = method.get("teacher_size")
    if k is not None and k == paper.default_teacher_size(dataset, str(method["strategy"])):
        return {**method, "teacher_size": DEFAULT_K}
    return dict(method)


@dataclass
class Record:
    """One setup (the runs that differ only in seed) on one test set."""

    column: str
    method: dict[str, Any]
    context: tuple[tuple[str, Any], ...]
    model: str
    cell: Cell


def collect(paths: Sequence[str | Path]) -> Results:
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
        method = _method_of(first)
        row_method = _row_method(method, first.dataset)
        context = tuple((k, first.identity.get(k)) for k in context_keys)
        key = (json.dumps(row_method, sort_keys=True, default=str), json.dumps(context, default=str), first.model)
        row = rows.setdefault(key, Row(method=row_method, context=context, model=first.model))
        for test_name in first.test_names:
            col = column_name(first.dataset, test_name)
            columns.setdefault(col, Column(col, first.dataset, test_name, _is_nli(first, col)))
            cell = Cell(method=method)
            for run in members:
                acc = run.test_acc(test_name) if run.ok else None
                if acc is not None:
                    cell.values.append(acc if columns[col].nli else 100.0 - acc)
                elif run.status == "incomplete":
                    cell.unfinished += 1
                else:
                    cell.failed += 1  # failed, or finished without this test set's accuracy
            if col in row.cells:  # the same row and test set twice: only the method's unlabelled keys differ
                problems.append(f"{first.describe()}: merged with another setup of the same row ({key[0]})")
                row.cells[col].values += cell.values
                row.cells[col].failed += cell.failed
                row.cells[col].unfinished += cell.unfinished
            else:
                row.cells[col] = cell
            row.runs.setdefault(col, []).extend(members)
            records.append(Record(col, method, context, first.model, cell))
    ensembles = _load_ensembles(found, problems)
    for row in list(rows.values()):
        if row.strategy != "base":
            continue
        for kind in ("vote", "avg"):
            _add_ensemble_row(kind, row, rows, columns, ensembles, problems)
    ordered = sorted(rows.values(), key=lambda r: (r.model, r.sort_key))
    return Results(found, runs, superseded, ordered, columns, records, problems)


def _load_ensembles(found: Collection, problems: list[str]) -> dict[str, dict[str, Any]]:
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
    from sdbert.analysis.ensemble import vote

    key = (json.dumps({"strategy": kind}), json.dumps(base.context, default=str), base.model)
    for col, members in base.runs.items():
        ok = [r for r in members if r.ok]
        if len(ok) < 2:
            continue
        row = rows.setdefault(key, Row(method={"strategy": kind}, context=base.context, model=base.model))
        test_name = columns[col].test_name
        saved = ensembles.get(ok[0].group_key)
        value: float | None = None
        k = len(ok)
        if saved is not None and f"{kind}/acc" in saved.get("test", {}).get(test_name, {}):
            value = float(saved["test"][test_name][f"{kind}/acc"])
            k = int(saved.get("k", k))
        elif kind == "vote":
            try:
                value = vote(ok)[test_name]["acc"]
            except RunDirError as err:
                problems.append(f"VOTE for {ok[0].dataset} ({len(ok)} BASE runs): {err}")
        if value is None:
            cell = row.cells.setdefault(col, Cell())
            if kind == "avg":
                cell.note = "not computed: python -m sdbert.analysis.ensemble <dir> --per-group"
            continue
        row.cells[col] = Cell(values=[value if columns[col].nli else 100.0 - value])
        row.ks.add(k)


# ----------------------------------------------------------------------------------------------- tables
def _cell_text(row: Row, col: Column, typical_n: int) -> str:
    cell = row.cells.get(col.name)
    method = cell.method if cell is not None and cell.method else row.method
    paper_number = paper_value(method, col.name, col.dataset, row.model)
    ref = _paper_fmt(paper_number, col.name)
    if cell is None:
        return ""  # no run of this row on this set (the paper's number is shown only beside ours)
    trouble = [f"{n} {what}" for n, what in ((cell.failed, "failed"), (cell.unfinished, "unfinished")) if n]
    if not cell.values:
        if trouble:
            return f"n/a ({', '.join(trouble)}){ref}"
        return f"n/c{ref}" if cell.note else f"—{ref}"
    text = _fmt(cell.mean)
    if cell.std is not None:
        text += f" ± {_fmt(cell.std)}"
    text += ref
    extra = []
    if row.strategy not in ("vote", "avg") and len(cell.values) != typical_n:
        extra.append(f"n={len(cell.values)}")
    extra += trouble
    return text + (f" [{', '.join(extra)}]" if extra else "")


def _errors(row: Row, cols: Sequence[Column]) -> dict[str, float]:
    out = {}
    for col in cols:
        cell = row.cells.get(col.name)
        if cell is not None and cell.mean is not None:
            out[col.name] = (100.0 - cell.mean) if col.nli else cell.mean
    return out


def _paper_errors_for(row: Row, cols: Sequence[Column]) -> dict[str, float] | None:
    out = {}
    for col in cols:
        cell = row.cells.get(col.name)
        method = cell.method if cell is not None and cell.method else row.method
        value = paper_value(method, col.name, col.dataset, row.model)
        if value is None:
            return None
        out[col.name] = 100.0 - value if col.nli else value
    return out


def _delta_text(row: Row, base: Row | None, cols: Sequence[Column]) -> str:
    if not cols:
        return ""
    if row.strategy == "base":
        return "-"
    if base is None:
        return "— (no BASE)"
    ours_e, base_e = _errors(row, cols), _errors(base, cols)
    ours = relative_error_change(ours_e, base_e)
    text = "—" if ours is None else f"{ours:.2f}%"
    common = [c for c in cols if c.name in ours_e and c.name in base_e]
    p_row, p_base = _paper_errors_for(row, common), _paper_errors_for(base, common)
    if ours is not None and p_row is not None and p_base is not None:
        ref = relative_error_change(p_row, p_base)
        text += "" if ref is None else f" ({ref:.2f}%)"
    return text


def typical_seeds(rows: Sequence[Row], columns: Sequence[Column]) -> int:
    """The most common number of finished seeds per cell (cells with another number are marked)."""
    counts = [len(r.cells[c.name].values) for r in rows if r.strategy not in ("vote", "avg")
              for c in columns if c.name in r.cells and r.cells[c.name].values]
    return statistics.mode(counts) if counts else 1


def results_table(rows: Sequence[Row], columns: Sequence[Column]) -> str:
    """Table 3 / Table 4 layout: error columns, Avg. Δ, accuracy columns, Avg. Δ."""
    cls = [c for c in columns if not c.nli]
    nli = [c for c in columns if c.nli]
    header = ["Model", *(c.title for c in cls)]
    if cls:
        header.append("Avg. Δ")
    header += [c.title for c in nli]
    if nli:
        header.append("Avg. Δ (NLI)")
    typical_n = typical_seeds(rows, columns)
    bases = {r.context_key: r for r in rows if r.strategy == "base"}
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        base = bases.get(row.context_key)
        cells = [row.label, *(_cell_text(row, c, typical_n) for c in cls)]
        if cls:
            cells.append(_delta_text(row, base, cls))
        cells += [_cell_text(row, c, typical_n) for c in nli]
        if nli:
            cells.append(_delta_text(row, base, nli))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def teacher_size_table(records: Sequence[Record], columns: Sequence[Column]) -> str | None:
    """Table 2 layout (rows SDV/SDA × K, their datasets as columns) where K varies on a dataset; else None."""
    picked = [r for r in records if r.method.get("strategy") in ("sda", "sdv")
              and float(r.method.get("distill_weight", 1.0)) == 1.0 and r.method.get("teacher_dropout") is not False]
    ks: dict[tuple[str, str, str], set[str]] = {}
    for r in picked:
        ks.setdefault((str(r.method["strategy"]), r.column, json.dumps(r.context, default=str)), set()).add(
            str(r.method.get("teacher_size")))
    varying = {(s, c) for (s, c, _), v in ks.items() if len(v) > 1}
    if not varying:
        return None
    strategies = {s for s, _ in varying}
    used = [c for c in columns if any(col == c.name for _, col in varying)]
    table: dict[tuple[int, str, tuple[int, int], str], dict[str, Record]] = {}
    for r in picked:
        strategy, k = str(r.method["strategy"]), r.method.get("teacher_size")
        if strategy not in strategies or r.column not in {c.name for c in used}:
            continue
        k_key = (1, 0) if k == "all" else (0, int(k))
        ctx = ", ".join(f"{a}={b}" for a, b in r.context)
        table.setdefault((STRATEGY_ORDER[strategy], ctx, k_key, str(k)), {})[r.column] = r
    header = ["Model", "K", *(f"{c.title} ({'acc' if c.nli else 'err'} %)" for c in used)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (order, ctx, _, k), cells in sorted(table.items()):
        name = next(s for s, o in STRATEGY_ORDER.items() if o == order).upper() + (f" · {ctx}" if ctx else "")
        texts = []
        for col in used:
            rec = cells.get(col.name)
            if rec is None:
                texts.append("")
                continue
            row = Row(method=rec.method, context=rec.context, model=rec.model, cells={col.name: rec.cell})
            texts.append(_cell_text(row, col, len(rec.cell.values)))
        lines.append("| " + " | ".join([name, "T−1" if k == "all" else k, *texts]) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- figures
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)


def _save(fig: Any, path: Path) -> Path:
    """Write one figure as PNG and free it (pyplot keeps every open figure otherwise)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def figure_lambda(rows: Sequence[Row], columns: Sequence[Column], out: Path) -> tuple[list[Path], str | None]:
    """Fig. 3: test error over λ, one line per (strategy, K, context), per test set."""
    plt = _plt()
    paths = []
    for col in columns:
        lines: dict[tuple[str, Any, str], list[tuple[float, Cell]]] = {}
        for row in rows:
            cell = row.cells.get(col.name)
            if row.strategy in ("sda", "sdv") and cell is not None and cell.values:
                key = (row.strategy, row.method.get("teacher_size"), row.context_key)
                lines.setdefault(key, []).append((float(row.method.get("distill_weight", 1.0)), cell))
        lines = {k: sorted(v, key=lambda p: p[0]) for k, v in lines.items() if len({x for x, _ in v}) > 1}
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for (strategy, k, context), points in lines.items():
            xs = [x for x, _ in points]
            ys = [(100.0 - c.mean) if col.nli else c.mean for _, c in points]
            es = [c.std or 0.0 for _, c in points]
            label = Row(method={"strategy": strategy, "teacher_size": k}, context=(), model="").label
            label += "" if context == "[]" else f" {context}"
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
        base = [r for r in rows if r.strategy == "base" and col.name in r.cells and r.cells[col.name].values]
        for row in base[:1]:
            c = row.cells[col.name]
            ax.axhline((100.0 - c.mean) if col.nli else c.mean, color="grey", ls="--", label="BASE")
        ax.set_xlabel("self-distillation weight λ")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"Test error on {col.title} over λ (Fig. 3)")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"figure3_lambda_{_slug(col.name)}.png"))
    return paths, None if paths else "no SDA/SDV runs that differ only in λ (experiment=figure3)"


def figure_stability(rows: Sequence[Row], columns: Sequence[Column], out: Path) -> tuple[list[Path], str | None]:
    """Fig. 4: boxplot over seeds (data-order seeds in experiment=figure4) of each row's test metric."""
    plt = _plt()
    paths = []
    for col in columns:
        picked = [r for r in rows if r.strategy not in ("vote", "avg") and col.name in r.cells
                  and len(r.cells[col.name].values) >= 2]
        if not picked:
            continue
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(picked)), 4))
        ax.boxplot([r.cells[col.name].values for r in picked])
        for i, row in enumerate(picked, start=1):  # the seeds themselves: few of them, so show each
            values = row.cells[col.name].values
            offsets = [0.08 * ((j % 5) - 2) for j in range(len(values))]
            ax.scatter([i + o for o in offsets], values, s=12, color="black", alpha=0.6, zorder=3)
        ax.set_xticks(range(1, len(picked) + 1), [r.label for r in picked], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(f"test {'accuracy' if col.nli else 'error'} (%)")
        n = sorted({len(r.cells[col.name].values) for r in picked})
        ax.set_title(f"Training stability on {col.title}: {'/'.join(map(str, n))} seeds (Fig. 4)")
        paths.append(_save(fig, out / f"figure4_stability_{_slug(col.name)}.png"))
    return paths, None if paths else "no setup with 2 or more finished seeds (experiment=figure4)"


def _history_mean(runs: Sequence[Run], column: str, index: str) -> Any:
    import pandas as pd

    frames = []
    for run in runs:
        hist = run.history() if run.ok else None
        if hist is None or column not in hist or index not in hist:
            continue
        part = hist[[index, column]].dropna()
        if not part.empty:
            frames.append(part.groupby(index)[column].last())
    if not frames:
        return None
    return pd.concat(frames, axis=1).mean(axis=1)


def figure_epochs(rows: Sequence[Row], columns: Sequence[Column], out: Path) -> tuple[list[Path], str | None]:
    """Fig. 5: test error after each epoch (``epoch_<test>/err`` from ``callbacks=with_epoch_test``)."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    paths = []
    for col in columns:
        series = []
        for row in rows:
            if row.strategy in ("vote", "avg") or col.name not in row.runs:
                continue
            curve = _history_mean(row.runs[col.name], f"epoch_{col.test_name}/err", "epoch")
            if curve is not None:
                series.append((row, curve))
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for row, curve in series:
            ax.plot(curve.index.astype(int) + 1, curve.values, marker="o", label=row.label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("test error (%)")
        ax.set_title(f"Test error per epoch on {col.title} (Fig. 5)")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"figure5_epoch_error_{_slug(col.name)}.png"))
    return paths, None if paths else "no run logged epoch_test/err (train with callbacks=with_epoch_test)"


def figure_losses(rows: Sequence[Row], columns: Sequence[Column], out: Path) -> tuple[list[Path], str | None]:
    """Fig. 6: cross-entropy and MSE (distillation) loss over optimizer steps, per dataset."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    paths = []
    for dataset in sorted({c.dataset for c in columns}):
        col = next(c for c in columns if c.dataset == dataset)
        series = []
        for row in rows:
            if row.strategy in ("vote", "avg") or col.name not in row.runs:
                continue
            ce = _history_mean(row.runs[col.name], "train/ce", "step")
            mse = _history_mean(row.runs[col.name], "train/mse", "step")
            if mse is not None and ce is not None:
                series.append((row, ce, mse))
        if not series:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
        for row, ce, mse in series:
            axes[0].plot(ce.index + 1, ce.values, label=row.label, lw=1)
            axes[1].plot(mse.index + 1, mse.values, label=row.label, lw=1)
        for ax, name in zip(axes, ("cross-entropy (CE) loss", "MSE loss (student vs teacher logits)"), strict=True):
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(name)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[1].legend(fontsize=7)
        fig.suptitle(f"Loss curves on {DISPLAY.get(dataset, dataset)} (Fig. 6)")
        paths.append(_save(fig, out / f"figure6_losses_{_slug(dataset)}.png"))
    return paths, None if paths else "no SDA/SDV run logged train/ce and train/mse"


# ----------------------------------------------------------------------------------------------- report
def _runs_csv(runs: Sequence[Run], path: Path) -> None:
    import csv

    fields = ["path", "status", "dataset", "model", "strategy", "teacher_size", "distill_weight", "seed",
              "data_seed", "test", "error"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for run in runs:
            try:
                method, dataset, model = run.method, run.dataset, run.model
                seed, data_seed = run.seed, run.data_seed
            except RunDirError:
                method, dataset, model, seed, data_seed = {}, "?", "?", "?", "?"
            writer.writerow({
                "path": str(run.path), "status": run.status, "dataset": dataset, "model": model,
                "strategy": method.get("strategy", ""), "teacher_size": method.get("teacher_size", ""),
                "distill_weight": method.get("distill_weight", ""), "seed": seed, "data_seed": data_seed,
                "test": json.dumps(run.metrics.get("test", {}), sort_keys=True), "error": run.error or "",
            })


def run_status_lines(results: Results) -> list[str]:
    """Plain lines on what is not in the tables: failed, unfinished, never started, superseded."""
    found = results.found
    lines = []
    for run in results.runs:
        if run.status == "failed":
            lines.append(f"FAILED  {run.path}: {run.error}")
        elif run.status == "incomplete":
            lines.append(f"UNFINISHED  {run.path}: {run.error}")
    for sweep, num, job in found.missing_jobs():
        lines.append(f"MISSING  {sweep.path} job #{num} ({sweep.describe_job(job)}): no run directory; the sweep "
                     "stopped before it or it was deleted")
    for sweep in found.sweeps:
        if sweep.problem:
            lines.append(f"UNCHECKED  {sweep.path}: {sweep.problem}")
    for old, new in results.superseded:
        lines.append(f"SUPERSEDED  {old.path} ({old.status}) by the newer run {new.path}")
    lines += [f"PROBLEM  {p}" for p in results.problems]
    return lines


def write_report(paths: Sequence[str | Path], out: str | Path | None = None) -> tuple[Path, Results]:
    """Collect the runs under ``paths`` and write report.md, the PNG figures and runs.csv into ``out``."""
    results = collect(paths)
    out_dir = Path(out) if out is not None else Path(paths[0]) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    n_ok = sum(r.ok for r in results.runs)
    n_failed = sum(r.status == "failed" for r in results.runs)
    n_unfinished = sum(r.status == "incomplete" for r in results.runs)
    missing = results.found.missing_jobs()
    md = ["# sdbert report", "", f"Sources: {', '.join(f'`{p}`' for p in paths)}", ""]
    md += ["## Runs", "",
           f"{len(results.found.runs)} run directories: {n_ok} finished, {n_failed} failed, {n_unfinished} "
           f"unfinished, {len(results.superseded)} superseded by a newer run of the same setup and seeds; "
           f"{len(missing)} sweep jobs never started.", ""]
    status = run_status_lines(results)
    if status:
        md += ["Not in the tables (or only partly):", "", "```", *status, "```", ""]
    else:
        md += ["Every run of every sweep finished.", ""]
    columns = sorted(results.columns.values(), key=lambda c: c.sort_key)
    models = sorted({r.model for r in results.rows})
    md += ["## Results", "",
           "Test error rate (%) for classification sets, accuracy (%) for NLI; mean ± sample std over the "
           "seeds of each setup (`[n=…]` where a cell has another number of seeds than most); the paper's "
           "published number in brackets where the dataset matches (Table 3 for BERT-base rows, Table 2 for "
           "other K, Table 4 for BERT-large). Avg. Δ: mean relative change of the error rate against BASE "
           "(positive = fewer errors), with the paper's own Avg. Δ over the same datasets in brackets. "
           "SDA/SDV rows without K use Table 2's best K for each dataset (the default; IMDb 5/5, AG's News "
           "all/1, SNLI 2/1 for SDA/SDV), as Table 3 does. "
           "VOTE/AVG: ensembles of the BASE seeds (`python -m sdbert.analysis.ensemble <dir> --per-group`; "
           "`n/c` = not computed yet).", ""]
    for model in models:
        rows = [r for r in results.rows if r.model == model]
        used = [c for c in columns if any(c.name in r.cells for r in rows)]
        n = typical_seeds(rows, used)
        md += [f"### {model}", "", results_table(rows, used), "",
               f"Seeds per cell: {n}{' (mean ± std)' if n > 1 else ''}, unless marked [n=…].", ""]
        t2 = teacher_size_table([r for r in results.records if r.model == model], used)
        if t2:
            md += [f"#### Teacher size K (Table 2 layout) · {model}", "", t2, ""]
    md += ["## Figures", ""]
    figures = [
        ("Figure 3: test error over λ", figure_lambda),
        ("Figure 4: training stability over seeds", figure_stability),
        ("Figure 5: test error per epoch", figure_epochs),
        ("Figure 6: CE and MSE loss over steps", figure_losses),
    ]
    rows_all = results.rows
    for title, draw in figures:
        pngs, reason = draw(rows_all, columns, out_dir)
        md += [f"### {title}", ""]
        md += [f"![{p.stem}]({p.name})" for p in pngs] if pngs else [f"Not drawn: {reason}."]
        md.append("")
    _runs_csv(results.runs, out_dir / "runs.csv")
    (out_dir / "report.md").write_text("\n".join(md))
    return out_dir / "report.md", results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="sdbert-report",
        description="Markdown tables (paper layout) and PNG figures from sweep or run directories, offline.",
    )
    p.add_argument("paths", nargs="+", help="sweep directories (train.py -m ...) or run directories")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: <first path>/report)")
    args = p.parse_args(argv)
    try:
        path, results = write_report(args.paths, args.out)
    except RunDirError as err:
        print(f"sdbert-report: error: {err}", file=sys.stderr)
        return 1
    n_ok = sum(r.ok for r in results.runs)
    print(f"sdbert-report: {len(results.found.runs)} run directories, {n_ok} finished → {path}")
    for line in run_status_lines(results):
        print(f"sdbert-report: {line}")
    return 0 if n_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
