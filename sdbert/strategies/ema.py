"""EMA: self-distillation from an exponential moving average of the student's parameters.

The teacher of lonePatient/BERT-SDA's variant: loss = CE(student, y) + λ·MSE(student logits, teacher
logits) as in SDA (eq. 5), with the teacher's parameters

    θ̄ ← θ_0 at the first step, then θ̄ ← decay · θ̄ + (1 − decay) · θ_t

recorded with θ_t before each optimizer step, so the teacher at step t is built from θ_0 … θ_{t−1}
(never θ_t) and at t = 0 there is no teacher. ``decay`` = 0 is SDA with K = 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from sdbert.errors import ConfigError
from sdbert.strategies.interface import REPORTED, AveragedTeacher, TeacherStrategy, frozen_copy, parameters_of


def parse_decay(value: Any) -> float:
    """``strategy.decay`` as a float in [0, 1)."""
    try:
        decay = float(value)
    except (TypeError, ValueError):
        decay = float("nan")
    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"strategy.decay must be a number in [0, 1) (got {value!r}); e.g. strategy.decay=0.99")
    return decay


class ExponentialMovingAverage(AveragedTeacher, TeacherStrategy):
    """EMA: the teacher is a frozen copy of the model whose parameters are the moving average θ̄."""

    name: ClassVar[str] = "ema"
    eval_names: ClassVar[tuple[str, ...]] = (REPORTED, "teacher")

    def __init__(self, decay: float = 0.99, distill_weight: float = 1.0, teacher_dropout: bool = True) -> None:
        super().__init__(distill_weight=distill_weight, teacher_dropout=teacher_dropout)
        self.decay = parse_decay(decay)
        self.teacher: nn.Module | None = None
        self.count = 0  # steps recorded in θ̄

    def _allocate(self, model: nn.Module) -> None:
        self.teacher = frozen_copy(model)
        self._student = parameters_of(model)
        self._teacher = parameters_of(self.teacher)
        self.count = 0

    @property
    def has_teacher(self) -> bool:
        return self.count > 0

    @torch.no_grad()
    def before_optimizer_step(self, model: nn.Module) -> None:
        assert self.teacher is not None, "setup() was not called"
        if self.count == 0:
            torch._foreach_copy_(self._teacher, self._student)
        else:
            torch._foreach_lerp_(self._teacher, self._student, 1.0 - self.decay)
        self.count += 1

    def _state(self) -> dict[str, Any]:
        return {"count": self.count, "teacher": [t.detach().clone() for t in self._teacher]}

    def _load(self, state: dict[str, Any]) -> None:
        torch._foreach_copy_(self._teacher, [t.to(self._teacher[0].device) for t in state["teacher"]])
        self.count = int(state["count"])
