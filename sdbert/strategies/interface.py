"""The teacher-strategy interface: the only place that knows what a "teacher" is.

The LightningModule calls these hooks and never branches on a strategy's name. A time step t is one
optimizer step: ``before_optimizer_step`` sees θ_t (after backward, before the update) and
``after_optimizer_step`` sees θ_{t+1}.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdbert.errors import ConfigError
from sdbert.strategies.description import Description, plain_value

Inputs = Mapping[str, Tensor]

#: The key of the reported model in ``eval_logits`` (SE: the average; SDA/SDV: the student). Its metrics
#: carry no model infix (``val/acc``); the other models' do (``val/teacher/acc``).
REPORTED = "reported"


@contextmanager
def train_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Run ``model`` in train (dropout on) or eval mode, then restore its mode."""
    was = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was)


def metric_key(stage: str, model_name: str, metric: str) -> str:
    """``val/acc`` for the reported model, ``val/teacher/acc`` for the others."""
    return f"{stage}/{metric}" if model_name == REPORTED else f"{stage}/{model_name}/{metric}"


def parse_teacher_size(value: Any) -> int | None:
    """``teacher_size`` as an int K ≥ 1, or None for ``all`` (K = T−1, every previous step)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("all", "t-1"):
            return None
        if text.lstrip("+").isdigit():
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"teacher_size must be an integer >= 1 or 'all' (got {value!r}); e.g. teacher_size=5")
    if value < 1:
        raise ConfigError(f"teacher_size must be >= 1 or 'all' (got {value}); e.g. teacher_size=1")
    return value


def parse_distill_weight(value: Any) -> float:
    """λ as a float ≥ 0."""
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"distill_weight (λ) must be a number >= 0 (got {value!r}); the paper uses 1.0") from None
    if not weight >= 0 or weight == float("inf"):
        raise ConfigError(f"distill_weight (λ) must be a finite number >= 0 (got {value!r}); the paper uses 1.0")
    return weight


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters take no gradient (teacher / averaged model)."""
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def parameters_of(model: nn.Module) -> list[Tensor]:
    """The tensors that make up θ, in a fixed order."""
    return [p for p in model.parameters()]


