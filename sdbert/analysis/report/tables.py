"""Markdown tables: Table 3 / Table 4 (results and Avg. Δ), Table 2 (teacher size K), and the paired
comparison of every strategy with BASE.

Cells hold error %; an NLI column shows accuracy, through :meth:`Column.shown`, and nowhere else.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence

from sdbert.analysis.report.collect import REFERENCE, Column, Comparison, Record, Row, method_order
from sdbert.analysis.report.paper_numbers import paper_error, relative_error_change
from sdbert.analysis.significance import ALPHA, N_RESAMPLES, POWER, PairedTest, mcnemar_text, p_text, spread


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(cells) + " |" for cells in body)])


def _paper_error_of(row: Row, col: Column) -> float | None:
    cell = row.cells.get(col.name)
    method = cell.method if cell is not None and cell.method is not None else row.method
    return paper_error(method, col.name, col.dataset, row.model)


def _paper_text(row: Row, col: Column) -> str:
    """`` (5.29)``: the paper's number as the column shows it (NLI accuracy with the paper's one decimal)."""
    error = _paper_error_of(row, col)
    return "" if error is None else f" ({col.shown(error):.{1 if col.nli else 2}f})"


def _cell_text(row: Row, col: Column, typical_n: int) -> str:
    cell = row.cells.get(col.name)
    ref = _paper_text(row, col)
    if cell is None:
        return ""  # no run of this row on this set (the paper's number is shown only beside ours)
    trouble = [f"{n} {what}" for n, what in ((cell.failed, "failed"), (cell.unfinished, "unfinished")) if n]
    if cell.mean is None:
        if trouble:
            return f"n/a ({', '.join(trouble)}){ref}"
        return f"n/c{ref}" if cell.note else f"—{ref}"
    text = _fmt(col.shown(cell.mean))
    if cell.std is not None:
        text += f" ± {_fmt(cell.std)}"
    text += ref
    extra = []
    if not row.is_ensemble and len(cell.errors) != typical_n:
        extra.append(f"n={len(cell.errors)}")
    extra += trouble
    return text + (f" [{', '.join(extra)}]" if extra else "")


def _mean_errors(row: Row, cols: Sequence[Column]) -> dict[str, float]:
    cells = {col.name: row.cells.get(col.name) for col in cols}
    return {name: cell.mean for name, cell in cells.items() if cell is not None and cell.mean is not None}


def _paper_errors_for(row: Row, cols: Sequence[Column]) -> dict[str, float] | None:
    """The paper's errors for all of ``cols``, or None if it lacks one of them."""
    out = {col.name: _paper_error_of(row, col) for col in cols}
    return None if None in out.values() else out  # type: ignore[return-value]


def _delta_text(row: Row, base: Row | None, cols: Sequence[Column]) -> str:
    if not cols:
        return ""
    if row.strategy == REFERENCE:
        return "-"
    if base is None:
        return "— (no BASE)"
    ours_e, base_e = _mean_errors(row, cols), _mean_errors(base, cols)
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
    counts = [len(r.cells[c.name].errors) for r in rows if not r.is_ensemble
              for c in columns if c.name in r.cells and r.cells[c.name].errors]
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
    bases = {r.context_key: r for r in rows if r.strategy == REFERENCE}
    body = []
    for row in rows:
        base = bases.get(row.context_key)
        cells = [row.label, *(_cell_text(row, c, typical_n) for c in cls)]
        if cls:
            cells.append(_delta_text(row, base, cls))
        cells += [_cell_text(row, c, typical_n) for c in nli]
        if nli:
            cells.append(_delta_text(row, base, nli))
        body.append(cells)
    return _table(header, body)


