"""``sdbert-report`` / ``python -m sdbert.analysis.report``: report.md, the figures and runs.csv from run
directories (see the package docstring)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdbert.analysis.report.collect import Results, collect, compare_with_base
from sdbert.analysis.report.curves import curve_table, curves, figure_curve
from sdbert.analysis.report.figures import figure_epochs, figure_lambda, figure_losses, figure_stability
from sdbert.analysis.report.tables import paired_section, results_table, teacher_size_table, typical_seeds
from sdbert.analysis.rundirs import Run, RunDirError
from sdbert.io import write_text
from sdbert.provenance import describe_environment, environment


def runs_csv(runs: Sequence[Run]) -> str:
    """One CSV line per run: directory, status, setup, seeds, test metrics, error."""
    fields = ["path", "status", "dataset", "model", "strategy", "method", "keys", "seed", "data_seed", "test",
              "error"]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    seed: int | str
    data_seed: int | str
    for run in runs:
        try:
            name, label, keys = run.method.name, run.method.label, json.dumps(dict(run.method.keys), sort_keys=True)
            dataset, model, seed, data_seed = run.dataset, run.model, run.seed, run.data_seed
        except RunDirError:
            name, label, keys, dataset, model, seed, data_seed = "", "", "", "?", "?", "?", "?"
        writer.writerow({
            "path": str(run.path), "status": run.status, "dataset": dataset, "model": model,
            "strategy": name, "method": label, "keys": keys, "seed": seed, "data_seed": data_seed,
            "test": json.dumps(run.metrics.get("test", {}), sort_keys=True), "error": run.error or "",
        })
    return text.getvalue()


def run_status_lines(results: Results) -> list[str]:
    """Plain lines on what is not in the tables: failed, unfinished, never started, superseded."""
    found = results.found
    lines = []
    for run in results.runs:
        if run.status == "failed":
            lines.append(f"FAILED  {run.path}: {run.error}")
        elif run.status in ("running", "interrupted"):
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


def environment_section(results: Results) -> list[str]:
    """Markdown: the environments (libraries, CPU, threads, kernel caps, device, precision) the finished
    runs came from, and one line for every table row whose runs came from more than one."""
    ok = [r for r in results.runs if r.ok]
    envs: dict[Any, list[Run]] = {}
    for run in ok:
        envs.setdefault(environment(run.metrics.get("provenance")), []).append(run)
    md = ["## Environments", ""]
    for i, (env, runs) in enumerate(sorted(envs.items(), key=lambda kv: -len(kv[1])), start=1):
        commits = sorted({str((r.metrics.get("provenance") or {}).get("commit", "?"))[:10] for r in runs})
        md.append(f"{i}. {len(runs)} run(s): {describe_environment(env)}; code {', '.join(commits)}")
    mixed = [row.label for row in results.rows
             if len({environment(r.metrics.get("provenance")) for runs in row.runs.values() for r in runs if r.ok}) > 1]
    md.append("")
    if len(envs) > 1:
        md += ["The runs come from more than one environment: numbers of different environments may differ in the "
               f"last digits. Rows mixing environments: {', '.join(mixed) if mixed else 'none'}.", ""]
    return md


def write_report(paths: Sequence[str | Path], out: str | Path | None = None) -> tuple[Path, Results]:
    """Collect the runs under ``paths`` and write report.md, the PNG figures and runs.csv into ``out``."""
    results = collect(paths)
    out_dir = Path(out) if out is not None else Path(paths[0]) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    n_ok = sum(r.ok for r in results.runs)
    n_failed = sum(r.status == "failed" for r in results.runs)
    n_unfinished = sum(r.status in ("running", "interrupted") for r in results.runs)
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
    md += paired_section(compare_with_base(results), columns)
    for col in columns:
        found = curves(results.rows, col)
        if found:
            md += [f"## Per epoch: {col.title} ({col.test_name})", "",
                   "Mean ± std over seeds after each epoch: the error of the reported model, the training "
                   "cross-entropy (epoch mean), and the share of the training loss that is the distillation "
                   "term (strategies with a teacher).", "", curve_table(found), ""]
    md += environment_section(results)
    md += ["## Figures", ""]
    figures = [
        ("Figure 3: test error over λ", figure_lambda),
        ("Figure 4: training stability over seeds", figure_stability),
        ("Figure 5: test error per epoch", figure_epochs),
        ("Figure 6: CE and MSE loss over steps", figure_losses),
        ("Per epoch: error, training CE and distillation share", figure_curve),
    ]
    rows_all = results.rows
    for title, draw in figures:
        pngs, reason = draw(rows_all, columns, out_dir)
        md += [f"### {title}", ""]
        md += [f"![{p.stem}]({p.name})" for p in pngs] if pngs else [f"Not drawn: {reason}."]
        md.append("")
    write_text(out_dir / "runs.csv", runs_csv(results.runs))
    return write_text(out_dir / "report.md", "\n".join(md)), results


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
