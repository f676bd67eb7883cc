"""Lightning callbacks that belong to sdbert's method (the rest come from Lightning itself)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from sdbert.errors import TrainingDiverged


class DivergenceGuard(L.Callback):
    """Stops a run whose loss or logits run away (REFERENCE.md §3: eval-mode teachers can diverge).

    Checks every training batch: a non-finite loss, a loss above ``max_loss`` or a mean |logit|
    above ``max_abs_logit`` raises ``TrainingDiverged`` with the knobs that usually fix it.
    """

    def __init__(self, max_loss: float = 25.0, max_abs_logit: float = 50.0) -> None:
        self.max_loss = max_loss
        self.max_abs_logit = max_abs_logit

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(outputs, dict) or "loss" not in outputs:
            return
        loss = float(outputs["loss"])
        logit = float(outputs.get("logit_abs_mean", 0.0))
        if math.isfinite(loss) and loss <= self.max_loss and logit <= self.max_abs_logit:
            return
        what = (
            f"loss is {loss}" if not math.isfinite(loss) or loss > self.max_loss else f"mean |logit| is {logit:.1f}"
        )
        strategy = getattr(pl_module, "strategy", None)
        lam = getattr(strategy, "distill_weight", None)
        head_lr = getattr(pl_module, "optim", {}).get("head_lr")
        raise TrainingDiverged(
            f"training diverged at optimizer step {trainer.global_step} ({what}; bounds: loss <= {self.max_loss}, "
            f"mean |logit| <= {self.max_abs_logit}); try strategy.teacher_dropout=true, a smaller distill_weight "
            f"(now {lam}) or a smaller optim.head_lr (now {head_lr}); the bounds are "
            "callbacks.divergence_guard.max_loss / max_abs_logit"
        )
