"""The end-of-run table a person reads in the console (plain text: it ends up in log files too)."""

from __future__ import annotations

from typing import Any

from sdbert.loggers import wandb_hint
from sdbert.strategies.description import SUMMARY_KEY, Description
from sdbert.table import format_table

SUMMARY_COLUMNS = ("dataset", "model", "method", "test acc (%)", "best epoch", "wall time", "output directory")


def _wall(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def summary_row(summary: dict[str, Any]) -> list[str]:
    """One table row: the test accuracy of the reported model on each test split (``test/acc`` ...)."""
    accs = {k.split("/")[0]: v for k, v in summary.get("test", {}).items() if k.endswith("/acc") and k.count("/") == 1}
    test = f"{next(iter(accs.values())):.2f}" if len(accs) == 1 else ", ".join(f"{k} {v:.2f}" for k, v in accs.items())
    best = summary.get("best_epoch")
    return [
        str(summary.get("dataset", "-")),
        str(summary.get("model", "-")),
        Description.from_dict(summary[SUMMARY_KEY]).label if Description.is_one(summary.get(SUMMARY_KEY)) else "-",
        test or "-",
        f"{best}/{summary.get('epochs', '?')}" if best is not None else "-",
        _wall(float(summary.get("wall_time_s", 0.0))),
        str(summary.get("output_dir", "-")),
    ]


#: the stages the time line under the table names; its ``other`` adds up the rest (checkpoints, other)
SHOWN_STAGES = ("setup", "training", "validation", "test")


def format_time_split(summary: dict[str, Any]) -> str | None:
    """``setup 41s · training 12m10s · validation 2m31s · test 13m02s · other 9s`` from
    ``wall_time_split_s`` (within 80 columns for runs under 100 hours), or None when the summary has none."""
    split = summary.get("wall_time_split_s")
    if not split:
        return None
    shown = {stage: float(split.get(stage, 0.0)) for stage in SHOWN_STAGES}
    shown["other"] = sum(float(v) for k, v in split.items() if k not in SHOWN_STAGES)
    return " · ".join(f"{stage} {_wall(seconds)}" for stage, seconds in shown.items())


def format_summary_table(summaries: list[dict[str, Any]]) -> str:
    """A plain-text table of finished runs within 80 columns (:func:`sdbert.table.format_table`: a column
    that does not fit, such as a long output directory, follows the table on its own line, not cut)."""
    return format_table(SUMMARY_COLUMNS, [summary_row(s) for s in summaries])


def print_summary(summary: dict[str, Any]) -> None:
    """The table a person reads at the end of a run, where its time went, then where its W&B run went (if any)."""
    print("\n" + format_summary_table([summary]))
    if (split := format_time_split(summary)) is not None:
        print(split)
    if (hint := wandb_hint(summary.get("wandb"))) is not None:
        print(hint)
