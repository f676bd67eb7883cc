"""One LightningDataModule for every text-classification / NLI set in the paper.

Raw splits (embedded, hub or local: :mod:`sdbert.sources.datasets`) are validated row by row and
subset (:mod:`sdbert.data.selection`), tokenised once and cached (:mod:`sdbert.data.cache`), and
batched in a seeded order with per-batch padding (:mod:`sdbert.data.batches`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from sdbert.data import cache
from sdbert.data.batches import EpochSeededSampler, LengthGroupedSampler, PaddingCollator, by_length, token_lengths
from sdbert.data.selection import RowSelector, Selection
from sdbert.errors import ConfigError, DataError
from sdbert.paths import cache_dir as _cache_root
from sdbert.sources import datasets as sources
from sdbert.sources import embedded


class TextClassificationDataModule(L.LightningDataModule):
    """Single texts or sentence pairs with one class label, from the embedded, hub or local source.

    All arguments come from ``conf/dataset/<name>.yaml`` except ``tokenizer``, ``data_seed`` and
    ``cache_dir``, which the run passes. ``tokenizer`` is a name or path resolved by
    :func:`sdbert.sources.models.load_tokenizer` (an already loaded tokenizer object is accepted too).
    """

    name: str  # LightningDataModule declares it optional; this one always has one

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
        group_by_length: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.name = str(name)
        self.source = str(source)
        self.hub_name = hub_name
        self.hub_config = hub_config
        self.text_fields = [str(f) for f in text_fields]
        self.label_field = str(label_field)
        self._label_names = [str(n) for n in label_names]
        self.train_split = str(train_split)
        self.validation_split = validation_split
        splits = test_splits if test_splits is not None else {"test": "test"}
        self.test_splits: dict[str, str] = {str(k): str(v) for k, v in splits.items()}
        self.val_size = val_size
        self.train_size = train_size
        self.train_per_class = train_per_class
        self.eval_size = eval_size
        self.subset_seed = int(subset_seed)
        self.data_seed = int(data_seed)
        self.drop_labels = list(drop_labels or [])
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.group_by_length = bool(group_by_length)
        self.cache_root = _cache_root(cache_dir)
        self._check_config()

        if isinstance(tokenizer, str):
            self.tokenizer_name = tokenizer
            self._tokenizer: Any = None
        else:
            self.tokenizer_name = str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__))
            self._tokenizer = tokenizer
        self.save_hyperparameters(ignore=["tokenizer"])
        self.hparams["tokenizer"] = self.tokenizer_name

        self._raw: Any = None
        self.rows = RowSelector(
            self.name, self._raw_split, self.text_fields, self.label_field, self._label_names, self.drop_labels,
            self.train_split, self.validation_split, self.val_size, self.train_size, self.train_per_class,
            self.eval_size, self.subset_seed, where=self._where,
        )
        self._train: Any = None
        self._val: Any = None
        self._tests: dict[str, Any] | None = None
        self._sampler: EpochSeededSampler | LengthGroupedSampler | None = None

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
        if self.source == "embedded" and self.name not in embedded.EMBEDDED:
            raise self._config_error(
                f"has no embedded copy (embedded: {', '.join(embedded.EMBEDDED)}); "
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
        """The tokenizer, loaded on first use through :func:`sdbert.sources.models.load_tokenizer`."""
        if self._tokenizer is None:
            from sdbert.sources.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_name)
        # The paper keeps the head of long texts: truncate on the right, whatever the checkpoint says.
        self._tokenizer.truncation_side = "right"
        return self._tokenizer

    def _built(self, value: Any, what: str, stage: str) -> Any:
        if value is None:
            raise RuntimeError(f"dataset '{self.name}': {what} is not built yet; call setup('{stage}') first")
        return value

    @property
    def train_dataset(self) -> Any:
        return self._built(self._train, "the train set", "fit")

    @property
    def val_dataset(self) -> Any:
        return self._built(self._val, "the validation set", "fit")

    @property
    def test_datasets(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self._built(self._tests, "the test sets", "test"))

    # ----------------------------------------------------------------- lightning hooks

    def prepare_data(self) -> None:
        """Download (hub) or materialise (embedded) the raw data and tokenise the splits, once per node.

        Lightning calls this on one process per node and holds the others at a barrier; they then load
        the raw data and the token caches from disk in ``setup``. The loaded splits are kept, so a
        single-process ``setup`` does not ask the hub again (an unreachable hub is slow to give up).
        """
        self._raw_dict()
        trainer = getattr(self, "trainer", None)
        stage = getattr(trainer.state.fn, "value", None) if trainer is not None else None
        self.setup(stage or "fit")

    def setup(self, stage: str | None = None) -> None:
        """Build (or load from the on-disk cache) the splits this stage needs."""
        want_train = stage in (None, "fit")
        want_val = stage in (None, "fit", "validate")
        want_test = stage in (None, "test", "predict")
        if want_train and self._train is None:
            train = self.rows.train()
            for raw_split in self.test_splits.values():  # every split is checked before the first step
                self.rows.clean(raw_split)
            self._train = self._tokenized("train", train)
        if want_val and self._val is None:
            self._val = self._tokenized("val", self.rows.validation())
        if want_test and self._tests is None:
            self._tests = {key: self._tokenized(key, self.rows.test(key, raw)) for key, raw in self.test_splits.items()}

    def train_dataloader(self) -> DataLoader[Any]:
        """The data_seed order, this rank's share of it under data parallelism, resumable mid-epoch.

        A torchdata ``StatefulDataLoader``: Lightning saves its position in every checkpoint and restores
        it, so a run resumed mid-epoch continues with the next unseen batch (see ``EpochSeededSampler``).
        """
        data = self.train_dataset
        world, rank = self._replicas()
        sampler = self._sampler
        if self.group_by_length:
            if world > 1:
                raise ConfigError(
                    f"dataset '{self.name}': group_by_length=true does not split across {world} processes yet; "
                    "set dataset.group_by_length=false under DDP"
                )
            if sampler is None or len(sampler) != len(data):
                self._sampler = LengthGroupedSampler(token_lengths(data), self.batch_size, self.data_seed)
        elif (
            not isinstance(sampler, EpochSeededSampler)
            or sampler.total != len(data)
            or (sampler.num_replicas, sampler.rank) != (world, rank)
        ):
            self._sampler = EpochSeededSampler(len(data), self.data_seed, num_replicas=world, rank=rank)
        return self._loader(data, self.batch_size, sampler=self._sampler, stateful=True)

    def _replicas(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) outside one."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.val_dataset, self.eval_batch_size, sampler=by_length(self.val_dataset))

    def test_dataloader(self) -> list[DataLoader[Any]]:
        return [
            self._loader(ds, self.eval_batch_size, sampler=by_length(ds)) for ds in self.test_datasets.values()
        ]

    def _loader(
        self, data: Any, batch_size: int, sampler: Sampler[int] | list[int] | None = None, stateful: bool = False
    ) -> DataLoader[Any]:
        from torchdata.stateful_dataloader import StatefulDataLoader

        return (StatefulDataLoader if stateful else DataLoader)(
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

    def _where(self, split: str, row: int) -> str | None:
        """``<file> line <n>`` of a raw row of a local folder's split (None for the hub and embedded data)."""
        if self.source in ("hub", "embedded"):
            return None
        from sdbert.sources.files import locate, split_files

        return locate(split_files(Path(self.source).expanduser()).get(split, []), row)

    def _raw_split(self, split: str) -> Any:
        raw = self._raw_dict()
        if split not in raw:
            raise DataError(
                f"dataset '{self.name}': split '{split}' not found (splits present: {', '.join(raw)}); "
                "set dataset.train_split/validation_split/test_splits to existing splits"
            )
        return raw[split]

    # ----------------------------------------------------------------- tokenisation + cache

    def _tokenized(self, key: str, selection: Selection) -> Any:
        """Tokenise the selected rows, or load them from ``<cache>/tokenized/<name>/<key>-<hash>``."""
        tok = self.tokenizer
        raw = self._raw_split(selection.raw_split)
        settings = {
            "tokenizer": self.tokenizer_name,
            "tokenizer_class": type(tok).__name__,
            "vocab_size": len(tok),
            "max_length": self.max_length,
            "source": self.source,
            "hub": [self.hub_name, self.hub_config],
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
        }
        return cache.tokenized(
            self.cache_root / "tokenized" / self.name,
            key,
            selection,
            cache.entry_identity(key, selection, settings),
            raw,
            tok,
            self.text_fields,
            self.max_length,
        )
