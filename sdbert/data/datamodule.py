"""One LightningDataModule for every text-classification / NLI set in the paper.

Raw splits (embedded, hub or local) are validated row by row, held out / subset with seeds that
do not depend on the data-order seed (the paper varies data order over a fixed subset), tokenised
once without padding and cached on disk in Arrow format; batches are padded per batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from sdbert.data import sources
from sdbert.errors import ConfigError, DataError
from sdbert.paths import cache_dir as _cache_root

log = logging.getLogger(__name__)

# Bump when the tokenised layout or the selection logic changes: old caches are then ignored.
CACHE_FORMAT = 1
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# --------------------------------------------------------------------------- helpers


def _plain(value: Any) -> Any:
    """OmegaConf containers (what Hydra passes) as plain lists/dicts, so hashing and json work."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent stream per purpose, so e.g. changing eval_size does not move the train subset."""
    return np.random.default_rng([int(seed), zlib.crc32(purpose.encode())])


def epoch_seed(data_seed: int, epoch: int) -> int:
    """The torch seed for one epoch's shuffle: a function of (data_seed, epoch) only."""
    state = np.random.SeedSequence([int(data_seed), int(epoch)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class EpochSeededSampler(Sampler[int]):
    """Shuffles with a generator seeded from (data_seed, epoch).

    Lightning calls ``set_epoch`` at the start of every epoch, so a run resumed at an epoch
    boundary sees exactly the order the uninterrupted run would have seen, and the order never
    depends on the model/initialisation seed.
    """

    def __init__(self, num_samples: int, data_seed: int) -> None:
        self.num_samples = int(num_samples)
        self.data_seed = int(data_seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator()
        gen.manual_seed(epoch_seed(self.data_seed, self.epoch))
        return iter(torch.randperm(self.num_samples, generator=gen).tolist())

    def __len__(self) -> int:
        return self.num_samples


class PaddingCollator:
    """``DataCollatorWithPadding`` that returns a plain ``dict`` of tensors (not a BatchEncoding)."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorWithPadding

        self._collate = DataCollatorWithPadding(tokenizer=tokenizer, padding="longest", return_tensors="pt")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return dict(self._collate(features))


def _short_hash(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _hash_array(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype=np.int64).tobytes()).hexdigest()[:16]


class _Selection:
    """Rows picked from one raw split: raw row indices and their label ids (aligned)."""

    def __init__(self, raw_split: str, rows: np.ndarray, labels: np.ndarray) -> None:
        self.raw_split = raw_split
        self.rows = rows
        self.labels = labels

    def take(self, positions: np.ndarray) -> _Selection:
        positions = np.sort(positions)
        return _Selection(self.raw_split, self.rows[positions], self.labels[positions])

    def __len__(self) -> int:
        return len(self.rows)


# --------------------------------------------------------------------------- datamodule


class TextClassificationDataModule(L.LightningDataModule):
    """Single texts or sentence pairs with one class label, from the embedded, hub or local source.

    All arguments come from ``conf/dataset/<name>.yaml`` except ``tokenizer``, ``data_seed`` and
    ``cache_dir``, which the run passes. ``tokenizer`` is a name or path resolved by
    :func:`sdbert.models.load_tokenizer` (an already loaded tokenizer object is accepted too).
    """

    def __init__(
        self,
        name: str,
        tokenizer: Any,
        text_fields: Sequence[str],
        label_names: Sequence[str],
        source: str = "hub",
        hub_name: str | None = None,
        hub_config: str | None = None,
        label_field: str = "label",
        train_split: str = "train",
        validation_split: str | None = None,
        test_splits: Mapping[str, str] | None = None,
        val_size: int | float = 0.05,
        train_size: int | None = None,
        train_per_class: int | None = None,
        eval_size: int | None = None,
        subset_seed: int = 0,
        data_seed: int = 0,
        drop_labels: Sequence[Any] = (),
        max_length: int = 512,
        batch_size: int = 4,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.name = str(name)
        self.source = str(source)
        self.hub_name = hub_name
        self.hub_config = hub_config
        self.text_fields = [str(f) for f in _plain(text_fields)]
        self.label_field = str(label_field)
        self._label_names = [str(n) for n in _plain(label_names)]
        self.train_split = str(train_split)
        self.validation_split = validation_split
        splits = _plain(test_splits) if test_splits is not None else {"test": "test"}
        self.test_splits: dict[str, str] = {str(k): str(v) for k, v in dict(splits).items()}
        self.val_size = val_size
        self.train_size = train_size
        self.train_per_class = train_per_class
        self.eval_size = eval_size
        self.subset_seed = int(subset_seed)
        self.data_seed = int(data_seed)
        self.drop_labels = list(_plain(drop_labels) or [])
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.cache_root = _cache_root(cache_dir)
        self._check_config()

        if isinstance(tokenizer, str):
            self.tokenizer_name = tokenizer
            self._tokenizer: Any = None
        else:
            self.tokenizer_name = str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__))
            self._tokenizer = tokenizer
        self.save_hyperparameters(
            {
                "name": self.name,
                "tokenizer": self.tokenizer_name,
                "source": self.source,
                "hub_name": hub_name,
                "hub_config": hub_config,
                "text_fields": self.text_fields,
                "label_field": self.label_field,
                "label_names": self._label_names,
                "train_split": self.train_split,
                "validation_split": validation_split,
                "test_splits": self.test_splits,
                "val_size": val_size,
                "train_size": train_size,
                "train_per_class": train_per_class,
                "eval_size": eval_size,
                "subset_seed": self.subset_seed,
                "data_seed": self.data_seed,
                "drop_labels": self.drop_labels,
                "max_length": self.max_length,
                "batch_size": self.batch_size,
                "eval_batch_size": self.eval_batch_size,
                "num_workers": self.num_workers,
                "cache_dir": str(self.cache_root),
            }
        )

        self._raw: Any = None
        self._clean: dict[str, _Selection] = {}
        self._train: Any = None
        self._val: Any = None
        self._tests: dict[str, Any] | None = None
        self._sampler: EpochSeededSampler | None = None

    # ----------------------------------------------------------------- config

    def _config_error(self, what: str) -> ConfigError:
        return ConfigError(f"dataset '{self.name}': {what}")

    def _check_config(self) -> None:
        if len(self.text_fields) not in (1, 2):
            raise self._config_error(
                f"text_fields={self.text_fields} must name one column (single text) or two (a pair)"
            )
        if len(self._label_names) < 2 or len(set(self._label_names)) != len(self._label_names):
            raise self._config_error(f"label_names={self._label_names} must list at least two distinct names")
        if self.source == "embedded" and self.name not in sources.EMBEDDED:
            raise self._config_error(
                f"has no embedded copy (embedded: {', '.join(sources.EMBEDDED)}); "
                "use dataset.source=hub or dataset.source=/path/to/dir"
            )
        if self.source == "hub" and not self.hub_name:
            raise self._config_error("source is 'hub' but hub_name is not set; set dataset.hub_name")
        if self.train_size is not None and self.train_per_class is not None:
            raise self._config_error("set train_size or train_per_class, not both")
        for key in ("train_size", "train_per_class", "eval_size"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise self._config_error(f"{key}={value!r} must be a positive integer or null")
        if self.validation_split is None:
            v = self.val_size
            ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or (isinstance(v, float) and 0.0 < v < 1.0)
            if not ok:
                raise self._config_error(
                    f"val_size={v!r} must be a row count >= 1 or a fraction in (0, 1) "
                    "(or set validation_split to an existing split)"
                )
        if self.max_length < 8:
            raise self._config_error(f"max_length={self.max_length} is too small; use at least 8 tokens")
        if self.batch_size < 1 or self.eval_batch_size < 1 or self.num_workers < 0:
            raise self._config_error("batch_size and eval_batch_size must be >= 1 and num_workers >= 0")

    # ----------------------------------------------------------------- public properties

    @property
    def num_labels(self) -> int:
        return len(self._label_names)

    @property
    def label_names(self) -> list[str]:
        return list(self._label_names)

    @property
    def test_names(self) -> list[str]:
        return list(self.test_splits)

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, loaded on first use through :func:`sdbert.models.load_tokenizer`."""
        if self._tokenizer is None:
            from sdbert.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_name)
        # The paper keeps the head of long texts: truncate on the right, whatever the checkpoint says.
        self._tokenizer.truncation_side = "right"
        return self._tokenizer

    def _need(self, value: Any, what: str, stage: str) -> Any:
        if value is None:
            raise RuntimeError(f"dataset '{self.name}': {what} is not built yet; call setup('{stage}') first")
        return value

    @property
    def train_dataset(self) -> Any:
        return self._need(self._train, "the train set", "fit")

    @property
    def val_dataset(self) -> Any:
        return self._need(self._val, "the validation set", "fit")

    @property
    def test_datasets(self) -> dict[str, Any]:
        return self._need(self._tests, "the test sets", "test")

    # ----------------------------------------------------------------- lightning hooks

    def prepare_data(self) -> None:
        """Download (hub) or materialise (embedded) the raw data, once per node.

        The loaded splits are kept, so a single-process ``setup`` does not ask the hub again (an
        unreachable hub costs ~25 s per attempt); other processes load them in ``setup``.
        """
        self._raw_dict()

    def setup(self, stage: str | None = None) -> None:
        """Build (or load from the on-disk cache) the splits this stage needs."""
        want_train = stage in (None, "fit")
        want_val = stage in (None, "fit", "validate")
        want_test = stage in (None, "test", "predict")
        if want_train and self._train is None:
            self._train = self._tokenized("train", self._train_selection())
        if want_val and self._val is None:
            self._val = self._tokenized("val", self._val_selection())
        if want_test and self._tests is None:
            self._tests = {
                key: self._tokenized(key, self._eval_cap(self._clean_split(raw), key))
                for key, raw in self.test_splits.items()
            }

    def train_dataloader(self) -> DataLoader:
        data = self.train_dataset
        if self._sampler is None or len(self._sampler) != len(data):
            self._sampler = EpochSeededSampler(len(data), self.data_seed)
        return self._loader(data, self.batch_size, sampler=self._sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self.eval_batch_size, sampler=self._by_length(self.val_dataset))

    def test_dataloader(self) -> list[DataLoader]:
        return [
            self._loader(ds, self.eval_batch_size, sampler=self._by_length(ds)) for ds in self.test_datasets.values()
        ]

    @staticmethod
    def _by_length(data: Any) -> list[int]:
        """Evaluation order: by token count (stable), so a padded batch holds sequences of similar length.

        Order does not change any metric; it removes most padding (on SNLI's test set about half the
        tokens of randomly mixed batches). Saved predictions follow this order, with their labels.
        """
        lengths = [len(ids) for ids in data["input_ids"]]
        return sorted(range(len(lengths)), key=lengths.__getitem__)

    def predict_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()

    def _loader(self, data: Any, batch_size: int, sampler: Sampler[int] | None = None) -> DataLoader:
        return DataLoader(
            data,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            collate_fn=PaddingCollator(self.tokenizer),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    # ----------------------------------------------------------------- raw data

    def _raw_dict(self) -> Any:
        if self._raw is None:
            self._raw = sources.load_raw(
                self.source,
                name=self.name,
                hub_name=self.hub_name,
                hub_config=self.hub_config,
                cache=self.cache_root,
            )
        return self._raw

    def _raw_split(self, split: str) -> Any:
        raw = self._raw_dict()
        if split not in raw:
            raise DataError(
                f"dataset '{self.name}': split '{split}' not found (splits present: {', '.join(raw)}); "
                "set dataset.train_split/validation_split/test_splits to existing splits"
            )
        return raw[split]

    def _row_error(self, split: str, column: str, row: int, what: str) -> DataError:
        return DataError(f"dataset '{self.name}', split '{split}', column '{column}', row {row}: {what}")

    def _clean_split(self, split: str) -> _Selection:
        """Drop ``drop_labels`` rows, validate every kept row, map labels to ids 0..n-1."""
        if split in self._clean:
            return self._clean[split]
        import pyarrow as pa
        import pyarrow.compute as pc

        ds = self._raw_split(split)
        present = list(ds.column_names)
        for column in [*self.text_fields, self.label_field]:
            if column not in present:
                raise DataError(
                    f"dataset '{self.name}', split '{split}': missing column '{column}' (columns present: "
                    f"{', '.join(present)}); set dataset.text_fields/label_field to match the data"
                )
        arrow = ds.with_format("arrow")
        label_col = pa.chunked_array(arrow[self.label_field]) if len(ds) else pa.chunked_array([], pa.int64())
        n = len(ds)
        label_set = f"ids 0..{self.num_labels - 1} or names {self._label_names}"

        # Rows without a usable label by convention (hub -1, jsonl '-') are dropped before validation.
        keep = np.ones(n, dtype=bool)
        is_int = pa.types.is_integer(label_col.type)
        is_str = pa.types.is_string(label_col.type) or pa.types.is_large_string(label_col.type)
        drops = [v for v in self.drop_labels if (isinstance(v, str) if is_str else isinstance(v, int))]
        if drops and n:
            dropped = pc.is_in(label_col, value_set=pa.array(drops, type=label_col.type))
            keep &= ~pc.fill_null(dropped, False).to_numpy(zero_copy_only=False)

        if is_int:
            values = pc.fill_null(label_col, -(1 << 62)).to_numpy(zero_copy_only=False).astype(np.int64)
            ok = (values >= 0) & (values < self.num_labels)
            label_ids = np.where(ok, values, -1)
        elif is_str:
            label_ids = (
                pc.fill_null(pc.index_in(label_col, value_set=pa.array(self._label_names)), -1)
                .to_numpy(zero_copy_only=False)
                .astype(np.int64)
            )
            ok = label_ids >= 0
        else:
            raise DataError(
                f"dataset '{self.name}', split '{split}', column '{self.label_field}': label type "
                f"{label_col.type} is neither integer ids nor strings; labels must be {label_set}"
            )
        bad = np.flatnonzero(keep & ~ok)
        if len(bad):
            row = int(bad[0])
            value = label_col[row].as_py()
            raise self._row_error(
                split,
                self.label_field,
                row,
                f"label {value!r} is outside the label set ({label_set}); fix the data, or list the "
                "value in dataset.drop_labels to skip such rows",
            )

        for column in self.text_fields:
            col = pa.chunked_array(arrow[column]) if n else pa.chunked_array([], pa.string())
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                if pa.types.is_null(col.type) and n:
                    raise self._row_error(split, column, 0, "text is empty (the column is all null); fix the data")
                if n:
                    raise DataError(
                        f"dataset '{self.name}', split '{split}', column '{column}': type {col.type} is not "
                        "text; point dataset.text_fields at string columns"
                    )
                continue
            # Chunk by chunk: trimming copies the strings, and a Yelp column is hundreds of MB.
            empty = np.concatenate(
                [np.zeros(0, dtype=bool)]
                + [
                    pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(chunk)), 0), True).to_numpy(
                        zero_copy_only=False
                    )
                    for chunk in col.chunks
                ]
            )
            bad = np.flatnonzero(keep & empty)
            if len(bad):
                raise self._row_error(
                    split,
                    column,
                    int(bad[0]),
                    "text is empty or whitespace only; remove or fix the row in the source",
                )

        rows = np.flatnonzero(keep).astype(np.int64)
        selection = _Selection(split, rows, label_ids[rows])
        if len(selection) == 0:
            raise DataError(f"dataset '{self.name}', split '{split}': no rows left after dropping {drops}")
        self._clean[split] = selection
        return selection

    # ----------------------------------------------------------------- selection (subset seeds)

    def _holdout(self) -> tuple[_Selection, _Selection]:
        """(train, val) held out of the train split with a permutation seeded by subset_seed."""
        full = self._clean_split(self.train_split)
        n = len(full)
        v = self.val_size
        n_val = round(v * n) if isinstance(v, float) else int(v)
        if not 1 <= n_val < n:
            raise self._config_error(
                f"val_size={v!r} holds out {n_val} of {n} training rows; it must leave at least one row on each side"
            )
        perm = _rng(self.subset_seed, "validation-holdout").permutation(n)
        return full.take(perm[n_val:]), full.take(perm[:n_val])

    def _train_selection(self) -> _Selection:
        if self.validation_split is None:
            train, _ = self._holdout()
        else:
            train = self._clean_split(self.train_split)
        if self.train_per_class is not None:
            rng = _rng(self.subset_seed, "train-per-class")
            picked = []
            for label_id, label in enumerate(self._label_names):
                candidates = np.flatnonzero(train.labels == label_id)
                if len(candidates) < self.train_per_class:
                    raise DataError(
                        f"dataset '{self.name}', split '{self.train_split}': train_per_class="
                        f"{self.train_per_class} but class '{label}' has only {len(candidates)} training "
                        "rows; lower train_per_class"
                    )
                picked.append(rng.choice(candidates, size=self.train_per_class, replace=False))
            train = train.take(np.concatenate(picked))
        elif self.train_size is not None:
            if self.train_size > len(train):
                raise DataError(
                    f"dataset '{self.name}', split '{self.train_split}': train_size={self.train_size} but "
                    f"only {len(train)} training rows are available; lower train_size"
                )
            pos = _rng(self.subset_seed, "train-size").choice(len(train), size=self.train_size, replace=False)
            train = train.take(pos)
        return train

    def _val_selection(self) -> _Selection:
        if self.validation_split is None:
            _, val = self._holdout()
        else:
            val = self._clean_split(self.validation_split)
        return self._eval_cap(val, "val")

    def _eval_cap(self, selection: _Selection, key: str) -> _Selection:
        if self.eval_size is None or len(selection) <= self.eval_size:
            return selection
        pos = _rng(self.subset_seed, f"eval-cap-{key}").choice(len(selection), size=self.eval_size, replace=False)
        return selection.take(pos)

    # ----------------------------------------------------------------- tokenisation + cache

    def _cache_key(self, key: str, selection: _Selection) -> str:
        tok = self.tokenizer
        raw = self._raw_split(selection.raw_split)
        return _short_hash(
            {
                "format": CACHE_FORMAT,
                "split": key,
                "tokenizer": self.tokenizer_name,
                "tokenizer_class": type(tok).__name__,
                "vocab_size": len(tok),
                "max_length": self.max_length,
                "source": self.source,
                "hub": [self.hub_name, self.hub_config],
                "raw_split": selection.raw_split,
                "raw_fingerprint": getattr(raw, "_fingerprint", None),
                "raw_rows": len(raw),
                "text_fields": self.text_fields,
                "label_field": self.label_field,
                "label_names": self._label_names,
                "drop_labels": self.drop_labels,
                "subset": [
                    self.val_size,
                    self.validation_split,
                    self.train_size,
                    self.train_per_class,
                    self.eval_size,
                    self.subset_seed,
                ],
                "rows": _hash_array(selection.rows),
                "labels": _hash_array(selection.labels),
            }
        )

    def _tokenized(self, key: str, selection: _Selection) -> Any:
        """Tokenise the selected rows, or load them from ``<cache>/tokenized/<name>/<key>-<hash>``."""
        import datasets

        folder = self.cache_root / "tokenized" / self.name
        target = folder / f"{key}-{self._cache_key(key, selection)}"
        with sources.quiet_datasets():
            if target.is_dir():
                return datasets.load_from_disk(str(target))
            folder.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=folder))
            try:
                encoded = self._encode(selection, tmp / "map.arrow")
                encoded.save_to_disk(str(tmp / "dataset"))
                del encoded
                try:
                    os.replace(tmp / "dataset", target)
                except OSError:
                    if not target.is_dir():  # not a concurrent writer that got there first
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log.info("tokenised %s/%s: %d rows -> %s", self.name, key, len(selection), target)
            return datasets.load_from_disk(str(target))

    def _encode(self, selection: _Selection, map_file: Path) -> Any:
        tok = self.tokenizer
        fields = list(self.text_fields)
        max_length = self.max_length
        labels = selection.labels
        raw = self._raw_split(selection.raw_split)
        # Indices in memory: nothing lands in the shared HF cache next to the raw files.
        subset = raw.select(selection.rows, keep_in_memory=True).select_columns(fields)

        def encode(batch: dict[str, list[Any]], positions: list[int]) -> dict[str, Any]:
            texts = [batch[f] for f in fields]
            truncation = "longest_first" if len(texts) == 2 else True
            enc = tok(*texts, truncation=truncation, max_length=max_length, padding=False)
            out = {k: enc[k] for k in _MODEL_INPUTS if k in enc}
            out["labels"] = labels[positions].tolist()
            return out

        return subset.map(
            encode,
            batched=True,
            batch_size=1000,
            with_indices=True,
            remove_columns=fields,
            load_from_cache_file=False,
            cache_file_name=str(map_file),
            new_fingerprint=hashlib.sha256(str(map_file).encode()).hexdigest()[:16],
            desc=f"tokenising {self.name}",
        )
