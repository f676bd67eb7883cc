"""Small building blocks shared by the tests: toy models and data that make strategies observable."""

from __future__ import annotations

import os

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


class ToyClassifier(nn.Module):
    """A two-layer MLP called like the real classifier (``model(**inputs)``), with optional dropout."""

    def __init__(self, n_in: int = 6, n_hidden: int = 8, n_out: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, n_hidden), nn.Tanh(), nn.Dropout(dropout))
        self.classifier = nn.Linear(n_hidden, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.body(x))

    def is_head(self, name: str) -> bool:
        return name.startswith("classifier.")


def tiny_bert_classifier(num_labels: int = 3, vocab: int = 64, seed: int = 0):
    """A random-init 2-layer BERT wrapped as sdbert's SequenceClassifier (no tokenizer needed)."""
    from transformers import BertConfig, BertForSequenceClassification

    from sdbert.classifier import SequenceClassifier

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, num_labels=num_labels,
    )
    return SequenceClassifier(BertForSequenceClassification(config))


class RandomTokens(Dataset):
    """Deterministic random token sequences with a learnable label (first token mod num_labels)."""

    def __init__(self, n: int = 32, length: int = 8, vocab: int = 64, num_labels: int = 3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, length), generator=g)
        self.labels = self.ids[:, 0] % num_labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def loader(n: int = 32, batch_size: int = 4, seed: int = 0) -> DataLoader:
    return DataLoader(RandomTokens(n=n, seed=seed), batch_size=batch_size, shuffle=False)


def seeded_loader(n: int = 32, batch_size: int = 4, data_seed: int = 0, seed: int = 0):
    """RandomTokens in the run's training order: ``EpochSeededSampler`` under a ``StatefulDataLoader`` (resumable)."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    from sdbert.data.batches import EpochSeededSampler

    data = RandomTokens(n=n, seed=seed)
    return StatefulDataLoader(data, batch_size=batch_size, sampler=EpochSeededSampler(n, data_seed))


class SignalAt(Callback):
    """Sends ``signum`` to this process ``times`` times in a phase of a run (for composed configs:
    ``+callbacks.kill._target_=tests.helpers.SignalAt +callbacks.kill.step=3``): ``phase="step"`` when
    optimizer step ``step`` completes, ``"setup"`` once the data is prepared (before training starts),
    ``"test"`` at the first test batch."""

    def __init__(self, step: int = 0, signum: int = 15, phase: str = "step", times: int = 1) -> None:
        self.step, self.signum, self.phase, self.times, self._start = int(step), int(signum), phase, int(times), -1

    def _send(self) -> None:
        for _ in range(self.times):
            os.kill(os.getpid(), self.signum)

    def setup(self, trainer, pl_module, stage):
        if self.phase == "setup" and stage == "fit":
            self._send()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.phase == "test" and batch_idx == 0:
            self._send()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.phase == "step" and self._start == self.step - 1 and trainer.global_step == self.step:
            self._send()


class DumpRankState(Callback):
    """At the end of training, saves this rank's parameters and teacher-strategy state to
    ``<dirpath>/rank<global rank>.pt`` (to compare the ranks of a data-parallel run)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_train_end(self, trainer, pl_module):
        state = {
            "params": [p.detach().clone() for p in pl_module.model.parameters()],
            "strategy": pl_module.strategy.state_dict(),
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
        }
        torch.save(state, os.path.join(self.dirpath, f"rank{trainer.global_rank}.pt"))


def last_state(run_dir) -> dict[str, Tensor]:
    """The LightningModule state dict of a run's ``checkpoints/last.ckpt`` (its final weights)."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