class TeacherStrategy:
    """The interface. Its defaults are those of BASE: no teacher, the student is what is evaluated.

    Subclasses override the hooks they need. ``state_dict`` must hold everything needed to resume.
    What defines a strategy is its constructor: every argument is kept as the attribute of the same name
    and :meth:`describe` reports it (``execution_keys`` name the arguments that only change how it runs).
    """

    #: short, stable id (folder tags, W&B names, ``metrics.json``); a subclass that sets none gets its
    #: class name in lower case
    name: ClassVar[str] = "base"
    #: names of the models ``eval_logits`` returns; ``REPORTED`` first.
    eval_names: ClassVar[tuple[str, ...]] = (REPORTED,)
    #: the models of ``eval_names`` that are one set of weights (``eval_model`` returns them)
    exportable: ClassVar[tuple[str, ...] | None] = None
    #: whether the reported model's weights are a parameter average of the trained ones
    reports_average: ClassVar[bool] = False
    #: constructor arguments that change how the strategy runs, not what it computes
    execution_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.lower()

    def __init__(self, distill_weight: float = 0.0, teacher_dropout: bool = True) -> None:
        self.distill_weight = parse_distill_weight(distill_weight)
        self.teacher_dropout = bool(teacher_dropout)
        self._pending: dict[str, Any] | None = None
        self._device: torch.device | None = None
        self._student: list[Tensor] = []  # the student's parameter tensors, set by _allocate

    # -- life cycle -------------------------------------------------------------------------------
    def setup(self, model: nn.Module) -> None:
        """Allocate state next to ``model`` (idempotent); applies a checkpoint loaded before setup."""
        device = next(model.parameters()).device
        if self._device != device:
            self._allocate(model)
            self._device = device
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._load(pending)

    def _allocate(self, model: nn.Module) -> None:
        """Create the strategy's tensors for ``model`` (called once per device).

        Strategies keep the list of the student's parameter tensors from here on: the hooks receive
        the same module every step, and the hot path then builds no per-parameter lists.
        """

    # -- training ---------------------------------------------------------------------------------
    #: the name the distillation term is logged under (``train/mse``)
    distill_key: str = "mse"

    def teacher_logits(self, model: nn.Module, inputs: Inputs) -> Tensor | None:
        """The teacher's logits for this batch, or None where there is no distillation term."""
        return None

    def distill_term(self, logits: Tensor, teacher: Tensor) -> Tensor:
        """The distillation term of eq. (5)/(7) for the student's ``logits``: MSE to the teacher's logits."""
        return F.mse_loss(logits.float(), teacher.float())

    def weight_at(self, step: int, total_steps: int) -> float:
        """λ at optimizer step ``step`` of ``total_steps`` (the loss is CE + λ · ``distill_term``)."""
        return self.distill_weight

    def before_optimizer_step(self, model: nn.Module) -> None:
        """Called once per optimizer step with θ_t, after backward and before the update."""

    def after_optimizer_step(self, model: nn.Module) -> None:
        """Called once per optimizer step with θ_{t+1}, right after the update."""

    # -- evaluation -------------------------------------------------------------------------------
    def eval_logits(self, model: nn.Module, inputs: Inputs, extras: bool = True) -> dict[str, Tensor]:
        """Logits of the evaluated models; ``REPORTED`` always, the others only with ``extras``."""
        return {REPORTED: model(**inputs)}

    def eval_model(self, model: nn.Module, name: str = REPORTED) -> nn.Module | None:
        """The module whose output is ``eval_logits(...)[name]`` (for export), or None where that model is
        not one set of weights (SDV's voted teacher) or does not exist. Call after ``setup``."""
        return model if name == REPORTED else None

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume; before ``setup`` the state loaded from a checkpoint, unchanged."""
        if self._device is None:
            return dict(self._pending or {})
        return self._state()

    def _state(self) -> dict[str, Any]:
        """The allocated tensors' state (subclasses with state override this)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state; before ``setup`` it is kept until the tensors exist."""
        if self._device is None:
            self._pending = state
        else:
            self._load(state)

    def _load(self, state: dict[str, Any]) -> None:
        """Copy ``state`` into allocated tensors."""

    # -- identity ---------------------------------------------------------------------------------
    @classmethod
    def defining_arguments(cls) -> dict[str, inspect.Parameter]:
        """The constructor's arguments that define the method (``execution_keys`` left out), in order.

        A constructor that passes ``**options`` on to its base class's has the base class's arguments too.
        """
        found: dict[str, inspect.Parameter] = {}
        for klass in cls.__mro__:
            if "__init__" not in klass.__dict__ or klass is object:
                continue
            params = inspect.signature(klass.__init__).parameters.values()  # type: ignore[misc]
            for p in params:
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    found.setdefault(p.name, p)
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                break
        return {k: p for k, p in found.items() if k not in cls.execution_keys}

    def key_value(self, key: str) -> Any:
        """The value of defining argument ``key`` as this strategy holds it (the attribute of that name)."""
        if not hasattr(self, key):
            raise TypeError(
                f"{type(self).__name__}: keep the constructor argument '{key}' as self.{key} (describe() reports "
                f"it), or list it in execution_keys if it does not change what is trained"
            )
        return getattr(self, key)

    def qualifier(self, key: str, value: Any) -> str:
        """How the label shows a key that differs from its default (``key=value``)."""
        return f"{key}={value}"

    def describe(self) -> Description:
        """What defines this method: name, every defining key with its value, K, the models it evaluates.

        Derived from the constructor (:meth:`defining_arguments`), so a new strategy needs no code here.
        """
        arguments = type(self).defining_arguments()
        keys = {k: plain_value(self.key_value(k)) for k in arguments}
        defaults = {k: plain_value(p.default) for k, p in arguments.items() if p.default is not inspect.Parameter.empty}
        probe = Description(self.name, self.name.upper(), keys, defaults)
        exportable = self.exportable if self.exportable is not None else self.eval_names
        return Description(
            name=self.name,
            title=self.name.upper(),
            keys=keys,
            defaults=defaults,
            qualifiers=tuple(self.qualifier(k, keys[k]) for k in probe.changed),
            models=tuple(self.eval_names),
            exportable=tuple(exportable),
            averaged=self.reports_average,
        )


class Vanilla(TeacherStrategy):
    """BASE: vanilla fine-tuning with cross-entropy (the top-level ``teacher_size`` and λ are unused)."""

    name: ClassVar[str] = "base"

    def __init__(self) -> None:
        super().__init__(distill_weight=0.0)


class AveragedTeacher:
    """The teacher of a strategy whose teacher is one set of parameters averaged over the student's past
    steps (SDA's window or cumulative mean, EMA's moving average): a frozen copy of the model, ``teacher``,
    that the strategy's ``before_optimizer_step`` writes. Mixed in before :class:`TeacherStrategy`; the
    strategy defines ``has_teacher`` and how the average is kept."""

    teacher: nn.Module | None = None
    distill_weight: float
    teacher_dropout: bool

    @property
    def has_teacher(self) -> bool:
        raise NotImplementedError

    def teacher_parameters(self) -> list[Tensor]:
        """The teacher's parameters as they stand for the next step (for tests and inspection)."""
        assert self.teacher is not None
        return parameters_of(self.teacher)

    def teacher_logits(self, model: nn.Module, inputs: Inputs) -> Tensor | None:
        if self.distill_weight == 0 or not self.has_teacher:
            return None
        assert self.teacher is not None
        with torch.no_grad(), train_mode(self.teacher, self.teacher_dropout):
            return cast(Tensor, self.teacher(**inputs))

    def eval_logits(self, model: nn.Module, inputs: Inputs, extras: bool = True) -> dict[str, Tensor]:
        assert self.teacher is not None, "setup() was not called"
        if not extras:
            return {REPORTED: model(**inputs)}
        with train_mode(self.teacher, False):
            return {REPORTED: model(**inputs), "teacher": self.teacher(**inputs)}

    def eval_model(self, model: nn.Module, name: str = REPORTED) -> nn.Module | None:
        return {REPORTED: model, "teacher": self.teacher}.get(name)
