"""A strategy from outside sdbert: ``strategy._target_=tests.plugins.shrink.Shrink``.

It uses nothing but the interface: the teacher is the student's own logits on the batch, scaled by its
own key ``factor`` (no gradient), so the distillation term pulls the logits towards ``factor`` times
themselves. What it is (name, keys, models) comes from the interface's default ``describe()``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sdbert.strategies import TeacherStrategy
from sdbert.strategies.interface import Inputs


class Shrink(TeacherStrategy):
    def __init__(self, factor: float = 0.5, distill_weight: float = 1.0) -> None:
        super().__init__(distill_weight=distill_weight)
        self.factor = float(factor)

    def teacher_logits(self, model: nn.Module, inputs: Inputs) -> Tensor | None:
        with torch.no_grad():
            return model(**inputs) * self.factor
