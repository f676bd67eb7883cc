"""How examples become batches: the training order (seeded by data_seed and epoch), the evaluation
order (by length), and per-batch padding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import Sampler

from sdbert.errors import ConfigError


def epoch_seed(data_seed: int, epoch: int) -> int:
    """The torch seed for one epoch's shuffle: a function of (data_seed, epoch) only."""
    state = np.random.SeedSequence([int(data_seed), int(epoch)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class EpochSeededSampler(Sampler[int]):
    """Shuffles with a generator seeded from (data_seed, epoch); optionally this rank's share of it.

    Lightning calls ``set_epoch`` at the start of every epoch, so the order never depends on the
    model/initialisation seed. The sampler and its iterators are *stateful* (``state_dict`` /
    ``load_state_dict``, the protocol of torchdata's ``StatefulDataLoader``, whose state Lightning saves
    in every checkpoint): a run resumed from a checkpoint taken in the middle of an epoch continues that
    epoch's order at the next unseen example, and a resumed run ends where the uninterrupted one would.

    With ``num_replicas`` > 1 (data-parallel training) rank ``rank`` takes every ``num_replicas``-th index
    of the global permutation, starting at ``rank`` (as ``DistributedSampler`` does), so the union of the
    ranks' i-th batches is the global order's i-th batch of ``num_replicas`` × the per-rank batch size.
    The permutation is padded by wrapping around so every rank gets the same number of examples.
    """

    def __init__(self, num_samples: int, data_seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"rank {rank} is outside 0..{int(num_replicas) - 1}")
        self.total = int(num_samples)
        self.data_seed = int(data_seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self.num_samples = -(-self.total // self.num_replicas)  # per rank, ceil
        self._live: _EpochIterator | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> list[int]:
        """This rank's indices for ``epoch`` (default: the current epoch)."""
        gen = torch.Generator()
        gen.manual_seed(epoch_seed(self.data_seed, self.epoch if epoch is None else epoch))
        perm = torch.randperm(self.total, generator=gen).tolist()
        if self.num_replicas > 1:
            padded = self.num_samples * self.num_replicas
            perm = (perm * (-(-padded // max(len(perm), 1))))[:padded]
            perm = perm[self.rank :: self.num_replicas]
        return perm

    def __iter__(self) -> Iterator[int]:
        self._live = _EpochIterator(self)
        return self._live

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict[str, Any]:
        """What the order depends on, and the epoch the next iterator starts: the current one, or the
        next one once the current epoch's indices are all handed out (the position within an epoch is
        the iterator's state)."""
        live = self._live
        epoch = self.epoch if live is None else live.epoch + int(live.exhausted)
        return {"data_seed": self.data_seed, "total": self.total, "num_replicas": self.num_replicas, "epoch": epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Refuses a state made for another order (data_seed, training-set size or number of ranks)."""
        for key in ("data_seed", "total", "num_replicas"):
            mine = getattr(self, key)
            if key in state and int(state[key]) != mine:
                raise ConfigError(
                    f"the checkpoint's training order was made with {key}={state[key]}, this run has {key}={mine}; "
                    "resume with the run's own data_seed, dataset subset and number of devices"
                )
        self.epoch = int(state.get("epoch", self.epoch))


class _EpochIterator(Iterator[int]):
    """One epoch's indices that remembers how far it got (torchdata's ``Stateful`` protocol).

    The epoch is read from the sampler at the first index, not when the iterator is made: torchdata
    makes it eagerly, before Lightning's ``set_epoch`` for the epoch about to run. Its state is
    (epoch, yielded): restoring it rebuilds that epoch's order and skips what was seen; a state saved
    after the epoch's last index leaves the next epoch (the sampler's) to start from its beginning.
    """

    def __init__(self, sampler: EpochSeededSampler) -> None:
        self.sampler = sampler
        self._epoch: int | None = None
        self.indices: list[int] = []
        self.yielded = 0

    @property
    def epoch(self) -> int:
        return self.sampler.epoch if self._epoch is None else self._epoch

    def _start(self, epoch: int) -> None:
        self._epoch = epoch
        self.indices = self.sampler.order(epoch)

    @property
    def exhausted(self) -> bool:
        return self._epoch is not None and self.yielded >= len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self._epoch is None:
            self._start(self.sampler.epoch)
        if self.yielded >= len(self.indices):
            raise StopIteration
        self.yielded += 1
        return self.indices[self.yielded - 1]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["yielded"]) >= len(self.sampler.order(int(state["epoch"]))):
            return  # saved after the epoch's last index: the next epoch starts from its beginning
        self._start(int(state["epoch"]))
        self.yielded = int(state["yielded"])


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

        return cast("list[int]", pc.list_value_length(data.with_format("arrow")["input_ids"]).to_pylist())
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
