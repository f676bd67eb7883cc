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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sdbert.bench.loops import Clock, Data, run_hf, run_plain, run_sdbert
from sdbert.bench.models import GEOMETRIES, random_bert  # noqa: F401  (random_bert: a Hydra _target_)
from sdbert.bench.tables import Result, machine, save, table

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


# ----------------------------------------------------------------------------------------- config


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


# ----------------------------------------------------------------------------------------- one job


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
