"""What ``python -m sdbert.bench`` prints and writes: one :class:`Result` per (loop, strategy, seq) job,
the Markdown table with the ratios the issue's targets are read from, ``results.json`` with the machine."""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class Result:
    job: dict[str, Any]
    seq: int
    steps: int
    samples_per_s: float
    real_tokens_per_s: float
    ms_per_step: float
    first_step_s: float
    setup_s: float
    peak_mib: float
    padded_over_real: float
    extra: dict[str, Any] = field(default_factory=dict)



def machine() -> dict[str, Any]:
    import lightning
    import transformers

    info = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "lightning": lightning.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
        "cores": os.cpu_count(), "load_avg": [round(x, 1) for x in os.getloadavg()],
    }
    try:
        import accelerate

        info["accelerate"] = accelerate.__version__
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def table(results: list[Result]) -> str:
    """A Markdown table; samples/s against the plain loop and HF Trainer (their shuffled BASE jobs), step time
    against sdbert BASE (shuffled), each of the same seq."""
    lines = [
        "| seq | loop | strategy | samples/s | real tokens/s | ms/step | × plain (samples/s) | × hf (samples/s) "
        "| × base (step) | first step s | peak MiB | padded/real |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def reference(same: list[Result], loop: str) -> Result | None:
        return next((x for x in same if x.job["loop"] == loop and x.job["strategy"] == "base"
                     and not x.job["group_by_length"] and not x.job.get("compile")), None)

    for r in results:
        same = [x for x in results if x.seq == r.seq]
        plain, hf, base = reference(same, "plain"), reference(same, "hf"), reference(same, "sdbert")
        vs_plain = f"{r.samples_per_s / plain.samples_per_s:.2f}" if plain else "–"
        vs_hf = f"{r.samples_per_s / hf.samples_per_s:.2f}" if hf else "–"
        vs_base = f"{r.ms_per_step / base.ms_per_step:.2f}" if base and r.job["loop"] == "sdbert" else "–"
        name = r.job["strategy"] + (" +group_by_length" if r.job["group_by_length"] else "") + (
            " +compile" if r.job.get("compile") else "")
        lines.append(
            f"| {r.seq} | {r.job['loop']} | {name} | {r.samples_per_s:.1f} | {r.real_tokens_per_s:.0f} "
            f"| {r.ms_per_step:.0f} | {vs_plain} | {vs_hf} | {vs_base} | {r.first_step_s:.1f} | {r.peak_mib:.0f} "
            f"| {r.padded_over_real:.2f} |"
        )
    return "\n".join(lines)


def save(args: argparse.Namespace, info: dict[str, Any], results: list[Result]) -> None:
    """Write ``results.json`` and ``table.md`` under ``--out`` (after every job, so a cut-short run keeps its rows)."""
    if not args.out:
        return
    from sdbert.io import write_json, write_text

    write_json(args.out / "results.json", {"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                           "results": [asdict(r) for r in results]})
    write_text(args.out / "table.md", table(results) + "\n")


