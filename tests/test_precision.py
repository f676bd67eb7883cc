"""fp16 mixed precision: the default recipe (AdamW + gradient clipping) runs under a gradient scaler, and
a step the scaler skips is not a time step (no snapshot enters the teacher or SE's mean).

CPU autocast in fp16 is used here through an explicit ``MixedPrecision`` plugin with a CPU
``GradScaler``; on a GPU ``trainer.precision=16-mixed`` makes the same plugin.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import MixedPrecision

from sdbert.strategies import SelfDistillationVoted, SelfEnsemble
from tests.helpers import loader
from tests.test_module import CountingSDA, _module


class InfGradientAt(Callback):
    """Puts an inf into one gradient of the micro-batch that completes optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_after_backward(self, trainer, pl_module):
        if trainer.global_step == self.step:
            next(pl_module.model.parameters()).grad.view(-1)[0] = float("inf")


def _fp16_trainer(root, callbacks=(), accumulate=1) -> L.Trainer:
    return L.Trainer(
        default_root_dir=root, accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
        accumulate_grad_batches=accumulate, callbacks=list(callbacks),
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))],
    )


def test_fp16_with_the_default_recipe_clips_and_uses_the_foreach_adamw(tmp_path):
    module = _module(SelfEnsemble())
    trainer = _fp16_trainer(tmp_path)
    trainer.fit(module, train_dataloaders=loader(n=16))  # fused AdamW + clipping would raise here
    assert trainer.global_step == 4
    assert not trainer.optimizers[0].defaults.get("fused")
    assert all(torch.isfinite(p).all() for p in module.model.parameters())


class RecordingSDA(CountingSDA):
    """Keeps a copy of the first parameter tensor at every push (θ_t as it enters the window)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.pushed: list[torch.Tensor] = []

    def before_optimizer_step(self, model):
        self.pushed.append(next(model.parameters()).detach().clone())
        super().before_optimizer_step(model)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_skipped_step_pushes_no_snapshot(tmp_path, accumulate):
    strategy = RecordingSDA(teacher_size=2, teacher_dropout=False)
    trainer = _fp16_trainer(tmp_path, [InfGradientAt(step=2)], accumulate=accumulate)
    trainer.fit(_module(strategy), train_dataloaders=loader(n=24 * accumulate))  # 6 optimizer steps
    assert trainer.precision_plugin.scaler.get_scale() < 2.0**16  # the scaler did skip a step
    assert trainer.global_step == 6 and strategy.pushes == 5
    # θ is unchanged by the skipped step: recording it there would put the same θ into the window twice
    # (from step 1 on: step 0 runs at the warm-up's learning rate 0, so θ_1 = θ_0)
    assert not any(torch.equal(a, b) for a, b in zip(strategy.pushed[1:], strategy.pushed[2:], strict=False))


def test_se_and_sdv_do_not_count_a_skipped_step(tmp_path):
    se, sdv = SelfEnsemble(), SelfDistillationVoted(teacher_size=3)
    for strategy in (se, sdv):
        trainer = _fp16_trainer(tmp_path / strategy.name, [InfGradientAt(step=1)])
        trainer.fit(_module(strategy), train_dataloaders=loader(n=20))
        assert trainer.global_step == 5
    assert se.mean.count == 4 and sdv.ring.pushes == 4
