"""How examples become batches: the training order (seeded by data_seed and epoch), the evaluation
order (by length), and per-batch padding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


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


def by_length(data: Any) -> list[int]:
    """Evaluation order: by token count (stable), so a padded batch holds sequences of similar length.

    Order does not change any metric; it removes most padding (on SNLI's test set about half the
    tokens of randomly mixed batches). Saved predictions follow this order, with their labels.
    """
    lengths = [len(ids) for ids in data["input_ids"]]
    return sorted(range(len(lengths)), key=lengths.__getitem__)


class PaddingCollator:
    """``DataCollatorWithPadding`` that returns a plain ``dict`` of tensors (not a BatchEncoding)."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorWithPadding

        self._collate = DataCollatorWithPadding(tokenizer=tokenizer, padding="longest", return_tensors="pt")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return dict(self._collate(features))


def token_lengths(data: Any) -> list[int]:
    """Token count of every example (``input_ids`` lengths), read as one Arrow column where possible."""
    try:
        import pyarrow.compute as pc

        return pc.list_value_length(data.with_format("arrow")["input_ids"]).to_pylist()
    except (AttributeError, TypeError, KeyError):
        return [len(ids) for ids in data["input_ids"]]


class LengthGroupedSampler(Sampler[int]):
    """Hugging Face's ``group_by_length`` order, seeded from (data_seed, epoch) like :class:`EpochSeededSampler`.

    Each epoch: a random permutation (the same one :class:`EpochSeededSampler` draws), cut into
    megabatches of ``megabatch_mult × batch_size`` examples (``min(n // (4·batch_size), 50)``, HF's
    rule), each sorted by length, longest first (stable, so ties keep the random order); the megabatch
    holding the longest example goes first, so an out-of-memory shows at step one. Consecutive
    ``batch_size`` slices then hold examples of similar length and per-batch padding nearly vanishes.
    Every example is seen once per epoch, as with the plain sampler; only the order changes. Off by
    default (``dataset.group_by_length``): the paper shuffles.
    """

    def __init__(self, lengths: list[int], batch_size: int, data_seed: int, megabatch_mult: int | None = None) -> None:
        self.lengths = list(lengths)
        self.batch_size = int(batch_size)
        self.data_seed = int(data_seed)
        n = len(self.lengths)
        self.megabatch_mult = megabatch_mult or max(1, min(n // (4 * self.batch_size), 50))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator()
        gen.manual_seed(epoch_seed(self.data_seed, self.epoch))
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        size = self.megabatch_mult * self.batch_size
        megabatches = [
            sorted(order[i : i + size], key=self.lengths.__getitem__, reverse=True) for i in range(0, len(order), size)
        ]
        if megabatches:
            longest = max(range(len(megabatches)), key=lambda m: self.lengths[megabatches[m][0]])
            megabatches[0][0], megabatches[longest][0] = megabatches[longest][0], megabatches[0][0]
        return iter([i for megabatch in megabatches for i in megabatch])

    def __len__(self) -> int:
        return len(self.lengths)


def padding_ratio(lengths: list[int], order: list[int], batch_size: int) -> float:
    """Processed / real tokens when ``order`` is cut into batches padded to their longest example."""
    processed = real = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start : start + batch_size]]
        processed += max(batch) * len(batch)
        real += sum(batch)
    return processed / real if real else 1.0
