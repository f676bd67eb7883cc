"""What every loop of the end-to-end benchmark shares, and the three loops (see :mod:`sdbert.bench.e2e`).

:class:`Data` holds the training batches all loops read (the data module's training loader, or random
full-length sequences) and their token counts; :class:`Clock` takes the end-of-optimizer-step timestamps;
``run_plain``, ``run_hf`` and ``run_sdbert`` each train the configured model for ``--warmup + --steps``
optimizer steps on those batches.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from sdbert import recipe
from sdbert.errors import ConfigError

# ----------------------------------------------------------------------------------------- data


def synthetic_loader(cfg: Any, n: int, seq: int, batch: int) -> DataLoader[Any]:
    """Random full-length sequences (no tokenizer, no download: for machines without the data)."""
    from torch.utils.data import TensorDataset

    from sdbert.data.batches import EpochSeededSampler

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (n, seq), generator=gen)
    labels = torch.randint(0, len(cfg.dataset.label_names), (n,), generator=gen)
    data = TensorDataset(ids, labels)

    def collate(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        input_ids = torch.stack([r[0] for r in rows])
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                "labels": torch.stack([r[1] for r in rows])}

    return DataLoader(data, batch_size=batch, sampler=EpochSeededSampler(n, cfg.data_seed), collate_fn=collate)


class Data:
    """The training batches every loop reads, and their token counts (from the sampler's epoch-0 order)."""

    def __init__(self, cfg: Any, args: argparse.Namespace, seq: int) -> None:
        from sdbert import factory
        from sdbert.data.datamodule import TextClassificationDataModule

        self.datamodule: TextClassificationDataModule | None = None
        self.loader: DataLoader[Any]
        if args.data == "synthetic":
            needed = (args.warmup + args.steps + 1) * args.batch
            self.loader = synthetic_loader(cfg, needed, seq, args.batch)
            self.lengths = [seq] * needed
            order = list(self.loader.sampler)
        else:
            datamodule = factory.build_datamodule(cfg)
            if not isinstance(datamodule, TextClassificationDataModule):
                raise ConfigError(f"--data {args.data}: the benchmark reads sdbert's TextClassificationDataModule, "
                                  f"not {type(datamodule).__name__}; pick a conf/dataset option of sdbert's")
            self.datamodule = datamodule
            self.datamodule.prepare_data()
            self.datamodule.setup("fit")
            self.loader = self.datamodule.train_dataloader()
            from sdbert.data.batches import EpochSeededSampler, LengthGroupedSampler, token_lengths

            self.lengths = token_lengths(self.datamodule.train_dataset)
            sampler = self.loader.sampler
            assert isinstance(sampler, (EpochSeededSampler, LengthGroupedSampler))  # the data module's two orders
            sampler.set_epoch(0)
            order = list(sampler)
        b = args.batch
        self.batches = [[self.lengths[i] for i in order[s : s + b]] for s in range(0, len(order), b)]
        if len(self.batches) < args.warmup + args.steps:
            raise ConfigError(f"the training set has {len(self.batches)} batches; ask for fewer --warmup + --steps")

    def tokens(self, first: int, last: int) -> tuple[int, int]:
        """(real, processed) tokens of batches ``first`` … ``last - 1`` of epoch 0."""
        batches = self.batches[first:last]
        return sum(sum(b) for b in batches), sum(max(b) * len(b) for b in batches)


# ----------------------------------------------------------------------------------------- timing


class Clock:
    """End-of-optimizer-step timestamps; synchronises CUDA only at the three instants it reports, so a
    loop's host overhead can still overlap the device's work as it would in a real run."""

    def __init__(self, warmup: int, steps: int, device: str) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start = 0.0
        self.marks: dict[int, float] = {}
        self.count = 0

    def begin(self) -> None:
        self.start = time.perf_counter()

    def step(self) -> None:
        self.count += 1
        if self.count in (1, self.warmup, self.warmup + self.steps):
            if self.device == "cuda":
                torch.cuda.synchronize()
            self.marks[self.count] = time.perf_counter()

    def timed_s(self) -> float:
        first = self.marks.get(self.warmup, self.start) if self.warmup else self.start
        return self.marks[self.warmup + self.steps] - first


def optimizer_and_schedule(model: Any, cfg: Any, device: str, total: int) -> tuple[Any, Any]:
    """sdbert's recipe (:mod:`sdbert.recipe`) for the other loops: the same AdamW groups and schedule."""
    opt, schedule = recipe.optimizer_and_schedule(model, cfg.optim, total=total)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


# ----------------------------------------------------------------------------------------- the loops


def run_plain(cfg: Any, data: Data, clock: Clock, args: argparse.Namespace) -> None:
    import torch.nn.functional as F

    from sdbert.classifier import compile_classifier
    from sdbert.config import instantiate

    model = instantiate(cfg.model, num_labels=len(cfg.dataset.label_names)).to(args.device).train()
    clock.begin()
    if cfg.compile:  # as train.py compiles (the first step then includes the compilation)
        compile_classifier(model)
    total = args.warmup + args.steps
    opt, sched = optimizer_and_schedule(model, cfg, args.device, total)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()
    batches: Iterator[dict[str, torch.Tensor]] = iter(data.loader)
    for _ in range(total):
        batch = {k: v.to(args.device, non_blocking=True) for k, v in next(batches).items()}
        labels = batch.pop("labels")
        with autocast:
            logits = model(**batch)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()  # type: ignore[no-untyped-call]  # torch declares Tensor.backward without annotations
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        clock.step()


def run_hf(cfg: Any, data: Data, clock: Clock, args: argparse.Namespace, out_dir: Path) -> None:
    import torch.nn.functional as F
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from sdbert.config import instantiate

    model = instantiate(cfg.model, num_labels=len(cfg.dataset.label_names))

    class StepClock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            clock.step()

    class ClassifierTrainer(Trainer):
        """Our classifier returns logits; the loss is the same cross-entropy as the other loops."""

        def compute_loss(
            self, model: torch.nn.Module, inputs: dict[str, torch.Tensor | Any], return_outputs: bool = False,
            num_items_in_batch: torch.Tensor | int | None = None,
        ) -> torch.Tensor | tuple[torch.Tensor, Any]:
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            logits = model(**inputs)
            loss = F.cross_entropy(logits.float(), labels)
            return (loss, logits) if return_outputs else loss

        def get_train_dataloader(self) -> DataLoader[Any]:  # the same batches as the other loops
            return data.loader

    clock.begin()
    total = args.warmup + args.steps
    training_args = TrainingArguments(
        output_dir=str(out_dir / "hf"), per_device_train_batch_size=args.batch, max_steps=total,
        max_grad_norm=1.0, save_strategy="no", report_to="none", seed=cfg.seed,
        use_cpu=args.device == "cpu", bf16=args.precision == "bf16", dataloader_num_workers=0,
    )
    opt, sched = optimizer_and_schedule(model.to(training_args.device), cfg, args.device, total)
    trainer = ClassifierTrainer(model=model, args=training_args, optimizers=(opt, sched), callbacks=[StepClock()])
    trainer.train()


def run_sdbert(cfg: Any, data: Data, clock: Clock, args: argparse.Namespace) -> dict[str, Any]:
    import lightning as L

    from sdbert import factory

    strategy = factory.build_strategy(cfg)
    module = factory.build_module(cfg, strategy, training=True)  # as train.py (compile=true compiles)

    class StepClock(L.Callback):
        def on_train_batch_end(self, *_: Any, **__: Any) -> None:
            clock.step()

    clock.begin()
    trainer = factory.build_trainer(cfg, factory.instantiate_group(cfg.get("logger")))
    # Lightning's callback connector sets Trainer.callbacks; the class does not declare it
    trainer.callbacks.append(StepClock())  # type: ignore[attr-defined]
    if data.datamodule is not None:
        trainer.fit(module, datamodule=data.datamodule)
    else:
        trainer.fit(module, train_dataloaders=data.loader)
    extra = {"optimizer_steps": trainer.global_step}
    batched = getattr(strategy, "runs_batched", None)
    if batched is not None:
        extra["batched_teachers"] = batched
    return extra


