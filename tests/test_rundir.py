"""RunDir: one run folder, its config read once, one status vocabulary, its checkpoints, "holds a run"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sdbert.rundir import RunDir, RunDirError


def _folder(root: Path, summary: object | None = None, ckpts: tuple[str, ...] = (), test_ckpt: str = "best") -> Path:
    (root / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": 1, "test_ckpt": test_ckpt}), root / ".hydra" / "config.yaml")
    if summary is not None:
        text = summary if isinstance(summary, str) else json.dumps(summary)
        (root / "metrics.json").write_text(text)
    for name in ckpts:
        (root / "checkpoints").mkdir(exist_ok=True)
        (root / "checkpoints" / name).write_bytes(b"x")
    return root


@pytest.mark.parametrize(
    "summary,status,error",
    [
        ({"status": "ok", "test": {"test/acc": 50.0}}, "ok", None),
        ({"status": "failed", "error": "bad K"}, "failed", "bad K"),
        ({"status": "interrupted", "error": "interrupted by SIGTERM"}, "interrupted", "interrupted by SIGTERM"),
        (None, "running", "no metrics.json: the job crashed, was killed or is still running"),
        ("{not json", "failed", "unreadable metrics.json"),
        ({"status": "strange"}, "failed", "failed without a message"),
    ],
)
def test_one_status_vocabulary(tmp_path, summary, status, error):
    run = RunDir(_folder(tmp_path / "r", summary))
    assert run.summary.status == status and run.summary.ok == (status == "ok")
    assert (run.summary.error is None) if error is None else error in str(run.summary.error)


def test_the_config_is_read_once(tmp_path):
    run = RunDir(_folder(tmp_path / "r"))
    assert run.config.seed == 1
    OmegaConf.save(OmegaConf.create({"seed": 2}), run.config_file)
    assert run.config.seed == 1 and run.reload().config.seed == 2


def test_a_folder_without_a_config_is_refused_in_one_line(tmp_path):
    with pytest.raises(RunDirError, match="is not a run directory") as info:
        RunDir(tmp_path).config  # noqa: B018
    assert "\n" not in str(info.value)


def test_checkpoints_best_last_and_tested(tmp_path):
    run = RunDir(_folder(tmp_path / "r", {"status": "ok", "tested_checkpoint": "last"}, ("best.ckpt", "last.ckpt")))
    assert run.checkpoint("best").name == "best.ckpt" and run.checkpoint("last").name == "last.ckpt"
    assert run.checkpoint("tested").name == "last.ckpt"
    empty = RunDir(_folder(tmp_path / "e", {"status": "ok"}))
    with pytest.raises(RunDirError, match=r"has no checkpoints/best\.ckpt"):
        empty.checkpoint("tested")  # test_ckpt=best
    with pytest.raises(RunDirError, match="'tested', 'best' or 'last'"):
        run.checkpoint("first")  # type: ignore[arg-type]


def test_what_holds_a_run(tmp_path):
    assert RunDir(tmp_path / "none").holds_a_run() is None
    assert RunDir(_folder(tmp_path / "f", {"status": "failed", "error": "bad K"})).holds_a_run() is None
    assert "status ok" in str(RunDir(_folder(tmp_path / "o", {"status": "ok"})).holds_a_run())
    assert "status unreadable" in str(RunDir(_folder(tmp_path / "u", "{x")).holds_a_run())
    assert RunDir(_folder(tmp_path / "c", None, ("last.ckpt",))).holds_a_run() == "checkpoints (last.ckpt)"
