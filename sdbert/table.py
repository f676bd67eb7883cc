"""Plain-text tables for the console that fit an 80-column terminal (the end of a run, the end of a sweep).

No colour and nothing cut: they end up in log files too. A column that does not fit leaves the table and
its cells follow it, one line each.
"""

from __future__ import annotations

from collections.abc import Sequence

#: the terminal width the tables fit
WIDTH = 80
GAP = "  "


def format_table(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int = WIDTH) -> str:
    """A header, a rule and one line per row, within ``width`` columns.

    The columns are taken in order while the table stays within ``width``; each one that would pass it is
    left out of the table, and its cells follow the table in full, one ``<column>: <value>`` line per row
    (``<first column> <key> · <column>: <value>`` when there are several rows). The first column, which
    names the rows, always stays.
    """
    table = [list(columns), *(list(row) for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    kept = [0]
    for i in range(1, len(columns)):
        if sum(widths[k] for k in kept) + len(GAP) * len(kept) + widths[i] <= width:
            kept.append(i)
    lines = [GAP.join(r[i].ljust(widths[i]) for i in kept).rstrip() for r in table]
    lines.insert(1, GAP.join("-" * widths[i] for i in kept))
    for row in rows:
        prefix = f"{columns[0]} {row[0]} · " if len(rows) > 1 else ""
        lines += [f"{prefix}{columns[i]}: {row[i]}" for i in range(len(columns)) if i not in kept]
    return "\n".join(lines)
