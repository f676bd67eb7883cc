"""The paper's figures as PNG files, each drawn where the runs hold what it needs (else: why not).

Fig. 3 (test error over λ), Fig. 4 (boxplot over seeds), Fig. 5 (test error per epoch), Fig. 6 (CE and
MSE loss over optimizer steps). Every function takes the report's rows and columns and an output folder
and returns the files written and, when it wrote none, the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdbert.analysis.report.collect import DEFAULT_K, DISPLAY, REFERENCE, Cell, Column, Row
from sdbert.analysis.rundirs import Run
from sdbert.io import write_with


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)


def save_png(fig: Any, path: Path) -> Path:
    """Write one figure as PNG and free it (pyplot keeps every open figure otherwise)."""
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    pyplot().close(fig)
    return path


def figure_lambda(rows: Sequence[Row], columns: Sequence[Column], out: Path) -> tuple[list[Path], str | None]:
    """Fig. 3: test error over λ, one line per (strategy, K, context), per test set."""
    plt = pyplot()
    paths = []
    for col in columns:
        lines: dict[tuple[str, Any, str], list[tuple[float, Cell]]] = {}
        for row in rows:
            cell = row.cells.get(col.name)
            if "distill_weight" in row.method.keys and cell is not None and cell.errors:
                key = (row.method.title, row.method.teacher_size, row.context_key)
                lines.setdefault(key, []).append((float(row.method.keys["distill_weight"]), cell))
        lines = {k: sorted(v, key=lambda p: p[0]) for k, v in lines.items() if len({x for x, _ in v}) > 1}
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for (title, k, context), points in lines.items():
            xs = [x for x, _ in points]
            ys = [c.mean for _, c in points]
            es = [c.std or 0.0 for _, c in points]
            label = title if k is None or k == DEFAULT_K else f"{title} (K={k})"
            label += "" if context == "[]" else f" {context}"
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
        base = [r for r in rows if r.strategy == REFERENCE and col.name in r.cells and r.cells[col.name].errors]
        for row in base[:1]:
            c = row.cells[col.name]
            ax.axhline(c.mean, color="grey", ls="--", label="BASE")
        ax.set_xlabel("self-distillation weight λ")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"Test error on {col.title} over λ (Fig. 3)")
        ax.legend(fontsize=8)
        paths.append(save_png(fig, out / f"figure3_lambda_{slug(col.name)}.png"))
    return paths, None if paths else "no SDA/SDV runs that differ only in λ (experiment=figure3)"


def figure_stability(rows: Sequence[Row], columns: Sequence[Column], out: Path) -> tuple[list[Path], str | None]:
    """Fig. 4: boxplot over seeds (data-order seeds in experiment=figure4) of each row's test metric."""
    plt = pyplot()
    paths = []
    for col in columns:
        picked = [r for r in rows if not r.is_ensemble and col.name in r.cells and len(r.cells[col.name].errors) >= 2]
        if not picked:
            continue
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(picked)), 4))
        shown = [[col.shown(e) for e in r.cells[col.name].errors] for r in picked]  # accuracy for NLI
        ax.boxplot(shown)
        for i, values in enumerate(shown, start=1):  # the seeds themselves: few of them, so show each
            offsets = [0.08 * ((j % 5) - 2) for j in range(len(values))]
            ax.scatter([i + o for o in offsets], values, s=12, color="black", alpha=0.6, zorder=3)
        ax.set_xticks(range(1, len(picked) + 1), [r.label for r in picked], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(f"test {'accuracy' if col.nli else 'error'} (%)")
        n = sorted({len(r.cells[col.name].errors) for r in picked})
        ax.set_title(f"Training stability on {col.title}: {'/'.join(map(str, n))} seeds (Fig. 4)")
        paths.append(save_png(fig, out / f"figure4_stability_{slug(col.name)}.png"))
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
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    paths = []
    for col in columns:
        series = []
        for row in rows:
            if row.is_ensemble or col.name not in row.runs:
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
        paths.append(save_png(fig, out / f"figure5_epoch_error_{slug(col.name)}.png"))
    return paths, None if paths else "no run logged epoch_test/err (train with callbacks=with_epoch_test)"


def figure_losses(rows: Sequence[Row], columns: Sequence[Column], out: Path) -> tuple[list[Path], str | None]:
    """Fig. 6: cross-entropy and MSE (distillation) loss over optimizer steps, per dataset."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    paths = []
    for dataset in sorted({c.dataset for c in columns}):
        col = next(c for c in columns if c.dataset == dataset)
        series = []
        for row in rows:
            if row.is_ensemble or col.name not in row.runs:
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
        paths.append(save_png(fig, out / f"figure6_losses_{slug(dataset)}.png"))
    return paths, None if paths else "no SDA/SDV run logged train/ce and train/mse"
