"""Where sdbert keeps downloads and caches (overridable with SDBERT_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The root of sdbert's caches: ``override``, else ``$SDBERT_CACHE``, else ``~/.cache/sdbert``."""
    root = override or os.environ.get("SDBERT_CACHE") or Path.home() / ".cache" / "sdbert"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
