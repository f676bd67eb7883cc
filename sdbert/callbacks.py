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
        loss = float(outputs.get("loss_value", outputs["loss"]))  # "loss" is scaled by 1/accumulation
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


class EpochTestEvaluation(L.Callback):
    """Evaluates the test set(s) at the end of every ``every_n_epochs``-th training epoch (paper Fig. 5).

    Logs ``epoch_<test name>/err`` and ``/acc`` for the reported model (``epoch_test/err``) and, with
    ``extras=True``, for the strategy's other model too (``epoch_test/teacher/err``; SDV's voted teacher
    costs K forward passes), through the module's own
    :meth:`~sdbert.module.SelfDistillationModule.evaluate`. Training is not affected: the pass runs in
    eval mode, without gradients and without drawing random numbers. It costs one test-set pass per
    epoch, so it is off by default (``callbacks=with_epoch_test``).
    """

    def __init__(self, every_n_epochs: int = 1, extras: bool = False) -> None:
        if int(every_n_epochs) < 1:
            from sdbert.errors import ConfigError

            raise ConfigError(f"callbacks.epoch_test.every_n_epochs must be >= 1 (got {every_n_epochs})")
        self.every_n_epochs = int(every_n_epochs)
        self.extras = bool(extras)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from sdbert.module import metric_key

        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise RuntimeError("EpochTestEvaluation needs trainer.fit(..., datamodule=...) to reach the test set")
        datamodule.setup("test")
        loaders = datamodule.test_dataloader()
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        names = list(getattr(pl_module, "test_names", None) or [f"test{i}" for i in range(len(loaders))])
        with trainer.precision_plugin.test_step_context():
            for name, loader in zip(names, loaders, strict=True):
                for model_name, acc in pl_module.evaluate(loader, extras=self.extras).items():
                    for metric, value in (("acc", acc), ("err", 100.0 - acc)):
                        pl_module.log(metric_key(f"epoch_{name}", model_name, metric), value, on_epoch=True)
