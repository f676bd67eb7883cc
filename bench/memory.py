"""Memory of a training step per architecture and strategy: measured on the CPU for the tiny test models,
computed from parameter counts for BERT-large and DeBERTa-v3-large.

Measured: each (architecture, strategy) trains 4 steps (batch 16, 128 tokens, AdamW, the strategy's hooks)
in a fresh process; its peak resident memory (``ru_maxrss``) is reported beside that of the same process
before training (Python, torch and transformers loaded, the model built). The tiny models
(``tests/tiny_models.py``: 2 layers x 32) are far smaller than the interpreter, so their rows show that every
architecture runs every strategy, not what a large model needs; the computed rows do that.

Computed: fp32 parameters P (the model built on the meta device from its config class: no download), the
student's weights, gradients and AdamW's two moments (4 copies) plus the teacher's extra copies (SE 1,
SDA K + 2, SDA ``all`` 1, SDV K; docs/scaling.md), 4 bytes each. Activations come on top and depend on batch
and length (``model.gradient_checkpointing=true`` keeps one layer's instead of all).

    python bench/memory.py --out bench/results/<dir>/memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRATEGIES = ("base", "se", "sda5", "sdv5")
#: large encoders' configs (as on the hub: bert-large-uncased, deberta-v3-large), built on the meta device
LARGE: dict[str, tuple[str, dict[str, Any]]] = {
    "BERT-large": ("BertConfig", {"vocab_size": 30522, "hidden_size": 1024, "num_hidden_layers": 24,
                                  "num_attention_heads": 16, "intermediate_size": 4096}),
    "DeBERTa-v3-large": ("DebertaV2Config", {
        "vocab_size": 128100, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
        "intermediate_size": 4096, "max_position_embeddings": 512, "type_vocab_size": 0, "relative_attention": True,
        "position_buckets": 256, "max_relative_positions": -1, "pos_att_type": ["p2c", "c2p"],
        "norm_rel_ebd": "layer_norm", "share_att_key": True, "position_biased_input": False, "pooler_hidden_size": 1024,
    }),
}


def teacher_copies(strategy: str, k: int | None) -> int:
    """Extra parameter copies the strategy keeps (``k`` None: SDA's ``all``)."""
    if strategy == "se":
        return 1
    if strategy == "sda":
        return 1 if k is None else k + 2
    if strategy == "sdv":
        return int(k or 0)
    return 0


def _strategy(name: str) -> Any:
    from sdbert.strategies import SelfDistillationAveraged, SelfDistillationVoted, SelfEnsemble, Vanilla

    return {"base": Vanilla, "se": SelfEnsemble, "sda5": lambda: SelfDistillationAveraged(teacher_size=5),
            "sdv5": lambda: SelfDistillationVoted(teacher_size=5)}[name]()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_one(arch: str, strategy_name: str, steps: int = 4, batch: int = 16, length: int = 128) -> dict[str, Any]:
    """Train ``steps`` steps of the tiny ``arch`` under ``strategy_name`` here; peak memory before and after."""
    import torch
    import torch.nn.functional as F

    from sdbert.classifier import build_classifier
    from tests.tiny_models import save_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = build_classifier(str(save_tiny_model(arch, Path(tmp) / arch, positions=length)), num_labels=3)
    strategy = _strategy(strategy_name)
    strategy.setup(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    vocab = model.hf.config.vocab_size
    before = peak_mb()
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        inputs = {"input_ids": torch.randint(5, vocab, (batch, length), generator=gen),
                  "attention_mask": torch.ones(batch, length, dtype=torch.long)}
        labels = torch.randint(0, 3, (batch,), generator=gen)
        logits = model(**inputs)
        loss = F.cross_entropy(logits, labels)
        teacher = strategy.teacher_logits(model, inputs)
        if teacher is not None:
            loss = loss + strategy.distill_term(logits, teacher)
        loss.backward()
        strategy.before_optimizer_step(model)
        optimizer.step()
        optimizer.zero_grad()
        strategy.after_optimizer_step(model)
    return {"arch": arch, "strategy": strategy_name, "parameters": sum(p.numel() for p in model.parameters()),
            "peak_mb_before_training": round(before, 1), "peak_mb": round(peak_mb(), 1)}


def computed() -> list[dict[str, Any]]:
    import torch
    import transformers

    rows = []
    for name, (config_class, fields) in LARGE.items():
        config = getattr(transformers, config_class)(num_labels=3, **fields)
        with torch.device("meta"):
            model = transformers.AutoModelForSequenceClassification.from_config(config)
        params = sum(p.numel() for p in model.parameters())
        gb = params * 4 / 1e9
        row: dict[str, Any] = {"model": name, "parameters": params, "student_gb": round(4 * gb, 2)}
        for strategy, k in (("se", None), ("sda", 1), ("sda", 5), ("sda", None), ("sdv", 5)):
            key = f"{strategy}{'' if strategy == 'se' else ('_all' if k is None else k)}"
            row[f"{key}_extra_gb"] = round(teacher_copies(strategy, k) * gb, 2)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the results here (JSON)")
    parser.add_argument("--one", nargs=2, metavar=("ARCH", "STRATEGY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(*args.one)))
        return 0
    from tests.tiny_models import ARCHITECTURES

    measured = []
    for arch in ARCHITECTURES:
        for strategy in STRATEGIES:
            proc = subprocess.run([sys.executable, __file__, "--one", arch, strategy], capture_output=True, text=True,
                                  check=True, cwd=ROOT)
            measured.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(measured[-1]), flush=True)
    result = {"measured_tiny_cpu": measured, "computed_large_fp32": computed()}
    for row in result["computed_large_fp32"]:
        print(json.dumps(row))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
