"""Train the same model on the same tokenised data, batch and number of optimizer steps in three loops.

- ``sdbert``: ``trainer.fit`` exactly as ``train.py`` builds it (:mod:`sdbert.factory`: the configured
  callbacks, CSV logger, progress bar, per-batch seeding, the strategy hooks), validation switched off;
- ``plain``: a minimal PyTorch loop (AdamW with the same parameter groups and schedule, gradient
  clipping 1.0, autocast where bf16), no framework;
- ``hf``: Hugging Face ``Trainer`` (``pip install -e '.[bench]'`` for ``accelerate``).

All three read batches from the same loader (the data module's training loader: seeded order,
per-batch padding), so they see the same examples in the same order. Each (loop, strategy) job runs
in a fresh process, one after the other, and reports samples/s and real (non-pad) tokens/s over the
steps after ``--warmup``, time to first step (from building the loop's trainer/optimizer to the end of
its first optimizer step, model and data already in memory), peak memory (CUDA: max allocated;
CPU: peak resident set) and the ratio to the plain loop.

    python -m sdbert.bench                                   # CPU: embedded MiniLM, SNLI, 128 tokens
    python -m sdbert.bench --geometry bert-base --data synthetic --seq 128 512 --device cuda --precision bf16
    python -m sdbert.bench --geometry tiny --data synthetic --steps 3 --warmup 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sdbert import recipe
from sdbert.bench.models import GEOMETRIES, random_bert  # noqa: F401  (random_bert: a Hydra _target_)
from sdbert.bench.tables import Result, machine, save, table
from sdbert.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

#: strategy name in the table -> train.py overrides
STRATEGIES: dict[str, list[str]] = {
    "base": ["strategy=base"],
    "sda5": ["strategy=sda", "teacher_size=5"],
    "sda_all": ["strategy=sda", "teacher_size=all"],
    "sdv5_seq": ["strategy=sdv", "teacher_size=5", "strategy.batched_teachers=false"],
    "sdv5_batched": ["strategy=sdv", "teacher_size=5", "strategy.batched_teachers=true"],
}
LOOPS = ("plain", "hf", "sdbert")


@dataclass
class Job:
    loop: str
    strategy: str = "base"
    group_by_length: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        return f"{self.loop} {self.strategy}" + " +group" * self.group_by_length + " +compile" * self.compile


# ----------------------------------------------------------------------------------------- config / data


def compose(args: argparse.Namespace, job: Job, seq: int, out_dir: Path) -> Any:
    """The ``train`` config of this job, as train.py would compose it with the benchmark's overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import sdbert  # noqa: F401  (resolvers)

    overrides = [
        *STRATEGIES[job.strategy],
        f"dataset={args.data if args.data != 'synthetic' else 'snli'}",
        f"dataset.max_length={seq}",
        f"dataset.batch_size={args.batch}",
        f"dataset.group_by_length={str(job.group_by_length).lower()}",
        f"compile={str(job.compile).lower()}",
        "trainer.accumulate_grad_batches=1",
        f"++trainer.max_steps={args.warmup + args.steps}",
        "++trainer.limit_val_batches=0",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"trainer.precision={'bf16-mixed' if args.precision == 'bf16' else '32-true'}",
        "logger=csv",
        f"model={args.model}",
        *args.override,
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        if args.geometry:
            cfg.model = {"_target_": "sdbert.bench.models.random_bert", "geometry": args.geometry,
                         "name_or_path": cfg.model.name_or_path}  # the tokenizer of real data
    return cfg


def synthetic_loader(cfg: Any, n: int, seq: int, batch: int) -> Any:
    """Random full-length sequences (no tokenizer, no download: for machines without the data)."""
    from torch.utils.data import DataLoader, TensorDataset

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

        self.datamodule = None
        if args.data == "synthetic":
            needed = (args.warmup + args.steps + 1) * args.batch
            self.loader = synthetic_loader(cfg, needed, seq, args.batch)
            self.lengths = [seq] * needed
            order = list(self.loader.sampler)
        else:
            self.datamodule = factory.build_datamodule(cfg)
            self.datamodule.prepare_data()
            self.datamodule.setup("fit")
            self.loader = self.datamodule.train_dataloader()
            from sdbert.data.batches import token_lengths

            self.lengths = token_lengths(self.datamodule.train_dataset)
            sampler = self.loader.sampler
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
        loss.backward()
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

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            logits = model(**inputs)
            loss = F.cross_entropy(logits.float(), labels)
            return (loss, logits) if return_outputs else loss

        def get_train_dataloader(self):  # the same batches as the other loops
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
    trainer.callbacks.append(StepClock())
    if data.datamodule is not None:
        trainer.fit(module, datamodule=data.datamodule)
    else:
        trainer.fit(module, train_dataloaders=data.loader)
    extra = {"optimizer_steps": trainer.global_step}
    batched = getattr(strategy, "runs_batched", None)
    if batched is not None:
        extra["batched_teachers"] = batched
    return extra


def run_job(args: argparse.Namespace, job: Job, seq: int) -> Result:
    """One (loop, strategy) job in this process."""
    import lightning as L

    process_start = time.perf_counter()
    torch.set_flush_denormal(True)  # what train.py does (sdbert.run.build); the same for every loop
    with tempfile.TemporaryDirectory(prefix="sdbert-bench-") as tmp:
        out_dir = Path(tmp)
        cfg = compose(args, job, seq, out_dir)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        data = Data(cfg, args, seq)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        clock = Clock(args.warmup, args.steps, args.device)
        setup_s = time.perf_counter() - process_start
        extra: dict[str, Any] = {}
        if job.loop == "plain":
            run_plain(cfg, data, clock, args)
        elif job.loop == "hf":
            run_hf(cfg, data, clock, args, out_dir)
        else:
            extra = run_sdbert(cfg, data, clock, args)
    if clock.count < args.warmup + args.steps:
        raise RuntimeError(f"{job.label}: only {clock.count} optimizer steps ran")
    seconds = clock.timed_s()
    real, processed = data.tokens(args.warmup, args.warmup + args.steps)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Result(
        job=asdict(job), seq=seq, steps=args.steps,
        samples_per_s=round(args.steps * args.batch / seconds, 2),
        real_tokens_per_s=round(real / seconds, 1),
        ms_per_step=round(seconds / args.steps * 1e3, 1),
        first_step_s=round(clock.marks[1] - clock.start, 2),
        setup_s=round(setup_s, 2),
        peak_mib=round(peak, 0),
        padded_over_real=round(processed / real, 3),
        extra=extra,
    )


# ----------------------------------------------------------------------------------------- driver


def default_jobs(strategies: Sequence[str], loops: Sequence[str], group: bool, compile: bool = False) -> list[Job]:
    jobs = [Job(loop) for loop in loops if loop != "sdbert"]
    if "sdbert" in loops:
        jobs += [Job("sdbert", s) for s in strategies]
        if group:  # sdbert, and HF Trainer on the same grouped batches (what its own group_by_length does)
            jobs += [Job("sdbert", "base", group_by_length=True)]
            jobs += [Job("hf", "base", group_by_length=True)] if "hf" in loops else []
    if compile:  # BASE compiled as train.py's compile=true does, in the plain loop and in sdbert's
        jobs += [Job(loop, "base", compile=True) for loop in ("plain", "sdbert") if loop in loops]
    return jobs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sdbert.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="conf/model option (default: the embedded MiniLM)")
    p.add_argument("--geometry", choices=sorted(GEOMETRIES), default=None,
                   help="random-init BERT of this geometry instead of --model (no download)")
    p.add_argument("--data", default="snli", help="conf/dataset option, or 'synthetic' (random full-length tokens)")
    p.add_argument("--seq", type=int, nargs="+", default=[128])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per loop (after --warmup)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES),
                   help="strategies of the sdbert loop (the other loops run BASE)")
    p.add_argument("--loops", nargs="+", default=list(LOOPS), choices=list(LOOPS))
    p.add_argument("--group-by-length", action="store_true",
                   help="add sdbert and HF Trainer BASE jobs on length-grouped batches (dataset.group_by_length)")
    p.add_argument("--compile", action="store_true",
                   help="add plain and sdbert BASE jobs with the classifier compiled (train.py's compile=true)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default=None, choices=["32", "bf16"], help="default: bf16 on cuda, 32 on cpu")
    p.add_argument("--override", nargs="*", default=[], help="extra train.py overrides for every job")
    p.add_argument("--out", type=Path, default=None, help="write results.json and table.md here")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)  # internal: run one job, print its result
    args = p.parse_args(argv)
    if args.precision is None:
        args.precision = "bf16" if args.device == "cuda" else "32"
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.job:
        spec = json.loads(args.job)
        result = run_job(args, Job(**spec["job"]), spec["seq"])
        print("RESULT " + json.dumps(asdict(result)), flush=True)
        return
    info = machine()
    print(json.dumps(info), flush=True)
    results: list[Result] = []
    argv_list = list(sys.argv[1:] if argv is None else argv)
    for seq in args.seq:
        for job in default_jobs(args.strategies, args.loops, args.group_by_length, args.compile):
            spec = json.dumps({"job": asdict(job), "seq": seq})
            proc = subprocess.run([sys.executable, "-m", "sdbert.bench", *argv_list, "--job", spec],
                                  capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
                print(f"seq {seq} {job.label}: FAILED (exit {proc.returncode})\n{tail}", flush=True)
                continue
            r = Result(**json.loads(lines[-1][len("RESULT "):]))
            results.append(r)
            print(f"seq {seq} {job.label:28s} {r.samples_per_s:8.1f} samples/s {r.real_tokens_per_s:9.0f} real tok/s "
                  f"{r.ms_per_step:7.0f} ms/step  first step {r.first_step_s:5.1f} s  peak {r.peak_mib:6.0f} MiB  "
                  f"padded/real {r.padded_over_real:.2f}", flush=True)
            save(args, info, results)
    print(table(results))


if __name__ == "__main__":
    main()
