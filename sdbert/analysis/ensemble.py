"""VOTE and AVG ensembles of K fine-tuned runs that differ only in their seeds (paper §3.1).

* VOTE (eq. 2): the K runs' predicted probabilities on the test set, summed; the prediction is the
  class with the highest sum. Read from each run's ``predictions/<test>.pt`` (no model is run).
* AVG (eq. 3): one model whose parameters are the mean of the K runs' fine-tuned parameters (the
  checkpoint each run was tested with), loaded into the classifier and evaluated on the same test set.

One command, on a sweep directory or on run directories::

    python -m sdbert.analysis.ensemble logs/train/multiruns/2026-01-01_12-00-00          # or: sdbert-ensemble ...
    python -m sdbert.analysis.ensemble logs/train/multiruns/table3/<time> --per-group     # one ensemble per setup

By default it combines the ``strategy=base`` runs it finds (``--strategy`` picks another) and writes
``<sweep dir>/ensemble/ensemble.json`` plus ``vote/<test>.pt`` and ``avg/<test>.pt`` (probabilities).
Runs that differ in anything but ``seed``/``data_seed`` (model, dataset, label set, strategy, any
hyper-parameter) are refused with a one-line :class:`EnsembleError`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdbert.analysis.rundirs import Run, RunDirError
from sdbert.analysis.sweeps import describe_difference, find_runs, group_runs, latest_per_seed
from sdbert.io import save_torch, write_json
from sdbert.paths import ENSEMBLE_FILE
from sdbert.strategies import Description, Vanilla


class EnsembleError(RunDirError):
    """Runs that cannot be combined into one ensemble (one line: which runs, what differs, what to do)."""


def check_members(runs: Sequence[Run]) -> None:
    """Refuse anything but ≥ 2 finished runs of one setup with distinct seeds."""
    if len(runs) < 2:
        where = f" ({runs[0].path})" if runs else ""
        raise EnsembleError(f"an ensemble needs at least 2 runs of one setup, got {len(runs)}{where}")
    for run in runs:
        if not run.ok:
            raise EnsembleError(f"run {run.path} did not finish ({run.error}); rerun it or leave it out")
    first = runs[0]
    for run in runs[1:]:
        if run.group_key != first.group_key:
            raise EnsembleError(
                f"runs differ in {describe_difference(first, run)}; VOTE/AVG combine runs that differ only in seed"
            )
    seen: dict[tuple[int, int], Run] = {}
    for run in runs:
        key = (run.seed, run.data_seed)
        if key in seen:
            raise EnsembleError(
                f"runs {seen[key].path} and {run.path} have the same seed {key[0]} and data_seed {key[1]} "
                "(the same model twice); pass one of them"
            )
        seen[key] = run


def vote(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """Eq. (2) per test set: ``probs`` (the members' mean probability, argmax as eq. 2), ``labels``, ``acc`` %."""
    import torch

    check_members(runs)
    first = runs[0]
    out: dict[str, dict[str, Any]] = {}
    for test_name in first.test_names:
        total = None
        labels = None
        for run in runs:
            pred = run.predictions(test_name)
            if list(pred["label_names"]) != first.label_names:
                raise EnsembleError(
                    f"run {run.path} predicted labels {list(pred['label_names'])}, expected {first.label_names}"
                )
            if labels is None:
                labels = pred["labels"]
            elif pred["labels"].shape != labels.shape or not torch.equal(pred["labels"], labels):
                raise EnsembleError(
                    f"runs {first.path} and {run.path} were tested on different '{test_name}' sets "
                    f"({labels.numel()} vs {pred['labels'].numel()} examples or other labels)"
                )
            probs = pred["probs"].double()
            total = probs if total is None else total + probs
        assert total is not None and labels is not None
        acc = (total.argmax(-1) == labels).double().mean().item() * 100.0
        out[test_name] = {"probs": (total / len(runs)).float(), "labels": labels, "acc": acc}
    return out


def _load_state(path: Path) -> dict[str, Any]:
    import torch

    ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not state:
        raise EnsembleError(f"{path} is not a Lightning checkpoint with a state_dict")
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


def average_parameters(runs: Sequence[Run], checkpoint: str = "tested") -> tuple[dict[str, Any], list[Path]]:
    """Eq. (3): the mean of the K runs' classifier parameters (floating-point tensors; others must agree).

    The mean is accumulated with :class:`sdbert.averaging.CumulativeMean`, so only one extra copy of
    the parameters is held, whatever K is.
    """
    import torch

    from sdbert.averaging import CumulativeMean

    check_members(runs)
    for run in runs:
        if run.method.averaged:  # the checkpoint's model weights are the student's, not what it reported
            raise EnsembleError(
                f"AVG needs the reported model's parameters, but a {run.method.title} run reports its own "
                f"running average, which its checkpoint's model weights are not ({run.path}); use --no-avg"
            )
    paths = [run.checkpoint(checkpoint) for run in runs]
    names: list[str] = []
    fixed: dict[str, Any] = {}
    mean: CumulativeMean | None = None
    for path in paths:
        state = _load_state(path)
        if mean is None:
            names = [k for k, v in state.items() if v.is_floating_point()]
            fixed = {k: v.clone() for k, v in state.items() if not v.is_floating_point()}
            mean = CumulativeMean([state[k] for k in names])
        else:
            if set(state) != set(names) | set(fixed):
                extra = sorted(set(state) ^ (set(names) | set(fixed)))[:3]
                raise EnsembleError(f"checkpoints {paths[0]} and {path} hold different parameters (e.g. {extra})")
            for k in names:
                if state[k].shape != mean.mean[names.index(k)].shape:
                    raise EnsembleError(f"parameter {k} has other shapes in {paths[0]} and {path}")
            for k, v in fixed.items():
                if not torch.equal(state[k], v):
                    raise EnsembleError(f"non-trainable tensor {k} differs between {paths[0]} and {path}")
        mean.push([state[k] for k in names])
        del state
    assert mean is not None
    averaged = dict(zip(names, mean.mean, strict=True))
    averaged.update(fixed)
    return averaged, paths


def evaluate_state(template: Run, state: dict[str, Any], out_dir: Path) -> dict[str, dict[str, Any]]:
    """Load ``state`` into the classifier of ``template``'s config and test it on the run's test set(s).

    Writes ``out_dir/<test>.pt`` (probabilities) through the module's own test loop and returns
    ``probs``, ``labels``, ``acc`` per test set.
    """
    import lightning as L
    import torch
    from omegaconf import open_dict

    from sdbert.factory import build_datamodule, build_module
    from sdbert.strategies import Vanilla

    cfg = template.config.copy()
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.test_extras = False
    module = build_module(cfg, Vanilla(), prediction_dir=out_dir)
    missing, unexpected = module.model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EnsembleError(
            f"the averaged parameters do not fit model '{cfg.model.name_or_path}' "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    datamodule = build_datamodule(cfg)
    gpu = torch.cuda.is_available() and str(cfg.trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision=cfg.trainer.precision if gpu else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out_dir,
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    out = {}
    for test_name in template.test_names:
        pred = torch.load(out_dir / f"{test_name}.pt", map_location="cpu", weights_only=True)
        acc = (pred["probs"].argmax(-1) == pred["labels"]).double().mean().item() * 100.0
        out[test_name] = {"probs": pred["probs"], "labels": pred["labels"], "acc": acc}
    return out


def build_ensembles(
    runs: Sequence[Run], out_dir: str | os.PathLike[str], checkpoint: str = "tested", avg: bool = True
) -> dict[str, Any]:
    """VOTE and (unless ``avg=False``) AVG of ``runs``; writes ``out_dir/ensemble.json`` and returns it.

    ``out_dir/vote/<test>.pt`` and ``out_dir/avg/<test>.pt`` hold the two ensembles' probabilities.
    """
    import torch

    start = time.perf_counter()
    runs = sorted(runs, key=lambda r: (r.seed, r.data_seed, str(r.path)))
    check_members(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = runs[0]
    voted = vote(runs)
    for test_name, res in voted.items():
        save_torch(out / "vote" / f"{test_name}.pt",
              {"probs": res["probs"], "labels": res["labels"], "label_names": first.label_names})
    averaged: dict[str, dict[str, Any]] = {}
    checkpoints: list[Path] = []
    if avg:
        state, checkpoints = average_parameters(runs, checkpoint)
        averaged = evaluate_state(first, state, out / "avg")
        for test_name, res in averaged.items():
            if not torch.equal(res["labels"], voted[test_name]["labels"]):
                raise EnsembleError(
                    f"the averaged model was tested on another '{test_name}' set than the runs' saved predictions "
                    "(the data or its cache changed since); rerun the runs' tests"
                )
    tests: dict[str, Any] = {}
    for test_name in first.test_names:
        members = [run.test_acc(test_name) for run in runs]
        entry: dict[str, Any] = {
            "n": int(voted[test_name]["labels"].numel()),
            "members/acc": members,
            "vote/acc": round(voted[test_name]["acc"], 6),
            "vote/err": round(100.0 - voted[test_name]["acc"], 6),
        }
        if test_name in averaged:
            entry["avg/acc"] = round(averaged[test_name]["acc"], 6)
            entry["avg/err"] = round(100.0 - averaged[test_name]["acc"], 6)
        tests[test_name] = entry
    member_checkpoints: Sequence[Path | None] = checkpoints or [None] * len(runs)
    summary: dict[str, Any] = {
        "status": "ok",
        "k": len(runs),
        "dataset": first.dataset,
        "model": first.model,
        "strategy": first.method.to_dict(),
        "group": first.group_key,
        "members": [
            {"path": str(run.path), "seed": run.seed, "data_seed": run.data_seed,
             **({"checkpoint": str(ckpt)} if avg else {})}
            for run, ckpt in zip(runs, member_checkpoints, strict=True)
        ],
        "checkpoint": checkpoint if avg else None,
        "test": tests,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    write_json(out / ENSEMBLE_FILE, summary)
    return summary


def _default_out(runs: Sequence[Run]) -> Path:
    parent = Path(os.path.commonpath([str(r.path.resolve().parent) for r in runs]))
    return parent / "ensemble"


def _line(summary: dict[str, Any], out: Path) -> str:
    seeds = ", ".join(f"{m['seed']}" for m in summary["members"])
    parts = []
    for test_name, t in summary["test"].items():
        members = " / ".join(f"{a:.2f}" for a in t["members/acc"] if a is not None)
        avg = f" · AVG {t['avg/acc']:.2f}%" if "avg/acc" in t else ""
        parts.append(f"{test_name}: members {members}% · VOTE {t['vote/acc']:.2f}%{avg}")
    label = Description.from_dict(summary["strategy"]).label
    return (f"sdbert-ensemble: {summary['dataset']} · {label} · K={summary['k']} (seeds {seeds}) · "
            f"{' · '.join(parts)} → {out / ENSEMBLE_FILE}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdbert-ensemble",
        description="VOTE (summed probabilities) and AVG (averaged parameters) ensembles of runs that differ "
        "only in seed (paper §3.1), evaluated on the runs' test set.",
    )
    p.add_argument("paths", nargs="+", help="a sweep directory (train.py -m ...) or run directories")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: <common parent of the runs>/ensemble)")
    p.add_argument("--strategy", default=Vanilla.name,
                   help=f"combine the runs of this strategy (default: {Vanilla.name}, as the paper)")
    p.add_argument("--checkpoint", choices=("tested", "best", "last"), default="tested",
                   help="which weights AVG averages (default: the ones each run was tested with)")
    p.add_argument("--no-avg", action="store_true", help="VOTE only: no checkpoints are read, no model is run")
    p.add_argument("--per-group", action="store_true",
                   help="one ensemble per setup (e.g. per dataset of a table3 sweep) instead of refusing a mix")
    p.add_argument("--skip-failed", action="store_true",
                   help="leave out runs that failed or did not finish instead of refusing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    args = _parser().parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" banners per ensemble
    try:
        return _main(args)
    except RunDirError as err:
        print(f"sdbert-ensemble: error: {err}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    found = find_runs(args.paths)
    chosen = [r for r in found.runs if r.strategy == args.strategy]
    others = sorted({r.strategy for r in found.runs} - {args.strategy})
    if others:
        n = len(found.runs) - len(chosen)
        print(f"sdbert-ensemble: not used: {n} run(s) of strategy {', '.join(others)} "
              f"(this combines --strategy {args.strategy} runs)")
    if not chosen:
        raise EnsembleError(f"no {args.strategy} runs under {', '.join(map(str, args.paths))}")
    unfinished = [r for r in chosen if not r.ok]
    if unfinished:
        listing = "; ".join(f"{r.path}: {r.error}" for r in unfinished)
        if not args.skip_failed:
            raise EnsembleError(f"{len(unfinished)} of {len(chosen)} {args.strategy} runs did not finish ({listing}); "
                                "rerun them or pass --skip-failed")
        print(f"sdbert-ensemble: left out {len(unfinished)} unfinished run(s): {listing}")
    kept, superseded = latest_per_seed([r for r in chosen if r.ok])
    for old, new in superseded:
        print(f"sdbert-ensemble: {old.path} is superseded by the newer run of the same setup and seeds {new.path}")
    groups = list(group_runs(kept).values())
    if len(groups) > 1 and not args.per_group:
        diff = describe_difference(groups[0][0], groups[1][0])
        raise EnsembleError(
            f"the runs are {len(groups)} different setups (they differ in {diff}); VOTE/AVG combine runs that "
            "differ only in seed: pass the runs of one setup, or --per-group for one ensemble per setup"
        )
    status = 0
    for members in groups:
        if len(members) < 2:
            msg = f"{members[0].describe()}: only 1 finished run, an ensemble needs at least 2"
            if not args.per_group:
                raise EnsembleError(msg)
            print(f"sdbert-ensemble: skipped {msg}")
            status = 1
            continue
        out = args.out or _default_out(members)
        if args.per_group and len(groups) > 1:
            out = out / f"{members[0].dataset}-{members[0].strategy}-{members[0].group_key}"
        summary = build_ensembles(members, out, checkpoint=args.checkpoint, avg=not args.no_avg)
        print(_line(summary, out))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
