"""The paper's published numbers for a row and column, as test error %, and Avg. Δ as the paper computes it.

Avg. Δ is the paper's "average of relative change": the mean over the row's datasets of
``(err_BASE − err) / err_BASE`` in %, positive when the error falls, on error = 100 − accuracy for NLI.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from sdbert import paper
from sdbert.analysis.report.collect import error_from_accuracy
from sdbert.strategies import Description


def _as_error(column: str, value: float) -> float:
    """A number from the paper's tables as error %: its NLI columns print accuracy."""
    return error_from_accuracy(value) if column in paper.NLI_SETS else value


def paper_errors(method: str, table: Mapping[str, Mapping[str, float]] = paper.TABLE3) -> dict[str, float]:
    """A row of the paper's table as error rates (NLI accuracies become 100 − accuracy)."""
    return {c: _as_error(c, v) for c, v in table[method].items()}


def _published(method: Description, column: str, dataset: str, model: str) -> float | None:
    """The paper's number for this row and column in the paper's own metric (error or accuracy), if any."""
    strategy = method.name
    if "distill_weight" in method.keys and float(method.keys["distill_weight"]) != 1.0:
        return None  # only Figure 3 varies λ, and it has no table
    k = method.teacher_size
    if "large" in model.lower():
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


def paper_error(method: Description, column: str, dataset: str, model: str) -> float | None:
    """The paper's published test error % for this row (method, model) and column, if it has one."""
    value = _published(method, column, dataset, model)
    return None if value is None else _as_error(column, value)


def relative_error_change(errors: Mapping[str, float], base_errors: Mapping[str, float]) -> float | None:
    """Avg. Δ in %: the mean over the columns both have of ``(base − err) / base`` (positive = fewer errors)."""
    cols = [c for c in errors if c in base_errors and base_errors[c] > 0]
    if not cols:
        return None
    return 100.0 * statistics.fmean((base_errors[c] - errors[c]) / base_errors[c] for c in cols)
