"""The LightningModule with strategies inside a real Trainer: time steps, λ = 0, resume, guard."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from sdbert.callbacks import DivergenceGuard
from sdbert.errors import TrainingDiverged
from sdbert.module import SelfDistillationModule
from sdbert.strategies import SelfDistillationAveraged, SelfDistillationVoted, SelfEnsemble, Vanilla
from tests.helpers import loader, tiny_bert_classifier

OPTIM = {"encoder_lr": 1e-3, "head_lr": 1e-2, "weight_decay": 0.01, "warmup_proportion": 0.1}


def _module(strategy, seed: int = 0) -> SelfDistillationModule:
    return SelfDistillationModule(
        tiny_bert_classifier(seed=seed), strategy, OPTIM, label_names=["a", "b", "c"], seed=seed, prediction_dir=None
    )


def _trainer(root: Path, max_epochs: int = 1, accumulate: int = 1, callbacks=(), **kw) -> L.Trainer:
    return L.Trainer(
        default_root_dir=root, accelerator="cpu", max_epochs=max_epochs, accumulate_grad_batches=accumulate,
        logger=False, enable_progress_bar=False, enable_model_summary=False, deterministic=True,
        callbacks=list(callbacks), enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        num_sanity_val_steps=0, **kw,
    )


class Recorder(Callback):
    """Keeps each training step's outputs and the global step it belongs to."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []
        self._step = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step = trainer.global_step  # the optimizer step t this batch belongs to

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((self._step, {k: v.detach().clone() for k, v in outputs.items()}))


class CountingSDA(SelfDistillationAveraged):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.pushes = 0
        self.teachers_seen: list[tuple[int, torch.Tensor]] = []

    def before_optimizer_step(self, model):
        self.pushes += 1
        super().before_optimizer_step(model)

    def teacher_logits(self, model, inputs):
        if self.has_teacher:
            self.teachers_seen.append((self.pushes, self.teacher_parameters()[0].detach().clone()))
        return super().teacher_logits(model, inputs)


def test_teacher_advances_once_per_optimizer_step(tmp_path):
    strategy = CountingSDA(teacher_size=2, teacher_dropout=False)
    trainer = _trainer(tmp_path, max_epochs=2, accumulate=4)
    trainer.fit(_module(strategy), train_dataloaders=loader(n=32, batch_size=2))  # 16 micro-batches per epoch
    assert trainer.global_step == 8
    assert strategy.pushes == 8
    # within one optimizer step (4 micro-batches) the teacher does not move
    by_step: dict[int, list[torch.Tensor]] = {}
    for pushes, param in strategy.teachers_seen:
        by_step.setdefault(pushes, []).append(param)
    assert len(by_step) == 7 and all(len(v) == 4 for v in by_step.values())
    for params in by_step.values():
        assert all(torch.equal(params[0], p) for p in params)


def test_first_step_has_no_distillation_term(tmp_path):
    recorder = Recorder()
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[recorder])
    trainer.fit(_module(SelfDistillationAveraged(teacher_size=1)), train_dataloaders=loader(n=16))
    first_step, first = recorder.rows[0]
    assert first_step == 0 and "mse" not in first and torch.equal(first["loss"], first["ce"])
    assert all("mse" in out for _, out in recorder.rows[1:])
    later = recorder.rows[-1][1]
    assert torch.allclose(later["loss"], later["ce"] + later["mse"])


def _loud(cls):
    """``cls`` with 100 added to its distillation term: same gradients, and (loss − CE) / term resolves λ_t
    in float32 (the real term is ~1e-4 next to a CE of ~1.1)."""
    return type("Loud" + cls.__name__, (cls,), {"distill_term": lambda self, a, b: cls.distill_term(self, a, b) + 100})


@pytest.mark.parametrize("make", [lambda: _loud(SelfDistillationAveraged)(teacher_size=1, distill_warmup=0.5),
                                  lambda: _loud(SelfDistillationVoted)(teacher_size=2, distill_warmup=0.5,
                                                                       distill_target="probabilities")])
def test_distill_warmup_ramps_lambda_over_the_fit(tmp_path, make):
    """λ_t = λ · t / (w · T) for t < w · T, then λ; the term is logged under the strategy's key."""
    recorder, strategy = Recorder(), make()
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[recorder])
    trainer.fit(_module(strategy), train_dataloaders=loader(n=16, batch_size=2))  # 2 x 8 = 16 steps
    key = strategy.distill_key
    assert key == ("mse" if strategy.distill_target == "logits" else "kl")
    weights = {}
    for t, out in recorder.rows[1:]:
        weights[t] = float((out["loss"] - out["ce"]) / out[key])
    assert sorted(weights) == list(range(1, 16))
    for t, w in weights.items():
        assert w == pytest.approx(min(1.0, t / 8), rel=1e-4), t


def _final_params(module: SelfDistillationModule) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.model.parameters()]


def test_lambda_zero_reproduces_base_exactly(tmp_path):
    runs = []
    for strategy in (Vanilla(), SelfDistillationAveraged(teacher_size=2, distill_weight=0.0)):
        module = _module(strategy)
        _trainer(tmp_path / strategy.name, max_epochs=2).fit(module, train_dataloaders=loader(n=16))
        runs.append(_final_params(module))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    # and λ > 0 does change the trajectory (so the comparison above can fail)
    module = _module(SelfDistillationAveraged(teacher_size=2, distill_weight=1.0))
    _trainer(tmp_path / "sda1", max_epochs=2).fit(module, train_dataloaders=loader(n=16))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], _final_params(module), strict=True))


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


