"""Reproduce the teacher-mode stability finding (docs/stability_cpu.md) with sdbert itself.

``run``: small-scale CPU probe — the embedded MiniLM on IMDb at 64 tokens, batch 16, flat learning
rate after warm-up, a few hundred optimizer steps, for BASE and SDA with the teacher in eval mode and
with its dropout on; the mean |logit| and the loss terms are traced from each run's CSV log.
``summarize``: the same table from existing run directories (e.g. the GPU runs in bench/results/).

    python scripts/stability_probe.py run --steps 250 --out docs/stability_cpu.md
    python scripts/stability_probe.py summarize bench/results/h200-2026-11-26/runs/*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

RUNS = {
    "base": ["strategy=base"],
    "sda1_eval_teacher": ["strategy=sda", "teacher_size=1", "strategy.teacher_dropout=false"],
    "sda1_dropout_teacher": ["strategy=sda", "teacher_size=1", "strategy.teacher_dropout=true"],
}


def probe_overrides(steps: int, batch: int, max_length: int) -> list[str]:
    return [
        "experiment=main", "model=minilm", "dataset=imdb", f"dataset.max_length={max_length}",
        f"dataset.batch_size={batch}", "dataset.train_per_class=null", f"dataset.train_size={steps * batch}",
        "dataset.val_size=256", "dataset.eval_size=256", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1", "optim.schedule=constant", "logger=csv", "test_ckpt=last",
        # the probe watches the runaway rather than stopping it
        "callbacks.divergence_guard.max_loss=1000", "callbacks.divergence_guard.max_abs_logit=1000",
    ]


def trace(run_dir: Path, every: int) -> dict:
    """Mean |logit|, CE and MSE along the run, plus its outcome, from metrics.csv and metrics.json."""
    df = pd.read_csv(run_dir / "csv" / "metrics.csv")
    train = df.dropna(subset=["train/logit_abs_mean"]).groupby("step").last()
    summary = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    rows = train[(train.index + 1) % every == 0]  # every `every` optimizer steps
    return {
        "name": run_dir.name,
        "status": summary.get("status", "missing"),
        "test_err": summary.get("test", {}).get("test/err"),
        "steps": rows.index.tolist(),
        "logit": rows["train/logit_abs_mean"].round(2).tolist(),
        "ce": rows["train/ce"].round(3).tolist(),
        "mse": rows["train/mse"].round(3).tolist() if "train/mse" in rows else [],
        "last": {"step": int(train.index[-1]), "logit": round(float(train["train/logit_abs_mean"].iloc[-1]), 2)},
        "error": summary.get("error"),
    }


def markdown(traces: list[dict]) -> str:
    steps = traces[0]["steps"]
    lines = ["| optimizer step | " + " | ".join(t["name"] for t in traces) + " |",
             "|---|" + "---|" * len(traces)]
    for i, step in enumerate(steps):
        cells = []
        for t in traces:
            if i < len(t["logit"]):
                mse = f", mse {t['mse'][i]:.3f}" if i < len(t["mse"]) and t["mse"][i] == t["mse"][i] else ""
                cells.append(f"|z| {t['logit'][i]:.2f}, ce {t['ce'][i]:.3f}{mse}")
            else:
                cells.append("—")
        lines.append(f"| {step + 1} | " + " | ".join(cells) + " |")
    lines.append("")
    for t in traces:
        outcome = f"test error {t['test_err']:.2f} %" if t["test_err"] is not None else t["status"]
        lines.append(f"- **{t['name']}**: {outcome}; last traced step {t['last']['step'] + 1}, "
                     f"mean |logit| {t['last']['logit']}" + (f" — {t['error']}" if t["error"] else ""))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> list[dict]:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import sdbert  # noqa: F401  (resolvers)
    from sdbert.run import train

    conf = Path(__file__).resolve().parents[1] / "conf"
    traces = []
    for name, extra in RUNS.items():
        out = args.workdir / name
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*probe_overrides(args.steps, args.batch, args.max_length),
                                                          *extra])
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
        train(cfg)
        traces.append(trace(out, args.every))
    return traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="train the probe runs on CPU, then print the trace table")
    p_run.add_argument("--steps", type=int, default=250)
    p_run.add_argument("--batch", type=int, default=16)
    p_run.add_argument("--max-length", type=int, default=64)
    p_run.add_argument("--every", type=int, default=25)
    p_run.add_argument("--workdir", type=Path, default=Path("logs/stability_probe"))
    p_run.add_argument("--out", type=Path, default=None)
    p_sum = sub.add_parser("summarize", help="trace table from existing run directories")
    p_sum.add_argument("run_dirs", nargs="+", type=Path)
    p_sum.add_argument("--every", type=int, default=100)
    p_sum.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    traces = run(args) if args.cmd == "run" else [trace(d, args.every) for d in args.run_dirs]
    text = markdown(traces)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
