"""The tokenised cache: each selection tokenised once, without padding, kept on disk in Arrow format.

An entry is ``<cache>/tokenized/<dataset>/<split key>-<hash>``, the hash taken over everything that
shapes its content (tokenizer, max_length, source, raw split fingerprint, columns, labels, subset
settings, the selected rows). Entries are written whole (temp folder + rename), so a reader sees a
complete entry or none; reading one writes nothing (a read-only cache serves what it holds). Entries are
verified when read, not trusted: one whose Arrow file is truncated or corrupt, or whose row count is not
the selection's, is named in a warning and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdbert.data.selection import Selection
from sdbert.errors import writing_cache
from sdbert.io import staged_dir
from sdbert.sources.datasets import broken_arrow_file, quiet_datasets

log = logging.getLogger(__name__)

# Bump when the tokenised layout or the selection logic changes: old caches are then ignored.
CACHE_FORMAT = 2  # 2: a 'row' column (the example's row index in its raw split)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def short_hash(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def hash_array(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype=np.int64).tobytes()).hexdigest()[:16]


def entry_identity(split_key: str, selection: Selection, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a cache entry depends on: the dataset ``settings`` plus this split's selected rows and labels."""
    return {
        "format": CACHE_FORMAT,
        "split": split_key,
        **settings,
        "raw_split": selection.raw_split,
        "rows": hash_array(selection.rows),
        "labels": hash_array(selection.labels),
    }


def tokenized(
    folder: Path,
    split_key: str,
    selection: Selection,
    identity: Mapping[str, Any],
    raw: Any,
    tokenizer: Any,
    text_fields: Sequence[str],
    max_length: int,
) -> Any:
    """The tokenised ``selection`` of ``raw``, from ``folder`` or built there (first writer wins).

    A cached entry that fails :func:`verified` is replaced by a fresh one; a sound entry is only read, so a
    read-only cache that holds it serves it. A full disk raises :class:`~sdbert.errors.DiskFull`, a folder
    that may not be written :class:`~sdbert.errors.CacheReadOnly`, each naming the cache folder.
    """
    target = folder / f"{split_key}-{short_hash(dict(identity))}"
    with quiet_datasets():
        replace = False
        if target.is_dir():
            problem, loaded = verified(target, len(selection))
            if problem is None:
                return loaded
            log.warning("token cache %s; rebuilding it", problem)
            replace = True
        with writing_cache(f"the token cache {folder}"):
            folder.mkdir(parents=True, exist_ok=True)
            with staged_dir(target, replace=replace) as tmp, tempfile.TemporaryDirectory(dir=folder) as work:
                encoded = encode(raw, selection, tokenizer, text_fields, max_length, Path(work) / "map.arrow")
                encoded.save_to_disk(str(tmp))
                del encoded
        log.info("tokenised %s: %d rows -> %s", split_key, len(selection), target)
        problem, loaded = verified(target, len(selection))
        if problem is not None:
            raise RuntimeError(f"token cache {problem} right after it was written")
        return loaded


def verified(target: Path, rows: int) -> tuple[str | None, Any]:
    """(None, the dataset) for a sound entry; (what is wrong, None) for a truncated/corrupt/short one."""
    import datasets
    import pyarrow as pa

    try:
        loaded = datasets.load_from_disk(str(target))
    except (OSError, ValueError, pa.ArrowInvalid, FileNotFoundError) as err:
        bad = broken_arrow_file(target)
        what = f"file {bad} is truncated or corrupt" if bad else f"entry {target} is unreadable"
        return f"{what} ({type(err).__name__}: {' '.join(str(err).split())[:120]})", None
    if len(loaded) != rows:
        return f"entry {target} has {len(loaded)} rows, expected {rows} (a truncated Arrow file?)", None
    return None, loaded


def encode(
    raw: Any, selection: Selection, tokenizer: Any, text_fields: Sequence[str], max_length: int, map_file: Path
) -> Any:
    """Tokenise the selected rows (pairs with ``longest_first`` truncation), labels as ids, no padding;
    ``row`` is each example's row index in the raw split (so predictions join back to the source data)."""
    fields = list(text_fields)
    labels = selection.labels
    rows = selection.rows
    # Indices in memory: nothing lands in the shared HF cache next to the raw files.
    subset = raw.select(selection.rows, keep_in_memory=True).select_columns(fields)

    def encode_batch(batch: dict[str, list[Any]], positions: list[int]) -> dict[str, Any]:
        texts = [batch[f] for f in fields]
        truncation = "longest_first" if len(texts) == 2 else True
        enc = tokenizer(*texts, truncation=truncation, max_length=max_length, padding=False)
        out = {k: enc[k] for k in MODEL_INPUTS if k in enc}
        out["labels"] = labels[positions].tolist()
        out["row"] = rows[positions].tolist()
        return out

    return subset.map(
        encode_batch,
        batched=True,
        batch_size=1000,
        with_indices=True,
        remove_columns=fields,
        load_from_cache_file=False,
        cache_file_name=str(map_file),
        new_fingerprint=hashlib.sha256(str(map_file).encode()).hexdigest()[:16],
        desc="tokenising",
    )
