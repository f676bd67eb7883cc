"""Teacher strategies: base (none), se (parameter average), sda (averaged teacher), sdv (voted teacher)."""

from sdbert.strategies.base import BaseStrategy, TeacherStrategy, parse_distill_weight, parse_teacher_size
from sdbert.strategies.self_distillation import SelfDistillationAveraged, SelfDistillationVoted
from sdbert.strategies.self_ensemble import SelfEnsemble

STRATEGIES: dict[str, type[TeacherStrategy]] = {
    cls.name: cls for cls in (BaseStrategy, SelfEnsemble, SelfDistillationAveraged, SelfDistillationVoted)
}

__all__ = [
    "STRATEGIES",
    "BaseStrategy",
    "SelfDistillationAveraged",
    "SelfDistillationVoted",
    "SelfEnsemble",
    "TeacherStrategy",
    "parse_distill_weight",
    "parse_teacher_size",
]