@pytest.mark.parametrize("make", [lambda: SelfDistillationAveraged(teacher_size=2),
                                  lambda: SelfDistillationAveraged(teacher_size="all"),
                                  lambda: SelfDistillationVoted(teacher_size=3),
                                  lambda: SelfEnsemble()])
def test_resume_equals_uninterrupted(tmp_path, make):
    full = _module(make())
    _trainer(tmp_path / "full", max_epochs=2, accumulate=2).fit(full, train_dataloaders=loader(n=24))

    ckpt_dir = tmp_path / "ckpt"
    first = _module(make())
    _trainer(tmp_path / "a", max_epochs=2, accumulate=2,
             callbacks=[StopAfterFirstEpoch(), ModelCheckpoint(dirpath=ckpt_dir, save_last=True)]).fit(
        first, train_dataloaders=loader(n=24))
    assert (ckpt_dir / "last.ckpt").exists()
    assert not all(torch.equal(a, b) for a, b in zip(_final_params(first), _final_params(full), strict=True))

    resumed = _module(make(), seed=0)
    trainer = _trainer(tmp_path / "b", max_epochs=2, accumulate=2, callbacks=[ModelCheckpoint(dirpath=tmp_path / "c")])
    trainer.fit(resumed, train_dataloaders=loader(n=24), ckpt_path=ckpt_dir / "last.ckpt")
    assert trainer.global_step == 6
    assert all(torch.equal(a, b) for a, b in zip(_final_params(resumed), _final_params(full), strict=True))
    # the teacher state came back too: the evaluated models agree bit for bit
    x = {"input_ids": torch.randint(1, 64, (3, 8))}
    full.eval(), resumed.eval()
    for key, value in full.strategy.eval_logits(full.model, x).items():
        assert torch.equal(resumed.strategy.eval_logits(resumed.model, x)[key], value)


def test_divergence_guard_stops_a_runaway(tmp_path):
    trainer = _trainer(tmp_path, callbacks=[DivergenceGuard(max_loss=25.0, max_abs_logit=1e-6)])
    with pytest.raises(TrainingDiverged, match="teacher_dropout") as info:
        trainer.fit(_module(SelfDistillationAveraged(teacher_size=1)), train_dataloaders=loader(n=8))
    assert "\n" not in str(info.value)


def test_divergence_guard_catches_non_finite_loss(tmp_path):
    guard = DivergenceGuard()

    class Fake:
        global_step = 3

    with pytest.raises(TrainingDiverged, match="loss is nan"):
        guard.on_train_batch_end(Fake(), object(), {"loss": torch.tensor(float("nan"))}, None, 0)
    healthy = {"loss": torch.tensor(0.5), "logit_abs_mean": torch.tensor(2.0)}
    guard.on_train_batch_end(Fake(), object(), healthy, None, 0)  # no error


def test_optimizer_groups_follow_the_recipe(tmp_path):
    module = _module(Vanilla())
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(module, train_dataloaders=loader(n=40))  # 10 optimizer steps → 1 warm-up step
    opt = trainer.optimizers[0]
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"encoder", "encoder_no_decay", "head", "head_no_decay"}
    assert groups["encoder"]["weight_decay"] == 0.01 and groups["encoder_no_decay"]["weight_decay"] == 0.0
    assert groups["head"]["initial_lr"] == OPTIM["head_lr"] and groups["encoder"]["initial_lr"] == OPTIM["encoder_lr"]
    assert all(p.ndim == 1 for p in groups["encoder_no_decay"]["params"])  # bias and LayerNorm
    assert groups["encoder"]["lr"] == pytest.approx(0.0, abs=1e-12)  # linear decay reached 0 at the last step


def test_divergence_guard_sees_the_unscaled_loss_under_accumulation(tmp_path):
    """Lightning scales the returned loss by 1/accumulate; the guard's bound applies to the real loss."""
    recorder = Recorder()
    trainer = _trainer(tmp_path, accumulate=4, callbacks=[recorder])
    trainer.fit(_module(Vanilla()), train_dataloaders=loader(n=16))
    for _, out in recorder.rows:
        assert torch.allclose(out["loss_value"], out["ce"])
    guard = DivergenceGuard(max_loss=0.75 * float(recorder.rows[0][1]["ce"]))
    with pytest.raises(TrainingDiverged, match="loss is"):
        guard.on_train_batch_end(trainer, object(), recorder.rows[0][1], None, 0)


class CapturingLogger(Logger):
    """Keeps every (step, metrics) the trainer logs."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    @property
    def name(self) -> str:
        return "capture"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, dict(metrics)))


def test_training_terms_are_logged_once_per_optimizer_step_as_window_means(tmp_path):
    recorder, logger = Recorder(), CapturingLogger()
    trainer = L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", max_epochs=1, accumulate_grad_batches=4, logger=logger,
        log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        callbacks=[recorder],
    )
    trainer.fit(_module(SelfDistillationAveraged(teacher_size=1)), train_dataloaders=loader(n=32, batch_size=2))
    logged = {step: m for step, m in logger.rows if "train/ce" in m}
    assert sorted(logged) == list(range(4))  # 16 micro-batches / 4 = 4 optimizer steps, one row each
    for step, metrics in logged.items():
        window = [out for t, out in recorder.rows if t == step]
        assert len(window) == 4
        assert metrics["train/ce"] == pytest.approx(float(torch.stack([o["ce"] for o in window]).mean()), rel=1e-6)
        if step == 0:
            assert "train/mse" not in metrics  # no teacher at t = 0
        else:
            mse = float(torch.stack([o["mse"] for o in window]).mean())
            assert metrics["train/mse"] == pytest.approx(mse, rel=1e-6)
            assert metrics["train/loss"] == pytest.approx(metrics["train/ce"] + mse, rel=1e-5)
