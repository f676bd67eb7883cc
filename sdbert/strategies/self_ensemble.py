"""SE (eq. 4): the equal-weight average of θ_1 … θ_T of one run is the evaluated model."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from sdbert.averaging import CumulativeMean
from sdbert.strategies.interface import REPORTED, Inputs, TeacherStrategy, frozen_copy, parameters_of


class SelfEnsemble(TeacherStrategy):
    """Trains like BASE; validation, test and the "best" checkpoint use the running parameter average.

    θ_τ is recorded after every optimizer step, so the average covers θ_1 … θ_t (not the initial
    θ_0). Before the first step the averaged model is θ_0. The student is evaluated beside it.
    """

    name: ClassVar[str] = "se"
    eval_names: ClassVar[tuple[str, ...]] = (REPORTED, "student")
    reports_average: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__(distill_weight=0.0)
        self.average_model: nn.Module | None = None
        self.mean: CumulativeMean | None = None

    def _allocate(self, model: nn.Module) -> None:
        self.average_model = frozen_copy(model)
        self._student = parameters_of(model)
        self.mean = CumulativeMean(self._student, storage=parameters_of(self.average_model))

    def after_optimizer_step(self, model: nn.Module) -> None:
        assert self.mean is not None, "setup() was not called"
        self.mean.push(self._student)

    def eval_logits(self, model: nn.Module, inputs: Inputs, extras: bool = True) -> dict[str, Tensor]:
        assert self.average_model is not None, "setup() was not called"
        self.average_model.eval()
        out = {REPORTED: self.average_model(**inputs)}
        if extras:
            out["student"] = model(**inputs)
        return out

    def eval_model(self, model: nn.Module, name: str = REPORTED) -> nn.Module | None:
        return {REPORTED: self.average_model, "student": model}.get(name)

    def _state(self) -> dict[str, Any]:
        assert self.mean is not None
        return {"mean": self.mean.state_dict()}

    def _load(self, state: dict[str, Any]) -> None:
        assert self.mean is not None
        self.mean.load_state_dict(state["mean"])
