"""Atomic writes: a target is always the old or the new content, and no temp file is left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sdbert import io as sdbert_io


def test_atomic_write_replaces_whole_file_or_nothing(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "sub" / "meta.json"
    sdbert_io.write_text(path, "old")
    assert path.read_text() == "old"
    sdbert_io.write_bytes(path, b"new")
    assert path.read_bytes() == b"new"

    def boom(src: object, dst: object) -> None:
        raise OSError("interrupted")

    monkeypatch.setattr(sdbert_io.os, "replace", boom)
    with pytest.raises(OSError, match="interrupted"):
        sdbert_io.write_text(path, "half")
    monkeypatch.undo()
    assert path.read_bytes() == b"new"
    assert os.listdir(path.parent) == ["meta.json"]


def test_save_torch_and_json_round_trip(tmp_path: Path) -> None:
    import json

    import torch

    sdbert_io.save_torch(tmp_path / "p.pt", {"x": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "p.pt")["x"], torch.arange(3))
    sdbert_io.write_json(tmp_path / "m.json", {"b": 1, "a": Path("/x")})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": "/x", "b": 1}
    assert sorted(os.listdir(tmp_path)) == ["m.json", "p.pt"]


def test_staged_dir_replaces_or_keeps_the_first_copy(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "entry"
    with sdbert_io.staged_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    assert (dest / "a").read_text() == "1"
    with sdbert_io.staged_dir(dest) as tmp:  # replace=True: the new copy wins
        (tmp / "a").write_text("2")
    assert (dest / "a").read_text() == "2"
    with sdbert_io.staged_dir(dest, replace=False) as tmp:  # a concurrent writer got there first: keep it
        (tmp / "a").write_text("3")
    assert (dest / "a").read_text() == "2"
    with pytest.raises(RuntimeError), sdbert_io.staged_dir(tmp_path / "never") as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed while writing")
    assert sorted(os.listdir(tmp_path)) == ["cache"]
    assert os.listdir(tmp_path / "cache") == ["entry"]


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_and_folders_follow_the_umask(tmp_path: Path, mask: int) -> None:
    """Atomic writes give what plain ``open``/``mkdir`` would (temp files are created 0600 / 0700)."""
    from sdbert.io import staged_dir, write_text

    old = os.umask(mask)
    try:
        write_text(tmp_path / "a.json", "{}")
        with staged_dir(tmp_path / "folder") as tmp:
            (tmp / "inside.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o777 & ~mask