def teacher_size_table(records: Sequence[Record], columns: Sequence[Column]) -> str | None:
    """Table 2 layout (rows: a method with K × K, their datasets as columns) where K varies on a dataset;
    else None. Methods with a key off its default (λ, the teacher's mode) are left out, as in the paper."""
    picked = [r for r in records if r.method.teacher_size is not None and not r.method.changed]
    ks: dict[tuple[str, str, str], set[str]] = {}
    for r in picked:
        ks.setdefault((r.method.name, r.column, json.dumps(r.context, default=str)), set()).add(
            str(r.method.teacher_size))
    varying = {(s, c) for (s, c, _), v in ks.items() if len(v) > 1}
    if not varying:
        return None
    strategies = {s for s, _ in varying}
    used = [c for c in columns if any(col == c.name for _, col in varying)]
    table: dict[tuple[int, str, str, tuple[int, int], str], dict[str, Record]] = {}
    for r in picked:
        strategy, k = r.method.name, r.method.teacher_size
        if strategy not in strategies or r.column not in {c.name for c in used}:
            continue
        k_key = (1, 0) if k == "all" else (0, int(k))
        ctx = ", ".join(f"{a}={b}" for a, b in r.context)
        table.setdefault((method_order(strategy), r.method.title, ctx, k_key, str(k)), {})[r.column] = r
    header = ["Model", "K", *(f"{c.title} ({c.metric} %)" for c in used)]
    body = []
    for (_, title, ctx, _, k), cells in sorted(table.items()):
        name = title + (f" · {ctx}" if ctx else "")
        texts = []
        for col in used:
            rec = cells.get(col.name)
            if rec is None:
                texts.append("")
                continue
            row = Row(method=rec.method, context=rec.context, model=rec.model, cells={col.name: rec.cell})
            texts.append(_cell_text(row, col, len(rec.cell.errors)))
        body.append([name, "T−1" if k == "all" else k, *texts])
    return _table(header, body)


# ------------------------------------------------------------------------------------------ paired comparison
PAIRED_HEADER = ["Model", "seeds", "error % (mean ± std)", "BASE error %",
                 f"Δ error, pp [{100 * (1 - ALPHA):g} % CI over seeds]", "paired t p",
                 f"detectable at {100 * POWER:g} % power, pp",
                 f"examples: Δ [{100 * (1 - ALPHA):g} % CI]", "bootstrap p", "McNemar p per seed",
                 f"significant at {100 * ALPHA:g} %"]


def _seed_cells(t: PairedTest) -> list[str]:
    s = t.seeds
    if s is None:
        return ["needs 2 seeds", "", ""]
    return [f"{s.delta:+.2f} [{s.ci_low:+.2f}, {s.ci_high:+.2f}]", p_text(s.p_value), f"{s.detectable:.2f}"]


def paired_table(comparisons: Sequence[Comparison]) -> str:
    """One line per strategy against BASE on one test set (all ``comparisons`` on the same one): the
    seed-level test first, the pooled test-example tests beside it."""
    body = []
    for c in comparisons:
        t = c.test
        if t is None:
            body.append([c.label, "", "", "", f"not compared: {c.problem}", *[""] * 6])
            continue
        seeds = str(t.n_pairs) + ("" if t.pairing == "by seed" else "*")
        body.append([
            c.label, seeds, spread(t.errors), spread(t.base_errors), *_seed_cells(t),
            f"{t.delta:+.2f} [{t.ci_low:+.2f}, {t.ci_high:+.2f}]", p_text(t.p_value), mcnemar_text(t.mcnemar),
            "yes" if t.significant else "no",
        ])
    return _table(PAIRED_HEADER, body)


def paired_notes(comparisons: Sequence[Comparison]) -> list[str]:
    """How runs were paired where it was not simply seed with seed."""
    return [f"`*` {c.label}: paired {c.test.pairing}." for c in comparisons
            if c.test is not None and c.test.pairing != "by seed"]


def paired_section(comparisons: Sequence[Comparison], columns: Sequence[Column]) -> list[str]:
    """Markdown lines: "Paired comparison with BASE", one table per model and test set."""
    level = f"{100 * (1 - ALPHA):g} %"
    md = ["## Paired comparison with BASE", "",
          "Each strategy against BASE of the same model and setup on the same test examples, runs paired by "
          "seed: the test error (%) of the paired seeds (mean ± std); first the seed-level test (will it help "
          "a new seed's run?): the mean of the per-seed differences Δ = strategy − BASE in percentage points "
          f"(negative = fewer errors) with its {level} t-interval, the paired t-test's p-value, and the smallest "
          f"|Δ| this many seeds with this spread detect at {100 * POWER:g} % power; then the tests over test "
          f"examples for these seeds (paired bootstrap, examples resampled {N_RESAMPLES:,} times pooling the "
          f"seed pairs; McNemar per seed pair). Significant: paired t p < {ALPHA:g} (with one seed pair, "
          "bootstrap p). Method: docs/experiments.md, \"Is a difference real?\".", ""]
    if not comparisons:
        return [*md, "Nothing to compare: no strategy has a BASE row of the same model and setup.", ""]
    for model in sorted({c.model for c in comparisons}):
        for col in columns:
            here = [c for c in comparisons if c.model == model and c.column.name == col.name]
            if here:
                notes = paired_notes(here)
                md += [f"### {col.title} ({col.test_name}) · {model}", "", paired_table(here), "",
                       *([*notes, ""] if notes else [])]
    return md
