"""When has a run plateaued? The first epoch at which its mean training cross-entropy is at most
``ce_max``, or its validation accuracy has stayed within ``tolerance`` points (max − min) over the last
``window`` epochs — whichever comes first. This is how a run length is chosen from one gated BASE run
(``callbacks=plateau_gate`` stops it; docs/experiments.md "Past the plateau") without looking at the
test set.

    python -m sdbert.analysis.plateau RUN_DIR [--ce-max 0.3] [--window 3] [--tolerance 0.5]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sdbert.analysis.report.curves import run_epochs
from sdbert.analysis.rundirs import RunDirError, load_run

CE_MAX = 0.3
WINDOW = 3
TOLERANCE = 0.5


@dataclass(frozen=True)
class Gate:
    """The first plateaued epoch (1-based) and which criterion it met, or None when none was met."""

    epoch: int | None
    reason: str


def gate_epoch(ce: Mapping[int, float], val_acc: Mapping[int, float], ce_max: float = CE_MAX,
               window: int = WINDOW, tolerance: float = TOLERANCE) -> Gate:
    """The gate over per-epoch training CE (epoch mean) and validation accuracy (%), both keyed by epoch."""
    for epoch in sorted(set(ce) | set(val_acc)):
        if epoch in ce and ce[epoch] <= ce_max:
            return Gate(epoch, f"training CE {ce[epoch]:.3f} <= {ce_max:g}")
        last = [val_acc.get(e) for e in range(epoch - window + 1, epoch + 1)]
        if epoch >= window and all(v is not None for v in last):
            values = [v for v in last if v is not None]
            if max(values) - min(values) <= tolerance:
                return Gate(epoch, f"validation accuracy within {max(values) - min(values):.2f} points "
                                   f"over epochs {epoch - window + 1}-{epoch}")
    return Gate(None, f"neither criterion met in {len(set(ce) | set(val_acc))} epochs")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sdbert.analysis.plateau", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory that validated every epoch")
    p.add_argument("--ce-max", type=float, default=CE_MAX)
    p.add_argument("--window", type=int, default=WINDOW)
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="points of validation accuracy")
    args = p.parse_args(argv)
    try:
        run = load_run(args.run)
    except RunDirError as err:
        print(f"sdbert plateau: error: {err}", file=sys.stderr)
        return 1
    epochs = run_epochs(run, "val/err")
    val = {e: 100.0 - v for e, v in epochs["error"].items()}
    if not val:
        print(f"sdbert plateau: error: {run.path} logged no val/err per epoch; validate every epoch "
              "(trainer.check_val_every_n_epoch=1)", file=sys.stderr)
        return 1
    print("epoch  train CE  val acc %")
    for e in sorted(set(val) | set(epochs["ce"])):
        ce = f"{epochs['ce'][e]:.3f}" if e in epochs["ce"] else "-"
        print(f"{e:>5}  {ce:>8}  {val[e]:.2f}" if e in val else f"{e:>5}  {ce:>8}  -")
    gate = gate_epoch(epochs["ce"], val, args.ce_max, args.window, args.tolerance)
    print(f"plateau: epoch {gate.epoch} ({gate.reason})" if gate.epoch else f"plateau: not reached ({gate.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
