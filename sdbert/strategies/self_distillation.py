"""Self-distillation: loss = CE(student, y) + λ·MSE(student logits, teacher logits), eq. (5)/(7).

The teacher at step t is built from θ_{t−1} … θ_{t−K} (never θ_t): SDA averages those parameters
(eq. 6), SDV averages the logits of those K snapshots (eq. 7). With fewer than K previous steps the
teacher uses those available; at t = 0 there is no teacher and no distillation term.

Two departures from the paper, off by default, for stabilising a teacher without dropout
(docs/experiments.md "The teacher's mode"): ``distill_target=probabilities`` replaces the MSE of the
logits by KL(teacher ‖ student) of the softmax outputs (Hinton et al.'s distillation at temperature 1),
and ``distill_warmup=w`` raises λ linearly from 0 over the first fraction w of the optimizer steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from sdbert.averaging import CumulativeMean, ParameterRing, WindowMean
from sdbert.errors import ConfigError
from sdbert.strategies.interface import (
    REPORTED,
    AveragedTeacher,
    Inputs,
    TeacherStrategy,
    frozen_copy,
    parameters_of,
    parse_teacher_size,
    train_mode,
)

#: ``distill_target`` values: what the distillation term compares
DISTILL_TARGETS = ("logits", "probabilities")


def parse_distill_target(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in DISTILL_TARGETS:
        raise ConfigError(
            f"strategy.distill_target must be logits (the paper: MSE of the logits) or probabilities "
            f"(KL of the softmax outputs); got {value!r}"
        )
    return text


def parse_distill_warmup(value: Any) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(
            f"strategy.distill_warmup must be a fraction of the training steps in [0, 1] (got {value!r}); "
            "0 keeps λ from the first step, as the paper"
        )
    return fraction


class _SelfDistillation(TeacherStrategy):
    eval_names: ClassVar[tuple[str, ...]] = (REPORTED, "teacher")

    def __init__(
        self,
        teacher_size: Any = 1,
        distill_weight: float = 1.0,
        teacher_dropout: bool = True,
        distill_target: str = "logits",
        distill_warmup: float = 0.0,
    ) -> None:
        super().__init__(distill_weight=distill_weight, teacher_dropout=teacher_dropout)
        self.teacher_size = parse_teacher_size(teacher_size)
        self.distill_target = parse_distill_target(distill_target)
        self.distill_warmup = parse_distill_warmup(distill_warmup)
        self.distill_key = "mse" if self.distill_target == "logits" else "kl"

    def distill_term(self, logits: Tensor, teacher: Tensor) -> Tensor:
        if self.distill_target == "logits":
            return super().distill_term(logits, teacher)
        student_log_p, teacher_log_p = F.log_softmax(logits.float(), -1), F.log_softmax(teacher.float(), -1)
        return F.kl_div(student_log_p, teacher_log_p, reduction="batchmean", log_target=True)

    def weight_at(self, step: int, total_steps: int) -> float:
        ramp = self.distill_warmup * total_steps
        return self.distill_weight if step >= ramp else self.distill_weight * step / ramp

    @property
    def has_teacher(self) -> bool:
        """False at t = 0 (no previous step recorded yet)."""
        raise NotImplementedError

    def key_value(self, key: str) -> Any:
        if key == "teacher_size" and self.teacher_size is None:
            return "all"
        return super().key_value(key)

    def qualifier(self, key: str, value: Any) -> str:
        """The paper's words: ``λ=0.5``, ``eval-mode teacher``, ``KL of probabilities``, ``λ warm-up 10%``."""
        if key == "distill_weight":
            return f"λ={float(value):g}"
        if key == "teacher_dropout":
            return "teacher with dropout" if value else "eval-mode teacher"
        if key == "distill_target":
            return f"KL of {value}" if value == "probabilities" else f"MSE of {value}"
        if key == "distill_warmup":
            return f"λ warm-up {float(value):.0%}"
        return super().qualifier(key, value)


class SelfDistillationAveraged(AveragedTeacher, _SelfDistillation):
    """SDA: the teacher's parameters are the mean of the K previous optimizer steps' parameters.

    K = ``all`` keeps a cumulative mean of every previous step in O(1) extra memory; a finite K keeps a
    ring of K snapshots plus their running sum. The mean lives in a frozen copy of the model.
    """

    name: ClassVar[str] = "sda"
    # set by setup() (_allocate)
    teacher: nn.Module | None = None
    average: WindowMean | CumulativeMean | None = None

    def _allocate(self, model: nn.Module) -> None:
        self.teacher = frozen_copy(model)
        self._student = parameters_of(model)
        self._teacher = parameters_of(self.teacher)
        if self.teacher_size is None:
            self.average = CumulativeMean(self._student, storage=self._teacher)
        else:
            self.average = WindowMean(self._student, self.teacher_size)

    @property
    def has_teacher(self) -> bool:
        return self.average is not None and self.average.count > 0

    def before_optimizer_step(self, model: nn.Module) -> None:
        assert self.average is not None and self.teacher is not None, "setup() was not called"
        self.average.push(self._student)
        self.average.write_mean(self._teacher)

    def _state(self) -> dict[str, Any]:
        assert self.average is not None
        return {"average": self.average.state_dict()}

    def _load(self, state: dict[str, Any]) -> None:
        assert self.average is not None and self.teacher is not None
        self.average.load_state_dict(state["average"])
        self.average.write_mean(self._teacher)


