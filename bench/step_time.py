"""Time one optimizer step of each strategy (forward + teacher + backward + update + averaging).

The hot path is the project's own: sdbert's classifier and strategy objects, called in the order the
LightningModule calls them. Random-init weights and random tokens: the cost does not depend on them.

    python bench/step_time.py --geometry bert-base --seq 128 512 --device cuda     # GPU, bf16
    python bench/step_time.py --geometry tiny --seq 64 --device cpu --steps 5       # CPU smoke
    python bench/step_time.py --geometry minilm --seq 128 --device cpu --strategies base sdv5_seq sdv5_batched
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from sdbert.classifier import SequenceClassifier
from sdbert.strategies import SelfDistillationAveraged, SelfDistillationVoted, SelfEnsemble, Vanilla

GEOMETRIES = {
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128},
}
STRATEGIES = {
    "base": lambda: Vanilla(),
    "se": lambda: SelfEnsemble(),
    "sda5": lambda: SelfDistillationAveraged(teacher_size=5),
    "sda_all": lambda: SelfDistillationAveraged(teacher_size="all"),
    "sdv5": lambda: SelfDistillationVoted(teacher_size=5),  # batched_teachers=auto
    "sdv5_seq": lambda: SelfDistillationVoted(teacher_size=5, batched_teachers=False),
    "sdv5_batched": lambda: SelfDistillationVoted(teacher_size=5, batched_teachers=True),
}


def build(geometry: str, device: torch.device) -> SequenceClassifier:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=30522, num_labels=2, **GEOMETRIES[geometry])
    config._attn_implementation = "sdpa"
    return SequenceClassifier(BertForSequenceClassification(config)).to(device).train()


def time_strategy(name: str, geometry: str, seq: int, batch: int, steps: int, warmup: int, device: torch.device,
                  bf16: bool) -> dict:
    torch.manual_seed(0)
    model = build(geometry, device)
    strategy = STRATEGIES[name]()
    strategy.setup(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=device.type == "cuda")
    ids = torch.randint(1000, 30000, (batch, seq), device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.randint(0, 2, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step_ms, avg_ms = [], []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        with autocast:
            logits = model(**inputs)
            loss = F.cross_entropy(logits.float(), labels)
            teacher = strategy.teacher_logits(model, inputs)
            if teacher is not None:
                loss = loss + strategy.distill_weight * F.mse_loss(logits.float(), teacher.float())
        loss.backward()
        sync()
        t1 = time.perf_counter()
        strategy.before_optimizer_step(model)
        opt.step()
        opt.zero_grad(set_to_none=True)
        strategy.after_optimizer_step(model)
        sync()
        t2 = time.perf_counter()
        if i >= warmup:
            step_ms.append((t2 - t0) * 1e3)
        # the averaging update alone (ring push + mean), timed separately
        if i >= warmup:
            sync()
            a0 = time.perf_counter()
            strategy.before_optimizer_step(model)
            strategy.after_optimizer_step(model)
            sync()
            avg_ms.append((time.perf_counter() - a0) * 1e3)
        del t1
    median = statistics.median(step_ms)
    return {
        "strategy": name, "geometry": geometry, "seq": seq, "batch": batch, "bf16": bf16,
        "ms_per_step": round(median, 2), "samples_per_s": round(batch / median * 1e3, 1),
        "averaging_ms": round(statistics.median(avg_ms), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", choices=sorted(GEOMETRIES), default="tiny")
    parser.add_argument("--seq", type=int, nargs="+", default=[64])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--strategies", nargs="+", default=["base", "se", "sda5", "sda_all", "sdv5"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    bf16 = device.type == "cuda"
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    rows = []
    for seq in args.seq:
        base_ms = None
        for name in args.strategies:
            row = time_strategy(name, args.geometry, seq, args.batch, args.steps, args.warmup, device, bf16)
            base_ms = row["ms_per_step"] if name == "base" else base_ms
            row["vs_base"] = round(row["ms_per_step"] / base_ms, 2) if base_ms else None
            rows.append(row)
            print(f"{card} | {args.geometry} seq {seq} | {name:8s} | {row['ms_per_step']:8.2f} ms/step | "
                  f"{row['samples_per_s']:8.1f} samples/s | x{row['vs_base']} | averaging {row['averaging_ms']} ms",
                  flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": card, "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
