"""A strategy from outside the package (tests/plugins/shrink.py) is trained, reported, resumed and exported
right by sdbert as it is: nothing in sdbert knows its name or its key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sdbert.analysis.report import write_report
from sdbert.analysis.rundirs import load_run
from sdbert.errors import ConfigError
from sdbert.export import export
from sdbert.predict import load_predictor
from sdbert.run import train
from sdbert.trained import TrainedModelError
from tests.conftest import FAST, ROOT
from tests.plugins.shrink import Shrink

PLUGIN = ["strategy=base", "strategy._target_=tests.plugins.shrink.Shrink"]


def test_the_default_describe_reports_the_plugins_own_key():
    described = Shrink(factor=0.9).describe()
    assert described.name == "shrink" and described.keys == {"factor": 0.9, "distill_weight": 1.0}
    assert described.label == "SHRINK (factor=0.9)" and Shrink().describe().label == "SHRINK"
    assert described.models == ("reported",) and described.exportable == ("reported",) and not described.averaged


@pytest.fixture(scope="module")
def plugin_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train.py -m`` over two values of the plugin's key and two seeds (4 tiny runs)."""
    sweep = tmp_path_factory.mktemp("plugin") / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", *FAST, *PLUGIN, "+strategy.factor=0.5,0.9", "seed=1,2",
         f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return sweep


def _job(sweep: Path, factor: float) -> Path:
    return next(p for p in sorted(sweep.iterdir()) if (p / "metrics.json").is_file()
                and load_run(p).method.keys["factor"] == factor)


@pytest.mark.long
def test_two_settings_of_the_plugins_key_are_two_rows_of_two_seeds(plugin_sweep, tmp_path):
    _, results = write_report([plugin_sweep], tmp_path / "report")
    rows = {row.label: row for row in results.rows}
    assert sorted(rows) == ["SHRINK", "SHRINK (factor=0.9)"]
    for row in rows.values():
        (cell,) = row.cells.values()
        assert len(cell.errors) == 2 and sorted(r.seed for r in next(iter(row.runs.values()))) == [1, 2]
    assert "| SHRINK (factor=0.9) |" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.long
def test_resume_refuses_a_checkpoint_of_the_other_setting(plugin_sweep, make_cfg, tmp_path):
    ckpt = _job(plugin_sweep, 0.5) / "checkpoints" / "last.ckpt"
    cfg = make_cfg(*PLUGIN, "+strategy.factor=0.9", f"ckpt_path={ckpt}", out=tmp_path / "b")
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert "\n" not in str(info.value) and "strategy.factor 0.5 vs 0.9" in str(info.value)


@pytest.mark.long
def test_export_and_predict_use_the_plugins_description(plugin_sweep, tmp_path):
    run = _job(plugin_sweep, 0.9)
    folder = export(run, tmp_path / "hf")
    assert "SHRINK (factor=0.9)" in (folder / "README.md").read_text()
    with pytest.raises(TrainedModelError) as info:
        export(run, tmp_path / "teacher", which="teacher")
    assert "\n" not in str(info.value) and "has no model 'teacher'" in str(info.value)
    predictor = load_predictor(run, device="cpu")
    labels = OmegaConf.load(run / ".hydra" / "config.yaml").dataset.label_names
    assert predictor.label_names == list(labels)
