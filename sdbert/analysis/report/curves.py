"""The curve a user looks at: per epoch, each setup's error (mean ± std over seeds), its training
cross-entropy, and the share of the training loss that is the distillation term — when the teacher
starts to matter (the paper's Fig. 5 and Fig. 6 in one view).

The error is the test error after each epoch where the runs logged it (``callbacks=with_epoch_test``:
``epoch_<test>/err``), else the validation error (``val/err``, the reported model). The distillation
share of an epoch is the mean over its optimizer steps of ``(train/loss − train/ce) / train/loss``: the
weighted teacher term, whatever the strategy computes it from; setups without one have no share.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbert.analysis.report.collect import Column, Row
from sdbert.analysis.report.figures import pyplot, save_png, slug
from sdbert.analysis.rundirs import Run


@dataclass(frozen=True)
class EpochStats:
    """One quantity at one epoch over a setup's seeds."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) >= 2 else 0.0

    def text(self, digits: int = 2) -> str:
        std = f" ± {self.std:.{digits}f}" if len(self.values) >= 2 else ""
        return f"{self.mean:.{digits}f}{std}"


@dataclass
class Curve:
    """A setup's per-epoch curves (epochs 1-based), each over the seeds that logged that epoch."""

    label: str
    #: where the error comes from: ``epoch_<test>/err`` or ``val/err``
    source: str
    error: dict[int, EpochStats] = field(default_factory=dict)
    ce: dict[int, EpochStats] = field(default_factory=dict)
    distill_share: dict[int, EpochStats] = field(default_factory=dict)

    @property
    def epochs(self) -> list[int]:
        return sorted(set(self.error) | set(self.ce))


def run_epochs(run: Run, error_key: str) -> dict[str, dict[int, float]]:
    """One run's per-epoch ``error`` (the last value logged in the epoch), mean training ``ce`` and mean
    ``distill_share`` (where the loss has a distillation term), keyed by 1-based epoch."""
    hist = run.history() if run.ok else None
    out: dict[str, dict[int, float]] = {"error": {}, "ce": {}, "distill_share": {}}
    if hist is None or "epoch" not in hist:
        return out
    if error_key in hist:
        part = hist[["epoch", error_key]].dropna()
        out["error"] = {int(e) + 1: float(v) for e, v in part.groupby("epoch")[error_key].last().items()}
    if "train/ce" in hist:
        steps = hist[["epoch", "train/ce", *(["train/loss"] if "train/loss" in hist else [])]].dropna()
        out["ce"] = {int(e) + 1: float(v) for e, v in steps.groupby("epoch")["train/ce"].mean().items()}
        if "train/loss" in steps:
            share = (steps["train/loss"] - steps["train/ce"]) / steps["train/loss"]
            if (share.abs() > 1e-12).any():
                means = share.groupby(steps["epoch"]).mean()
                out["distill_share"] = {int(e) + 1: float(v) for e, v in means.items()}
    return out


def _over_seeds(per_run: Sequence[dict[int, float]]) -> dict[int, EpochStats]:
    epochs = sorted({e for r in per_run for e in r})
    return {e: EpochStats(tuple(r[e] for r in per_run if e in r and math.isfinite(r[e]))) for e in epochs}


def curves(rows: Sequence[Row], column: Column) -> list[Curve]:
    """The curves of every (non-ensemble) row with runs on ``column``'s test set that logged an error per epoch."""
    found = []
    for row in rows:
        runs = [] if row.is_ensemble else [r for r in row.runs.get(column.name, []) if r.ok]
        if not runs:
            continue
        first = runs[0].history()
        epoch_key = f"epoch_{column.test_name}/err"
        key = epoch_key if first is not None and epoch_key in first else "val/err"
        per_run = [run_epochs(r, key) for r in runs]
        if not any(p["error"] for p in per_run):
            continue
        found.append(Curve(
            label=row.label, source=key,
            error=_over_seeds([p["error"] for p in per_run]),
            ce=_over_seeds([p["ce"] for p in per_run]),
            distill_share=_over_seeds([p["distill_share"] for p in per_run if p["distill_share"]]),
        ))
    return found


def curve_table(found: Sequence[Curve]) -> str:
    """A markdown table: one line per epoch; per setup its error, training CE and distillation share (%)."""
    header = ["epoch"]
    for c in found:
        header += [f"{c.label}: {'test' if c.source.startswith('epoch_') else 'val'} error %", f"{c.label}: train CE"]
        if c.distill_share:
            header.append(f"{c.label}: distillation share of the loss %")
    epochs = sorted({e for c in found for e in c.epochs})
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in epochs:
        cells = [str(e)]
        for c in found:
            cells += [c.error[e].text() if e in c.error else "", c.ce[e].text(3) if e in c.ce else ""]
            if c.distill_share:
                share = c.distill_share.get(e)
                cells.append(EpochStats(tuple(100 * v for v in share.values)).text(1) if share else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _band(ax: Any, stats: dict[int, EpochStats], label: str, color: str, scale: float = 1.0) -> None:
    xs = sorted(stats)
    mean = [scale * stats[e].mean for e in xs]
    std = [scale * stats[e].std for e in xs]
    ax.plot(xs, mean, marker="o", ms=3, label=label, color=color)
    ax.fill_between(xs, [m - s for m, s in zip(mean, std, strict=True)],
                    [m + s for m, s in zip(mean, std, strict=True)], color=color, alpha=0.2)


def figure_curve(rows: Sequence[Row], columns: Sequence[Column], out: Path) -> tuple[list[Path], str | None]:
    """Per test set: error, training CE and distillation share per epoch, mean ± std over seeds (bands)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    paths = []
    for col in columns:
        found = curves(rows, col)
        if not found:
            continue
        shares = any(c.distill_share for c in found)
        fig, axes = plt.subplots(1, 3 if shares else 2, figsize=(15 if shares else 10, 4))
        for i, c in enumerate(found):
            color = f"C{i % 10}"  # one colour per setup in every panel
            _band(axes[0], c.error, c.label, color)
            _band(axes[1], c.ce, c.label, color)
            if c.distill_share:
                _band(axes[2], c.distill_share, c.label, color, scale=100.0)
        which = "test" if all(c.source.startswith("epoch_") for c in found) else "validation"
        titles = (f"{which} error (%)", "training cross-entropy (epoch mean)",
                  "distillation term, % of the training loss")[: len(axes)]
        for ax, title in zip(axes, titles, strict=True):
            ax.set_xlabel("epoch")
            ax.set_ylabel(title)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.suptitle(f"{col.title}: per epoch, mean ± std over seeds (cf. the paper's Fig. 5 and 6)")
        paths.append(save_png(fig, out / f"curve_{slug(col.name)}.png"))
    reason = "no run logged an error per epoch (validate every epoch, or callbacks=with_epoch_test)"
    return paths, None if paths else reason
