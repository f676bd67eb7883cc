"""What produced a run: the code, the libraries, the machine and the kernel settings.

:func:`collect` is written whole into ``metrics.json`` under ``"provenance"``; :func:`environment` is
the part two runs must share for their numbers to be comparable bit for bit (the report groups runs by
it). Nothing here needs Lightning: the caller passes the device and precision it trained with.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

#: the environment variables that cap the CPU kernels (committed CPU runs set all three to AVX2)
KERNEL_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
#: the libraries whose versions decide a run's numbers
LIBRARIES = ("torch", "transformers", "lightning", "datasets", "tokenizers")
#: the keys of :func:`collect` that define the environment (the rest says where and when)
ENVIRONMENT_KEYS = ("versions", "python", "cpu", "kernel_caps", "threads", "device", "precision")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code() -> dict[str, Any]:
    """The commit sdbert's source is at and whether the tree differs from it (None outside a checkout)."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect(device: str, precision: str) -> dict[str, Any]:
    """The provenance of a run trained on ``device`` (e.g. ``cpu``, ``cuda:0``) with ``precision``."""
    return {
        **code(),
        "sdbert": _version("sdbert"),
        "versions": {name: _version(name) for name in LIBRARIES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "kernel_caps": {name: os.environ.get(name) for name in KERNEL_CAPS},
        "threads": torch.get_num_threads(),
        "device": device,
        "precision": precision,
    }


def environment(provenance: dict[str, Any] | None) -> tuple[tuple[str, str], ...] | None:
    """The comparable part of a run's provenance as a hashable key (None for a run that has none)."""
    if not provenance:
        return None
    items: list[tuple[str, str]] = []
    for key in ENVIRONMENT_KEYS:
        value = provenance.get(key)
        if isinstance(value, dict):
            items += [(f"{key}.{k}", str(v)) for k, v in sorted(value.items())]
        else:
            items.append((key, str(value)))
    return tuple(items)


def describe_environment(env: tuple[tuple[str, str], ...] | None) -> str:
    """One line for a report: libraries, CPU, threads, kernel caps, device and precision."""
    if env is None:
        return "not recorded"
    d = dict(env)
    libs = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in env if k.startswith("versions."))
    caps = [v.upper() for k, v in env if k.startswith("kernel_caps.") and v != "None"]
    capped = f"kernels capped at {'/'.join(sorted(set(caps)))}" if caps else "kernels uncapped"
    return (
        f"{d.get('device')} {d.get('precision')}, {d.get('cpu')}, {d.get('threads')} threads, {capped}; "
        f"Python {d.get('python')}, {libs}"
    )
