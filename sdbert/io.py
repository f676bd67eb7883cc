"""Atomic writes: a reader (or a run killed half-way) never sees half a file or half a folder.

Every file is written to a temp file in the target's own folder (same filesystem) and renamed over
the target with ``os.replace``; a folder is built beside its target and moved into place. Temp files
and folders are removed when the write fails. What is written gets the modes ``open``/``mkdir`` would
give it under the process's umask (temp files are created private, 0600 / 0700).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def umask() -> int:
    """The process's umask: from ``/proc/self/status`` on Linux, else by setting it and putting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; whatever is written there replaces ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    return write_bytes(path, text.encode(encoding))


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Indented, key-sorted JSON (values JSON cannot hold are written as text)."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """``writer(tmp)`` writes the file (e.g. ``torch.save``); ``path`` is replaced only when it returns."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def save_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` through a Python file, so a failed write raises the ``OSError`` with its errno (a full
    disk is ``ENOSPC``; given a path, torch reports it as ``RuntimeError: ... unexpected pos``)."""
    import torch

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return write_with(path, save)


def replace_dir(tmp: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Move a finished temp folder onto ``dest``, replacing an old ``dest`` if there is one.

    ``os.replace`` cannot overwrite a non-empty folder, so an old one is first renamed aside (``dest`` is
    always old or new, or briefly absent) and deleted afterwards.
    """
    tmp, dest = Path(tmp), Path(dest)
    trash: Path | None = None
    if dest.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, trash / dest.name)
    os.replace(tmp, dest)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return dest


@contextmanager
def staged_dir(dest: str | os.PathLike[str], replace: bool = True) -> Iterator[Path]:
    """Yield an empty temp folder beside ``dest``; on success it becomes ``dest``.

    ``replace=True`` replaces an old ``dest`` (:func:`replace_dir`); ``replace=False`` is for caches that
    several processes may build at once: the first finished copy stays and the others are dropped.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())
        if replace:
            replace_dir(tmp, dest)
        else:
            try:
                os.replace(tmp, dest)
            except OSError:
                if not dest.is_dir():  # a real failure, not a concurrent writer that got there first
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