class StackedRing(ParameterRing):
    """A :class:`ParameterRing` whose K slots are views into one ``(K, *shape)`` tensor per parameter.

    Pushes, ``snapshots()`` and the checkpoint format are the ring's; ``stacked()`` hands the held
    snapshots to ``torch.func.vmap`` as they lie in memory (no per-step ``torch.stack`` copy).
    """

    def __init__(self, like: Sequence[Tensor], size: int) -> None:  # allocates once, unlike super().__init__
        if size < 1:
            raise ValueError(f"ring size must be >= 1 (got {size})")
        self.size = size
        self.storage = [torch.zeros((size, *t.shape), dtype=t.dtype, device=t.device) for t in like]
        self.slots = [[s[i] for s in self.storage] for i in range(size)]
        self.pushes = 0

    def stacked(self) -> list[Tensor]:
        """The held snapshots, stacked on dim 0 in storage order (the ring order once it has wrapped)."""
        n = self.count
        return self.storage if n == self.size else [s[:n] for s in self.storage]


def parse_batched(value: Any) -> bool | None:
    """``strategy.batched_teachers``: True, False, or None for ``auto``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return None
        if text in ("true", "false"):
            return text == "true"
    if isinstance(value, bool):
        return value
    raise ConfigError(f"strategy.batched_teachers must be auto, true or false (got {value!r})")


def batch_by_default(device: torch.device) -> bool:
    """``batched_teachers=auto``: batched on CUDA, sequential elsewhere (BENCHMARKS.md section 1).

    On a GPU one vmapped pass keeps the device busy where K small passes leave it waiting; on a CPU the
    vmapped pass is slower (BENCHMARKS.md section 1 has both measurements): CPU attention has no vmap
    batching rule, so torch loops over the snapshots there anyway, on top of the batching overhead.
    Devices without a measurement (MPS, XLA, ...) keep the sequential passes too.
    """
    return device.type == "cuda"


class SelfDistillationVoted(_SelfDistillation):
    """SDV: the teacher's logits are the mean of the logits of the last K student snapshots.

    Each snapshot runs through the student's own module with ``torch.func.functional_call``, so no
    model copies are made. ``batched_teachers`` chooses how the K forward passes (under ``no_grad``,
    on the current batch) run: ``false`` one after the other, ``true`` as one pass ``vmap``-ed over
    the stacked snapshots (``randomness="different"``: each snapshot and example draws its own dropout
    mask, as the sequential passes do), ``auto`` batched on CUDA only (:func:`batch_by_default`).
    Both give the same teacher: equal logits up to float rounding without dropout; with dropout the
    same distribution (independent masks per snapshot), from a different random stream.
    """

    name: ClassVar[str] = "sdv"
    #: the voted teacher is K snapshots' logits, not one set of weights
    exportable: ClassVar[tuple[str, ...] | None] = (REPORTED,)
    execution_keys: ClassVar[tuple[str, ...]] = ("batched_teachers",)

    def __init__(self, teacher_size: Any = 1, batched_teachers: Any = "auto", **options: Any) -> None:
        """``options``: those of every self-distillation strategy (``distill_weight``, ``teacher_dropout``,
        ``distill_target``, ``distill_warmup``)."""
        super().__init__(teacher_size, **options)
        if self.teacher_size is None:
            raise ConfigError(
                "strategy=sdv needs an integer teacher_size (voting over every previous step would need T "
                "forward passes per batch); use strategy=sda for teacher_size=all"
            )
        self.batched_teachers = parse_batched(batched_teachers)
        self.ring: StackedRing | None = None
        self._names: list[str] = []
        self._batched = False

    def _allocate(self, model: nn.Module) -> None:
        assert self.teacher_size is not None
        self._names = [name for name, _ in model.named_parameters()]
        self._student = parameters_of(model)
        self.ring = StackedRing(self._student, self.teacher_size)
        device = self._student[0].device
        self._batched = batch_by_default(device) if self.batched_teachers is None else self.batched_teachers

    @property
    def has_teacher(self) -> bool:
        return self.ring is not None and self.ring.count > 0

    @property
    def runs_batched(self) -> bool:
        """Whether the K teacher passes run as one vmapped pass (``auto`` is resolved at ``setup``)."""
        return self._batched

    def before_optimizer_step(self, model: nn.Module) -> None:
        assert self.ring is not None, "setup() was not called"
        self.ring.push(self._student)

    def snapshot_logits(self, model: nn.Module, inputs: Inputs, training: bool) -> Tensor:
        """Logits of each held snapshot, shape ``(n, batch, classes)``, without gradient."""
        assert self.ring is not None
        with torch.no_grad(), train_mode(model, training):
            if self._batched:
                params = dict(zip(self._names, self.ring.stacked(), strict=True))

                def one(snapshot: dict[str, Tensor]) -> Tensor:
                    return cast(Tensor, functional_call(model, snapshot, (), dict(inputs)))

                return vmap(one, randomness="different")(params)
            return torch.stack(
                [
                    functional_call(model, dict(zip(self._names, snapshot, strict=True)), (), dict(inputs))
                    for snapshot in self.ring.snapshots()
                ]
            )

    def _vote(self, model: nn.Module, inputs: Inputs, training: bool) -> Tensor:
        return self.snapshot_logits(model, inputs, training).mean(0)

    def teacher_logits(self, model: nn.Module, inputs: Inputs) -> Tensor | None:
        if self.distill_weight == 0 or not self.has_teacher:
            return None
        return self._vote(model, inputs, self.teacher_dropout)

    def eval_logits(self, model: nn.Module, inputs: Inputs, extras: bool = True) -> dict[str, Tensor]:
        out = {REPORTED: model(**inputs)}
        if extras:
            out["teacher"] = self._vote(model, inputs, False) if self.has_teacher else out[REPORTED]
        return out

    def _state(self) -> dict[str, Any]:
        assert self.ring is not None
        return {"ring": self.ring.state_dict()}

    def _load(self, state: dict[str, Any]) -> None:
        assert self.ring is not None
        self.ring.load_state_dict(state["ring"])
