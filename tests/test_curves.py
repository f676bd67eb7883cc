"""The per-epoch curve of the report (sdbert.analysis.report.curves) against the runs' own metrics.csv,
and the report's environments section from the runs' provenance."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from sdbert.analysis.report import write_report
from sdbert.analysis.report.collect import collect
from sdbert.analysis.report.curves import curves


def _brute(run_dir: Path, error_key: str) -> dict[str, dict[int, float]]:
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    out: dict[str, dict[int, list[float]]] = {"error": {}, "ce": {}, "share": {}}
    for r in rows:
        if not r["epoch"]:
            continue
        e = int(float(r["epoch"])) + 1
        if r.get(error_key):
            out["error"][e] = [float(r[error_key])]  # the last one of the epoch
        if r.get("train/ce"):
            ce, loss = float(r["train/ce"]), float(r["train/loss"])
            out["ce"].setdefault(e, []).append(ce)
            out["share"].setdefault(e, []).append((loss - ce) / loss)
    return {k: {e: statistics.fmean(v) for e, v in d.items()} for k, d in out.items()}


def test_curve_is_the_mean_over_seeds_of_each_runs_epochs(tiny_sweep):
    results = collect([tiny_sweep])
    column = next(iter(results.columns.values()))
    found = {c.label: c for c in curves(results.rows, column)}
    assert set(found) == {"BASE", "SDA"}
    key = f"epoch_{column.test_name}/err"
    for row in (r for r in results.rows if not r.is_ensemble):
        curve = found[row.label]
        assert curve.source == key and curve.epochs == [1, 2]
        brute = [_brute(Path(r.path), key) for r in row.runs[column.name]]
        for e in (1, 2):
            assert curve.error[e].mean == pytest.approx(statistics.fmean(b["error"][e] for b in brute))
            assert curve.error[e].std == pytest.approx(statistics.stdev(b["error"][e] for b in brute))
            assert curve.ce[e].mean == pytest.approx(statistics.fmean(b["ce"][e] for b in brute))
        if row.label == "BASE":
            assert curve.distill_share == {}  # no teacher term in BASE's loss
        else:
            share = statistics.fmean(b["share"][2] for b in brute)
            assert share > 0 and curve.distill_share[2].mean == pytest.approx(share)


def test_report_shows_the_curve_and_where_its_runs_came_from(tiny_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, sweep, ignore=shutil.ignore_patterns("checkpoints", "report"))
    md = write_report([sweep], tmp_path / "out")[0].read_text()
    assert "## Per epoch: " in md and (tmp_path / "out").glob("curve_*.png")
    assert list((tmp_path / "out").glob("curve_*.png"))
    env = md.split("## Environments", 1)[1].split("##", 1)[0]
    assert env.count("run(s):") == 1 and "4 run(s): cpu 32-true" in env and "torch 2.13.0" in env
    assert "more than one environment" not in env
    # one run from another machine setting (kernels capped): the report says so, naming the row
    summary = next(sweep.rglob("metrics.json"))
    data = json.loads(summary.read_text())
    data["provenance"]["kernel_caps"]["ATEN_CPU_CAPABILITY"] = "avx2"
    summary.write_text(json.dumps(data))
    title = data["strategy"]["title"]
    md = write_report([sweep], tmp_path / "out2")[0].read_text()
    env = md.split("## Environments", 1)[1].split("##", 1)[0]
    assert env.count("run(s):") == 2 and "kernels capped at AVX2" in env
    assert "more than one environment" in env and title in env.split("Rows mixing environments: ", 1)[1]
