"""The LightningModule: the paper's recipe around a classifier and a pluggable teacher strategy.

loss = CE(student, y) + λ·MSE(student logits, teacher logits) when the strategy has a teacher;
everything teacher-specific (what it is, when it advances, what is evaluated, what is saved) is
delegated to the strategy object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from sdbert import recipe
from sdbert.classifier import SequenceClassifier
from sdbert.io import save_torch
from sdbert.strategies import REPORTED, TeacherStrategy, metric_key

STRATEGY_STATE_KEY = "sdbert_strategy"
#: batch keys that are not model inputs: the label ids and each example's row in its raw split
NON_INPUTS = ("labels", "row")
#: the metrics logged for every evaluated model (percent): ``val/acc``, ``val/f1`` (macro-F1), ...
EVAL_METRICS = ("acc", "f1")


class SelfDistillationModule(L.LightningModule):
    """Fine-tunes ``model`` with the paper's recipe (§4.2) under ``strategy``.

    Args:
        model: encoder + softmax layer (eq. 1).
        strategy: the teacher strategy (base, se, sda, sdv).
        optim: ``encoder_lr``, ``head_lr``, ``weight_decay``, ``warmup_proportion``, ``adam_eps``, ``betas``.
        label_names: the dataset's label set (its size is the number of classes).
        test_names: one name per test dataloader (e.g. ``test`` or ``test_matched``/``test_mismatched``).
        seed: with (epoch, batch) it seeds each batch's dropout, so a resumed run repeats exactly.
        prediction_dir: where test-set probabilities are written (for VOTE); None to skip.
        test_extras: also test the strategy's other models (teacher, student beside SE's average); they
            are always evaluated on the validation set.
    """

    def __init__(
        self,
        model: SequenceClassifier,
        strategy: TeacherStrategy,
        optim: Mapping[str, Any],
        label_names: Sequence[str],
        test_names: Sequence[str] = ("test",),
        seed: int = 0,
        prediction_dir: str | Path | None = None,
        test_extras: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "strategy", "prediction_dir"])
        self.model = model
        self.strategy = strategy
        self.optim = dict(optim)
        self.label_names = list(label_names)
        self.test_names = list(test_names)
        self.seed = seed
        self.prediction_dir = Path(prediction_dir) if prediction_dir is not None else None
        self.test_extras = test_extras
        n = len(self.label_names)
        self.metrics = nn.ModuleDict(
            {
                self._metric_id(stage, name, metric): (
                    MulticlassAccuracy(num_classes=n, average="micro")
                    if metric == "acc"
                    else MulticlassF1Score(num_classes=n, average="macro")
                )
                for stage in ["val", *self.test_names]
                for name in strategy.eval_names
                for metric in EVAL_METRICS
            }
        )
        self._predictions: dict[str, list[Tensor]] = {}
        # sums of the training terms over the current optimizer step's micro-batches (see _log_step_means)
        self._step_sums: dict[str, Tensor] = {}
        self._step_batches = 0
        self._total_steps = 1  # optimizer steps of the whole fit (set at train start; λ warm-up needs it)
        self._skipping_step = False

    @staticmethod
    def _metric_id(stage: str, name: str, metric: str) -> str:
        return f"{stage}__{name}__{metric}"

    @staticmethod
    def _split(batch: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        inputs = {k: v for k, v in batch.items() if k not in NON_INPUTS}
        return inputs, batch["labels"]

    def _metric(self, stage: str, name: str, metric: str) -> Metric:
        return cast(Metric, self.metrics[self._metric_id(stage, name, metric)])

    def forward(self, **inputs: Tensor) -> Tensor:
        return cast(Tensor, self.model(**inputs))

    # -- strategy life cycle ----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.strategy.setup(self.model)

    def on_validation_start(self) -> None:
        self.strategy.setup(self.model)

    def on_test_start(self) -> None:
        self.strategy.setup(self.model)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout noise depends only on (seed, epoch, batch): nothing else that draws from the global
        # generator (data loader workers, loggers) shifts it, and a resumed run repeats it exactly.
        torch.manual_seed(hash((self.seed, self.current_epoch, batch_idx)) & 0x7FFF_FFFF_FFFF_FFFF)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self._log_step_means()
        # A step the fp16 gradient scaler skips (inf/nan gradients) is not a time step: θ_t is not recorded.
        self._skipping_step = self._scaler_skips_step()
        if not self._skipping_step:
            self.strategy.before_optimizer_step(self.model)

    def _grad_scaler(self) -> Any:
        """The precision plugin's ``GradScaler`` (``precision=16-mixed``), or None."""
        try:
            plugin = self.trainer.precision_plugin
        except RuntimeError:  # not attached to a trainer
            return None
        return getattr(plugin, "scaler", None)

    def _scaler_skips_step(self) -> bool:
        """Whether the gradient scaler (``precision=16-mixed``) will skip this optimizer step.

        ``GradScaler.step`` skips exactly when an unscaled gradient is inf or nan; Lightning has unscaled
        them before this hook (to clip), so the same test is made on the gradients here.
        """
        scaler = self._grad_scaler()
        if scaler is None or not scaler.is_enabled():
            return False
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return bool(grads) and not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))

    def _log_step_means(self) -> None:
        """Log train/loss, train/ce, train/mse (train/kl with ``distill_target=probabilities``) and
        train/logit_abs_mean once per optimizer step (time step t), each the mean over the step's
        micro-batches (with gradient accumulation there are several)."""
        if not self._step_batches:
            return
        for key, total in self._step_sums.items():
            self.log(
                f"train/{key}", total / self._step_batches, on_step=True, on_epoch=False, prog_bar=key == "loss",
                sync_dist=True,  # the mean over ranks under data parallelism (a no-op on one device)
            )
        self._step_sums, self._step_batches = {}, 0

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if not self._skipping_step:
            self.strategy.after_optimizer_step(self.model)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STRATEGY_STATE_KEY] = self.strategy.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if STRATEGY_STATE_KEY in checkpoint:
            self.strategy.load_state_dict(checkpoint[STRATEGY_STATE_KEY])

    # -- training ---------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        inputs, labels = self._split(batch)
        logits = self.model(**inputs)
        ce = F.cross_entropy(logits.float(), labels)
        loss = ce
        out = {"ce": ce.detach(), "logit_abs_mean": logits.detach().abs().mean()}
        teacher = self.strategy.teacher_logits(self.model, inputs)
        if teacher is not None:
            term = self.strategy.distill_term(logits, teacher)
            loss = ce + self.strategy.weight_at(self.global_step, self._total_steps) * term
            out[self.strategy.distill_key] = term.detach()
        out["loss"] = loss
        for key in ("loss", "ce", self.strategy.distill_key, "logit_abs_mean"):
            if key in out:
                self._step_sums[key] = self._step_sums.get(key, 0.0) + out[key].detach()
        self._step_batches += 1
        # Lightning divides out["loss"] by accumulate_grad_batches before callbacks see it; keep the real value
        out["loss_value"] = loss.detach()
        return out

    # -- evaluation -------------------------------------------------------------------------------
    def eval_batch(self, batch: Mapping[str, Tensor], extras: bool = True) -> tuple[dict[str, Tensor], Tensor]:
        """Logits of the evaluated models (``strategy.eval_names``, ``REPORTED`` first) and the labels."""
        inputs, labels = self._split(batch)
        return self.strategy.eval_logits(self.model, inputs, extras=extras), labels

    @torch.no_grad()
    def evaluate(self, dataloader: Iterable[Mapping[str, Tensor]], extras: bool = True) -> dict[str, float]:
        """Accuracy (%) of the evaluated models (the reported one only, unless ``extras``) on ``dataloader``,
        outside Lightning's loops.

        For callbacks (e.g. a test-set pass at each epoch end): eval mode, this module's device, logs
        nothing, leaves the train/eval mode and the torchmetrics states as they were.
        """
        from lightning.fabric.utilities import move_data_to_device

        was_training = self.training
        self.eval()
        correct: dict[str, int] = {}
        total = 0
        try:
            for batch in dataloader:
                logits, labels = self.eval_batch(move_data_to_device(batch, self.device), extras=extras)
                for name, value in logits.items():
                    correct[name] = correct.get(name, 0) + int((value.argmax(-1) == labels).sum())
                total += labels.numel()
        finally:
            self.train(was_training)
        return {name: 100.0 * n / total for name, n in correct.items()} if total else {}

    def _eval_step(self, stage: str, batch: Mapping[str, Tensor]) -> None:
        logits, labels = self.eval_batch(batch, extras=stage == "val" or self.test_extras)
        for name, value in logits.items():
            for metric in EVAL_METRICS:
                self._metric(stage, name, metric).update(value.float(), labels)
        if stage != "val" and self.prediction_dir is not None:
            self._predictions.setdefault(stage, []).append(torch.softmax(logits[REPORTED].float(), -1).cpu())
            self._predictions.setdefault(f"{stage}__labels", []).append(labels.cpu())
            if "row" in batch:
                self._predictions.setdefault(f"{stage}__rows", []).append(batch["row"].cpu())

    def _log_stage(self, stage: str) -> None:
        for name in self.strategy.eval_names:
            acc_metric = self._metric(stage, name, "acc")
            if not acc_metric.update_called:
                continue
            acc = acc_metric.compute() * 100.0
            self.log(metric_key(stage, name, "acc"), acc, prog_bar=name == REPORTED, add_dataloader_idx=False)
            self.log(metric_key(stage, name, "err"), 100.0 - acc, add_dataloader_idx=False)
            f1_metric = self._metric(stage, name, "f1")
            self.log(metric_key(stage, name, "f1"), f1_metric.compute() * 100.0, add_dataloader_idx=False)
            acc_metric.reset()
            f1_metric.reset()

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_stage("val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(self.test_names[dataloader_idx], batch)

    def on_test_epoch_start(self) -> None:
        self._predictions = {}

    def on_test_epoch_end(self) -> None:
        for stage in self.test_names:
            self._log_stage(stage)
            if self.prediction_dir is not None and stage in self._predictions:
                self._save_predictions(stage)

    def _save_predictions(self, stage: str) -> None:
        """Test-set probabilities of the reported model, for voted ensembles (eq. 2) and for users.

        In evaluation (length) order; ``rows[i]`` is example i's row index in the raw test split (the
        dataset's split as loaded: a hub split, a local file's data rows, the embedded copy), so the
        predictions join back to the user's data.

        Every rank evaluates the whole test set in the same order (no distributed sampler on evaluation
        sets), so rank 0's predictions are complete and it alone writes them.
        """
        assert self.prediction_dir is not None
        if not self.trainer.is_global_zero:
            return
        self.prediction_dir.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {
            "probs": torch.cat(self._predictions[stage]),
            "labels": torch.cat(self._predictions[f"{stage}__labels"]),
            "label_names": self.label_names,
        }
        if f"{stage}__rows" in self._predictions:
            out["rows"] = torch.cat(self._predictions[f"{stage}__rows"])
        save_torch(self.prediction_dir / f"{stage}.pt", out)

    # -- optimisation (§4.2) ----------------------------------------------------------------------
    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW with two learning rates (encoder, softmax layer), no decay on bias/LayerNorm,
        linear warm-up over the first ``warmup_proportion`` of optimizer steps, then linear decay."""
        # the fused kernel does the whole update in one pass (CPU and CUDA; README "Measured"). Under fp16's
        # gradient scaler a fused AdamW unscales internally, so Lightning cannot clip its gradients: there
        # the multi-tensor (foreach) AdamW runs instead, clipped after unscaling.
        fused = self.device.type in ("cpu", "cuda") and self._grad_scaler() is None
        optimizer, schedule = recipe.optimizer_and_schedule(self.model, self.optim, fused=fused)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        # The schedule's length is read here, after a checkpoint's loops and data loader state are restored:
        # asking Lightning for it in configure_optimizers would build the training data loader before the
        # restore, and Lightning would then never load the saved loader position (Lightning issue #20550).
        total = int(self.trainer.estimated_stepping_batches)
        self._total_steps = total
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            for schedule in getattr(scheduler, "lr_lambdas", []):
                if isinstance(schedule, recipe.LinearSchedule):
                    schedule.total = total
            if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                for group, base, factor in zip(
                    scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
                ):
                    group["lr"] = base * factor(scheduler.last_epoch)
