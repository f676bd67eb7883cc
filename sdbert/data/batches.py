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
