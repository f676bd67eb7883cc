"""What one SDV/SDA teacher pass costs on the CPU, and what the candidate fast paths would save.

A teacher pass is a no-gradient forward with dropout on the current batch (K of them per SDV step).
Measured on the main job's real SNLI training batches (MiniLM, batch 16, per-batch padding), every
variant on every batch in a shuffled order, so the machine's drift falls on all of them alike:

- ``dropout``: the pass as SDV runs it (``batched_teachers=false``, the CPU default);
- ``eval``: the same pass without dropout: a floor, not the strategy (issue 10 kept the dropout teacher);
- ``bucketed2``: dropout, the batch cut into two length-sorted halves, each trimmed to its own longest
  row (the same per-example computation, less padding);
- ``rand_mask``: dropout whose masks come from ``torch.rand(...) < 1 - p`` instead of torch's CPU
  ``bernoulli_`` (the same Bernoulli masks; attention dropout through the math attention it uses anyway);
- ``rand_mask+bucketed2``; ``compiled``: ``torch.compile(dynamic=True)`` (inductor's own dropout RNG);
- ``base step``: one eager BASE training step (forward, backward, AdamW), for the ratio an SDV K=5 step
  would have: (base step + 5 × pass) / base step.

    python bench/teacher_pass.py --batches 30 --rounds 3 --out bench/results/<dir>/teacher_pass.json

None of the variants is built into sdbert (BENCHMARKS.md section 3 says why); this file measures them.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from sdbert.bench import e2e
from sdbert.bench.tables import machine
from sdbert.config import instantiate


def rand_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.where(torch.rand(x.shape) < 1 - p, x * (1 / (1 - p)), 0) if p > 0 else x


class RandMaskDropout(TorchFunctionMode):
    """Dropout (and SDPA's attention dropout, as the math attention) with ``torch.rand`` masks."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            names = ("input", "p", "training", "inplace")
            bound = {**dict(zip(names, args, strict=False)), **kwargs}
            if bound.get("training", True):
                return rand_dropout(bound["input"], bound.get("p", 0.5))
        if func is F.scaled_dot_product_attention and kwargs.get("dropout_p", 0.0) > 0:
            q, k, v = args[:3]
            mask = kwargs.get("attn_mask")
            scale = kwargs.get("scale") or q.size(-1) ** -0.5
            w = (q @ k.transpose(-2, -1)) * scale
            if mask is not None:
                w = w.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else w + mask
            return rand_dropout(w.softmax(-1), kwargs["dropout_p"]) @ v
        return func(*args, **kwargs)


def bucketed(model: torch.nn.Module, inputs: dict[str, torch.Tensor], parts: int) -> torch.Tensor:
    lengths = inputs["attention_mask"].sum(1)
    order = lengths.argsort(descending=True)
    out: torch.Tensor | None = None
    for chunk in order.chunk(parts):
        longest = int(lengths[chunk].max())
        logits = model(**{k: v[chunk, :longest] for k, v in inputs.items()})
        out = logits.new_empty(len(order), logits.shape[1]) if out is None else out
        out[chunk] = logits
    assert out is not None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="skip the compiled variant (~1.5 min to compile)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_flush_denormal(True)
    bench_args = e2e.parse_args([])
    cfg = e2e.compose(bench_args, e2e.Job("sdbert"), 128, Path(tempfile.mkdtemp()))
    data = e2e.Data(cfg, bench_args, 128)
    torch.manual_seed(0)
    model = instantiate(cfg.model, num_labels=len(cfg.dataset.label_names))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-9, fused=True)
    batches, labels = [], []
    for batch in data.loader:
        labels.append(batch.pop("labels"))
        batch.pop("row", None)
        batches.append(batch)
        if len(batches) == args.batches:
            break

    def base_step(b: dict[str, torch.Tensor], y: torch.Tensor) -> None:
        model.train()
        F.cross_entropy(model(**b), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def no_grad(fn, training: bool = True):
        def run(b: dict[str, torch.Tensor], _: torch.Tensor) -> None:
            model.train(training)
            with torch.no_grad():
                fn(b)
        return run

    def with_rand_mask(fn):
        def run(b: dict[str, torch.Tensor]) -> None:
            with RandMaskDropout():
                fn(b)
        return run

    variants = {
        "dropout": no_grad(lambda b: model(**b)),
        "eval": no_grad(lambda b: model(**b), training=False),
        "bucketed2": no_grad(lambda b: bucketed(model, b, 2)),
        "rand_mask": no_grad(with_rand_mask(lambda b: model(**b))),
        "rand_mask+bucketed2": no_grad(with_rand_mask(lambda b: bucketed(model, b, 2))),
        "base step": base_step,
    }
    compile_s = None
    if not args.no_compile:
        compiled = torch.compile(model, dynamic=True)
        start = time.perf_counter()
        for b, y in zip(batches, labels, strict=True):  # compile (and any recompile) before timing
            no_grad(lambda b: compiled(**b))(b, y)
        compile_s = time.perf_counter() - start
        variants["compiled"] = no_grad(lambda b: compiled(**b))
    totals = dict.fromkeys(variants, 0.0)
    rng = random.Random(0)
    for _ in range(args.rounds):
        for b, y in zip(batches, labels, strict=True):
            names = list(variants)
            rng.shuffle(names)
            for name in names:
                start = time.perf_counter()
                variants[name](b, y)
                totals[name] += time.perf_counter() - start
    n = args.rounds * len(batches)
    ms = {name: 1e3 * t / n for name, t in totals.items()}
    rows = {
        name: {"ms": round(v, 1), "x_dropout_pass": round(v / ms["dropout"], 3),
               "sdv5_step_x_base": round((ms["base step"] + 5 * v) / ms["base step"], 2)}
        for name, v in ms.items() if name != "base step"
    }
    result = {
        "machine": machine(),
        "batches": len(batches), "rounds": args.rounds,
        "mean_padded_length": round(sum(b["input_ids"].shape[1] for b in batches) / len(batches), 1),
        "base_step_ms": round(ms["base step"], 1), "compile_s": None if compile_s is None else round(compile_s, 1),
        "teacher_pass": rows,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
