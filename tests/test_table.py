"""Console tables fit an 80-column terminal and cut nothing (sdbert.table, the end-of-run and end-of-sweep
tables)."""

from __future__ import annotations

import re
from pathlib import Path

from sdbert.strategies import SelfDistillationAveraged
from sdbert.summary import format_summary_table
from sdbert.sweep import JobResult, format_jobs
from sdbert.table import WIDTH, format_table


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_columns_that_do_not_fit_follow_the_table_in_full() -> None:
    rows = [["a", "x" * 30, "y" * 40, "z"], ["b", "x", "y", "zz"]]
    lines = format_table(["key", "first", "second", "third"], rows, width=45).splitlines()
    assert _cells(lines[0]) == ["key", "first", "third"]  # "second" would pass 45 columns; "third" still fits
    assert _cells(lines[2]) == ["a", "x" * 30, "z"] and _cells(lines[3]) == ["b", "x", "zz"]
    assert all(len(line) <= 45 for line in lines[:4])
    assert lines[4:] == [f"key a · second: {'y' * 40}", "key b · second: y"]
    # one row: its lines need no key; a table that fits is a plain table
    assert format_table(["k", "v"], [["a", "y" * 50]], width=20).splitlines()[2:] == ["a", f"v: {'y' * 50}"]
    assert format_table(["k", "v"], [["a", "b"]]).splitlines() == ["k  v", "-  -", "a  b"]


def test_the_end_of_run_table_fits_80_columns_with_a_real_run_folder() -> None:
    out = "/home/someone/projects/sdbert/logs/train/runs/2026-11-26_03-23-24_sda-K2_snli_seed42_3fa9c1"
    run = {"dataset": "snli", "model": "embedded:all-minilm-l6-v2",
           "strategy": SelfDistillationAveraged(teacher_size=2).describe().to_dict(), "epochs": 3, "best_epoch": 2,
           "test": {"test/acc": 87.123}, "wall_time_s": 3725.0, "output_dir": out}
    lines = format_summary_table([run]).splitlines()
    assert all(len(line) <= WIDTH for line in lines[:-1]), lines
    assert _cells(lines[2])[:2] == ["snli", "embedded:all-minilm-l6-v2"] and "87.12" in lines[2]
    assert lines[-1] == f"output directory: {out}"


def test_the_end_of_sweep_table_fits_80_columns() -> None:
    sweep = Path("/home/someone/projects/sdbert/logs/train/multiruns/2026-11-26_03-23-24_3fa9c1")
    overrides = "experiment=table2_sda dataset=imdb teacher_size=3 distill_weight=1.0 seed=2"
    jobs = [JobResult(sweep / str(i), "ok", 87.5, "embedded:all-minilm-l6-v2", overrides, None) for i in range(12)]
    lines = format_jobs(jobs).splitlines()
    table = lines[:2 + len(jobs)]
    assert all(len(line) <= WIDTH for line in table), table
    assert _cells(table[13]) == ["11", "ok", "87.50", "embedded:all-minilm-l6-v2"]
    assert f"job 11 · overrides: {overrides}" in lines and lines[-1] == "12 of 12 jobs ok"
